"""Running a service: the gRPC server, its interceptors, health, reflection, metrics, events.

A service describes itself with a ``ServiceDefinition`` (how to register its servicers, which
consumers and background loops it runs); ``ServiceHost`` does everything else the same way for
every service, so a service's folder holds only its own domain.

Readiness is real: the health service answers SERVING only while the database answers and NATS
is connected (for the overall ``""`` name and each gRPC service name); the ``liveness`` name is
SERVING while the process runs, for liveness probes that must not restart pods on a database
outage. Shutdown on SIGTERM: health goes NOT_SERVING first (load balancers stop sending), then
the server stops accepting and drains in-flight calls for the grace period, then background
loops stop, connections close and telemetry is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from omni_runtime import metrics, tracing
from omni_runtime.auth.keys import KeySource
from omni_runtime.auth.service_tokens import ServiceTokenProvider
from omni_runtime.auth.tokens import TokenVerifier
from omni_runtime.clients import PeerChannels
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.events.bus import EventBus
from omni_runtime.events.consumer import EventConsumer
from omni_runtime.events.outbox import Outbox
from omni_runtime.interceptors.auth import AuthStage
from omni_runtime.interceptors.base import Chain, ChainedServer, Stage
from omni_runtime.interceptors.channel import ChannelStage
from omni_runtime.interceptors.deadlines import DeadlineStage
from omni_runtime.interceptors.errors import ErrorStage
from omni_runtime.interceptors.observability import AccessLogStage, MetricsStage, TracingStage
from omni_runtime.logs import configure_logging

log = logging.getLogger("omni.server")

# Health name for liveness/startup probes: SERVING while the process runs, whatever its backends
# do, so a database outage makes pods unready (no traffic) rather than restarting them.
LIVENESS = "liveness"

# Clients reconnect (and so re-balance across replicas) at least this often.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 30 * 1000


@dataclass
class Runtime:
    """What a service's code is given: its settings and the shared infrastructure."""

    settings: Settings
    db: Database | None
    bus: EventBus | None
    outbox: Outbox | None
    peers: PeerChannels
    key_source: KeySource | None = None
    # Channels for public calls to peers (identity's JWKS and IssueServiceToken): never carry a
    # service token, so authenticating never depends on already being authenticated.
    public_peers: PeerChannels | None = None
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    consumers: list[EventConsumer] = field(default_factory=list)
    # Shutdown hooks. before_drain: after health goes NOT_SERVING, before in-flight calls drain
    # (end long-lived streams, which would otherwise hold the drain for the whole grace period).
    # after_drain: once no call is in flight, before background loops stop and channels close.
    before_drain: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    after_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def consume(self, name: str, subjects: list[str], handler: Any, **kw: Any) -> None:
        """Register a durable consumer; started with the server."""
        if self.db is None or self.bus is None:
            raise RuntimeError("consumers need a database and the event bus")
        self.consumers.append(
            EventConsumer(self.settings.service, name, subjects, handler, self.db, self.bus, **kw)
        )

    def consume_batches(self, name: str, subjects: list[str], handler: Any, **kw: Any) -> None:
        """Register a durable consumer whose ``handler(session, events)`` takes each fetch's new
        events in one transaction (see ``omni_runtime.events.consumer``)."""
        self.consume(name, subjects, None, batch_handler=handler, **kw)


@dataclass(frozen=True)
class ServiceDefinition:
    """How one service plugs into the runtime."""

    name: str
    # Full names of the gRPC services it serves (for health and reflection).
    grpc_services: Sequence[str]
    # Adds servicers to the server; may also register consumers and background loops on the runtime.
    register: Callable[[grpc.aio.Server, Runtime], Awaitable[None] | None]
    uses_database: bool = True
    uses_events: bool = True
    # Builds the source of token verification keys; default: identity's JWKS over gRPC.
    key_source: Callable[[Runtime], Awaitable[KeySource]] | None = None


def build_stages(verifier: TokenVerifier, settings: Settings) -> list[Stage]:
    """The interceptor chain, outermost first: observe, map errors, bound time, identify, authorize."""
    return [
        TracingStage(),
        MetricsStage(),
        AccessLogStage(),
        ErrorStage(),
        DeadlineStage(settings.default_deadline_seconds, settings.max_deadline_seconds),
        ChannelStage(),
        AuthStage(verifier),
    ]


def server_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ]


async def default_key_source(runtime: Runtime) -> KeySource:
    from omni_runtime.auth.jwks_client import identity_jwks_source

    peers = runtime.public_peers or runtime.peers
    return identity_jwks_source(peers.channel("identity"), ttl=runtime.settings.jwks_cache_seconds)


def build_peers(settings: Settings) -> tuple[PeerChannels, PeerChannels]:
    """(peers, public peers). With service client credentials, calls to peers carry a service
    token from identity (ServiceTokenProvider); the public peers never do."""
    public = PeerChannels(settings.targets)
    if not (settings.service_client_id and settings.service_client_secret):
        return public, public
    provider = ServiceTokenProvider(
        public.channel("identity"), settings.service_client_id, settings.service_client_secret
    )
    return PeerChannels(settings.targets, token_provider=provider), public


class ServiceHost:
    """Starts and stops one service process's server and background work."""

    def __init__(
        self,
        definition: ServiceDefinition,
        settings: Settings,
        *,
        key_source: KeySource | None = None,
        bind_host: str = "[::]",
        configure_process: bool = True,
    ) -> None:
        self.definition = definition
        self.settings = settings
        self._key_source = key_source
        self.bind_host = bind_host
        self.configure_process = configure_process
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.runtime: Runtime | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> int:
        settings = self.settings
        # Tracing is always on (idempotent per process): trace ids tie logs and errors to calls.
        tracing.configure_tracing(settings.service, settings.version)
        if self.configure_process:
            configure_logging(settings.service, settings.log_level)
            if settings.metrics_port:
                metrics.serve_metrics(settings.metrics_port)
        metrics.BUILD_INFO.labels(settings.service, settings.version).set(1)
        defn = self.definition
        db = (
            Database(
                settings.database_url,
                service=settings.service,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
            )
            if defn.uses_database
            else None
        )
        bus = (
            EventBus(settings.nats_url, name=f"omni-{settings.service}", service=settings.service)
            if defn.uses_events
            else None
        )
        outbox = Outbox(settings.service, db, bus) if db is not None and bus is not None else None
        peers, public_peers = build_peers(settings)
        runtime = Runtime(
            settings=settings, db=db, bus=bus, outbox=outbox, peers=peers, public_peers=public_peers
        )
        self.runtime = runtime
        if bus is not None:
            await bus.start()
        if self._key_source is None:
            builder = defn.key_source or default_key_source
            self._key_source = await builder(runtime)
        runtime.key_source = self._key_source
        verifier = TokenVerifier(self._key_source)

        # The stages wrap each handler as it is registered (no per-call interceptor pipeline).
        server = ChainedServer(
            grpc.aio.server(options=server_options()), Chain(build_stages(verifier, settings))
        )
        registered = defn.register(server, runtime)
        if asyncio.iscoroutine(registered):
            await registered
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        pool = descriptor_pool.Default()
        metrics.initialise_server_metrics(
            pool.FindServiceByName(name) for name in (*defn.grpc_services, health.SERVICE_NAME)
        )
        reflection.enable_server_reflection(
            (*defn.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(f"{self.bind_host}:{settings.grpc_port}")
        if self.port == 0:
            raise RuntimeError(f"cannot listen on port {settings.grpc_port}")
        await self._set_health(False)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        self.server = server

        self._spawn(self._watch_readiness(), "readiness")
        self._spawn(metrics.watch_event_loop(settings.service), "event-loop-lag")
        if outbox is not None:
            self._spawn(outbox.run(), "outbox-relay")
        for consumer in runtime.consumers:
            self._spawn(consumer.run(), f"consumer-{consumer.name}")
        for loop_factory in runtime.background:
            self._spawn(loop_factory(), getattr(loop_factory, "__name__", "background"))
        log.info("%s listening on port %d", settings.service, self.port, extra={"port": self.port})
        return self.port

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s crashed", name)

        self._tasks.append(asyncio.create_task(guarded(), name=f"omni-{name}"))

    async def ready(self) -> bool:
        rt = self.runtime
        if rt is None or self._stopping:
            return False
        if rt.bus is not None and not rt.bus.ready:
            return False
        return rt.db is None or await rt.db.ping()

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.definition.grpc_services):
            await self.health.set(name, status)

    async def _watch_readiness(self) -> None:
        last: bool | None = None
        while not self._stopping:
            now = await self.ready()
            if now != last:
                await self._set_health(now)
                log.info("%s is %s", self.settings.service, "SERVING" if now else "NOT_SERVING")
                last = now
            await asyncio.sleep(0.25 if not now else 2.0)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not await self.ready():  # noqa: ASYNC110 - readiness is polled, not signalled
                await asyncio.sleep(0.05)
            await self._set_health(True)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, drain in-flight calls, stop loops, close, flush telemetry."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        rt = self.runtime
        for hook in rt.before_drain if rt is not None else ():
            result = hook()
            if result is not None:
                await result
        if self.server is not None:
            await self.server.stop(grace)
        for after in rt.after_drain if rt is not None else ():
            try:
                await asyncio.wait_for(after(), timeout=max(grace, 1.0))
            except Exception:
                log.exception("shutdown hook did not finish cleanly")
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a loop that swallowed its cancellation must not hold the process forever.
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            for task in stuck:
                log.error("background task %s did not stop within 5s; abandoning it", task.get_name())
        if rt is not None:
            await rt.peers.close()
            if rt.public_peers is not None and rt.public_peers is not rt.peers:
                await rt.public_peers.close()
            if rt.bus is not None:
                await rt.bus.close()
            if rt.db is not None:
                await rt.db.close()
        if self.configure_process:
            tracing.shutdown_tracing()
        log.info("%s stopped", self.settings.service)


async def serve(definition: ServiceDefinition, settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    host = ServiceHost(definition, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    await stop.wait()
    log.info(
        "%s received a stop signal; draining for up to %.0fs",
        settings.service,
        settings.shutdown_grace_seconds,
    )
    await host.stop()
