"""Wiring of the gateway process: ``omni serve gateway`` calls ``SERVICE.serve(settings)``.

The gateway is not a gRPC service, so it does not use ``ServiceHost``; it runs uvicorn itself,
with the runtime's logging, tracing and metrics. On SIGTERM it first fails readiness and ends
open SSE streams (so the load balancer stops sending and long-lived connections close), then
lets uvicorn finish in-flight requests within the grace period, then closes its gRPC channels
and flushes telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn

from omni_runtime import metrics, tracing
from omni_runtime.auth.jwks_client import identity_jwks_source
from omni_runtime.clients import PeerChannels
from omni_runtime.config import SERVICES, ConfigError, Settings
from omni_runtime.logs import configure_logging
from services.gateway.app import Gateway, create_app
from services.gateway.routes import Contracts, exposed_services

log = logging.getLogger("omni.gateway")


def services_to_expose(settings: Settings, available: Iterable[str] | None = None) -> list[str]:
    """Which backends the gateway fronts: ``OMNI_GATEWAY_SERVICES`` (comma-separated), or every
    runtime service whose code is in this build, so a partly built platform still gets ready."""
    raw = settings.setting("SERVICES", "")
    if raw:
        chosen = [s.strip() for s in raw.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(SERVICES))
        if unknown:
            raise ConfigError(f"OMNI_GATEWAY_SERVICES names unknown services: {', '.join(unknown)}")
        return chosen
    if available is not None:
        return [s for s in SERVICES if s in set(available)]
    return [s for s in SERVICES if importlib.util.find_spec(f"services.{s}.main") is not None]


class _Server(uvicorn.Server):
    """uvicorn, but a stop signal first tells the gateway to drain (SSE streams end)."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.gateway.begin_drain()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGTERM/SIGINT as a graceful stop, and exit 0 after it like every Omni service
        (uvicorn's own handler re-raises the signal once stopped, ending the process with -15)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


@dataclass(frozen=True)
class GatewayDefinition:
    """What ``omni`` needs to know about the gateway (it has no database and no events)."""

    name: str = "gateway"
    uses_database: bool = False
    uses_events: bool = False

    async def serve(self, settings: Settings) -> None:
        configure_logging(settings.service, settings.log_level)
        tracing.configure_tracing(settings.service, settings.version)
        if settings.metrics_port:
            metrics.serve_metrics(settings.metrics_port)
        metrics.BUILD_INFO.labels(settings.service, settings.version).set(1)
        contracts = Contracts.load()
        names = services_to_expose(settings)
        peers = PeerChannels(settings.targets)
        full_names = exposed_services(contracts, names)
        channels = {svc: peers.channel(svc.split(".")[1]) for svc in full_names}
        # Tokens are verified against identity's keys, whether or not identity is exposed.
        keys = identity_jwks_source(peers.channel("identity"), ttl=settings.jwks_cache_seconds)
        app = create_app(contracts, channels, settings, key_source=keys)
        gateway: Gateway = app.state.gateway
        config = uvicorn.Config(
            app,
            host="0.0.0.0",  # noqa: S104 - the pod's port; the NetworkPolicy decides who reaches it
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or 1,
            server_header=False,
        )
        server = _Server(config, gateway)
        loop_lag = asyncio.create_task(metrics.watch_event_loop(settings.service), name="omni-event-loop-lag")
        log.info(
            "gateway listening on port %d for %s (%d routes)",
            settings.http_port,
            ", ".join(names),
            len(gateway.table),
            extra={"port": settings.http_port},
        )
        try:
            await server.serve()
        finally:
            loop_lag.cancel()
            await peers.close()
            tracing.shutdown_tracing()
            log.info("gateway stopped")


SERVICE = GatewayDefinition()
