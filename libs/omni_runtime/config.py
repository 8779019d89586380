"""Configuration read once from ``OMNI_*`` environment variables at start-up.

Defaults are the local platform's (``make run``); Kubernetes sets every value explicitly.
Nothing else in the runtime reads the environment, so a process's configuration is one
immutable object that can be logged and passed around.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Local ports from the architecture's table: (gRPC or HTTP port, metrics port).
LOCAL_PORTS: dict[str, tuple[int, int]] = {
    "identity": (50051, 9101),
    "profile": (50052, 9102),
    "cart": (50053, 9103),
    "inventory": (50054, 9104),
    "messaging": (50055, 9105),
    "preferences": (50056, 9106),
    "gateway": (8080, 9100),
}
SERVICES: tuple[str, ...] = ("identity", "profile", "cart", "inventory", "messaging", "preferences")


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, never later."""


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a service process needs to know about its surroundings."""

    service: str
    grpc_port: int
    metrics_port: int
    http_port: int
    database_url: str
    nats_url: str
    log_level: str = "INFO"
    shutdown_grace_seconds: float = 15.0
    # Default deadline applied to calls that arrive without one (seconds).
    default_deadline_seconds: float = 30.0
    # Upper bound on any deadline a caller may ask for (seconds).
    max_deadline_seconds: float = 300.0
    # Peer gRPC targets by service name, from OMNI_<PEER>_TARGET.
    targets: Mapping[str, str] = field(default_factory=dict)
    jwt_private_keys_dir: Path | None = None
    # How long the identity service's JWKS is cached before a background refresh.
    jwks_cache_seconds: float = 300.0
    # When true, services accept calls without a token as an anonymous principal (tests only).
    auth_disabled: bool = False
    # Client credentials this service presents to identity for service-to-service calls
    # (OMNI_SERVICE_CLIENT_ID / OMNI_SERVICE_CLIENT_SECRET); empty: calls carry no token.
    service_client_id: str = ""
    service_client_secret: str = field(default="", repr=False)
    version: str = "0.1.0"
    extra: Mapping[str, str] = field(default_factory=dict)
    # Database connections kept open per process, and how many more may open at a peak. A
    # connection opened beyond the pool is closed when it is returned, so the next peak opens it
    # again (connect, authenticate, learn the types, prepare every statement anew): size the pool
    # for the concurrency a process serves (OMNI_DB_POOL_SIZE, OMNI_DB_MAX_OVERFLOW).
    db_pool_size: int = 20
    db_max_overflow: int = 10

    def target(self, peer: str) -> str:
        try:
            return self.targets[peer]
        except KeyError:
            raise ConfigError(f"OMNI_{peer.upper()}_TARGET is not set; {self.service} needs it") from None

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        local_port, local_metrics = LOCAL_PORTS.get(service, (0, 0))
        targets = {peer: f"127.0.0.1:{LOCAL_PORTS[peer][0]}" for peer in SERVICES}
        for peer in SERVICES:
            value = env.get(f"OMNI_{peer.upper()}_TARGET")
            if value:
                targets[peer] = value
        keys_dir = env.get("OMNI_JWT_PRIVATE_KEYS_DIR")
        level = env.get("OMNI_LOG_LEVEL", "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"OMNI_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        extra = {k: v for k, v in env.items() if k.startswith(f"OMNI_{service.upper()}_")}
        return cls(
            service=service,
            grpc_port=_int(env, "OMNI_GRPC_PORT", local_port),
            metrics_port=_int(env, "OMNI_METRICS_PORT", local_metrics),
            http_port=_int(env, "OMNI_HTTP_PORT", local_port if service == "gateway" else 8080),
            database_url=env.get(
                "OMNI_DATABASE_URL", f"postgresql+asyncpg://postgres@127.0.0.1:15432/omni_{service}"
            ),
            nats_url=env.get("OMNI_NATS_URL", "nats://127.0.0.1:14222"),
            log_level=level,
            shutdown_grace_seconds=_float(env, "OMNI_SHUTDOWN_GRACE_SECONDS", 15.0),
            default_deadline_seconds=_float(env, "OMNI_DEFAULT_DEADLINE_SECONDS", 30.0),
            max_deadline_seconds=_float(env, "OMNI_MAX_DEADLINE_SECONDS", 300.0),
            targets=targets,
            jwt_private_keys_dir=Path(keys_dir) if keys_dir else None,
            jwks_cache_seconds=_float(env, "OMNI_JWKS_CACHE_SECONDS", 300.0),
            auth_disabled=env.get("OMNI_AUTH_DISABLED", "") == "1",
            service_client_id=env.get("OMNI_SERVICE_CLIENT_ID", ""),
            service_client_secret=env.get("OMNI_SERVICE_CLIENT_SECRET", ""),
            version=env.get("OMNI_VERSION", "0.1.0"),
            extra=extra,
            db_pool_size=_int(env, "OMNI_DB_POOL_SIZE", 20),
            db_max_overflow=_int(env, "OMNI_DB_MAX_OVERFLOW", 10),
        )

    def setting(self, name: str, default: str) -> str:
        """A service-specific setting ``OMNI_<SERVICE>_<NAME>`` (e.g. OMNI_CART_PRICE_TTL_SECONDS)."""
        return self.extra.get(f"OMNI_{self.service.upper()}_{name.upper()}", default)

    def number(self, name: str, default: float, *, positive: bool = False) -> float:
        """A numeric service-specific setting: never negative, and above zero with ``positive``
        (timeouts, intervals, batch sizes); ``default`` when unset or empty."""
        key = f"OMNI_{self.service.upper()}_{name.upper()}"
        value = _float(self.extra, key, default)
        if value < 0 or (positive and value == 0):
            raise ConfigError(f"{key} must be {'positive' if positive else 'zero or more'}, got {value:g}")
        return value
