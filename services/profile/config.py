"""The profile service's own settings, ``OMNI_PROFILE_*`` (read once at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from omni_runtime.config import ConfigError, Settings

# Services that hold customer data besides profile, when every service is deployed.
ALL_PEERS = ("identity", "cart", "inventory", "preferences", "messaging")


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    # The services deployed beside profile that hold customer data: GetCustomerView and
    # ExportCustomerData ask them, an erasure waits for their receipts (OMNI_PROFILE_PEERS,
    # comma-separated; `make run` and the Helm chart set the ones they deploy).
    peers: tuple[str, ...] = ALL_PEERS
    # The longest a customer view waits for a source, whatever the caller's deadline.
    view_source_timeout: float = 1.0
    # Time kept back from the caller's deadline to assemble the view after the sources.
    view_reserve: float = 0.05
    # How often the days_since pass runs (seconds).
    time_pass_interval: float = 3600.0
    # Events per fetch of the timeline consumers (one transaction each).
    consumer_batch: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> ProfileConfig:
        raw = settings.setting("PEERS", ",".join(ALL_PEERS))
        peers = tuple(p.strip() for p in raw.split(",") if p.strip())
        unknown = [p for p in peers if p not in ALL_PEERS]
        if unknown:
            raise ConfigError(
                f"OMNI_PROFILE_PEERS: unknown services {', '.join(unknown)}; use {', '.join(ALL_PEERS)}"
            )
        return cls(
            peers=peers,
            view_source_timeout=settings.number("VIEW_SOURCE_TIMEOUT_SECONDS", 1.0, positive=True),
            view_reserve=settings.number("VIEW_RESERVE_SECONDS", 0.05, positive=True),
            time_pass_interval=settings.number("TIME_PASS_INTERVAL_SECONDS", 3600.0, positive=True),
            consumer_batch=int(settings.number("CONSUMER_BATCH", 256, positive=True)),
        )
