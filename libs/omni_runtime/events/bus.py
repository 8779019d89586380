"""The connection to NATS JetStream and the streams Omni's events live in.

Each service publishes to one stream, ``OMNI_<SERVICE>``, holding subjects
``omni.<service>.>``. Streams are declared idempotently by whoever touches them first (the
producer's relay or a consumer), so services can start in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from omni_runtime import metrics
from omni_runtime.errors import Unavailable

log = logging.getLogger("omni.events")

# How long JetStream remembers a Nats-Msg-Id to drop a re-publish of the same event.
DUPLICATE_WINDOW_SECONDS = 600.0
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600.0


def stop_requested() -> bool:
    """True once the current task was asked to stop.

    On Python 3.11 ``asyncio.wait_for`` (used inside nats-py's fetch, and by our own relay) can
    turn a cancellation that races its timeout into a TimeoutError; loops that treat a timeout
    as "nothing to do" would then run for ever. They check this after every such wait.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def stream_name(service: str) -> str:
    return f"OMNI_{service.upper()}"


@functools.lru_cache(maxsize=512)
def subject_for(full_name: str) -> str:
    """``omni.cart.v1.OrderPlacedEvent`` → ``omni.cart.order_placed``."""
    parts = full_name.split(".")
    if len(parts) < 4 or parts[0] != "omni":
        raise ValueError(f"{full_name} is not an Omni event message")
    base = parts[-1].removesuffix("Event")
    return f"omni.{parts[1]}.{re.sub(r'(?<!^)(?=[A-Z])', '_', base).lower()}"


def service_of_subject(subject: str) -> str:
    return subject.split(".")[1]


class EventBus:
    """One NATS connection per process, reconnecting for ever; ``ready`` says if it is up now.

    The connection's state is exported as ``omni_nats_connected{service}`` with its losses and
    reconnections counted.
    """

    def __init__(self, url: str, *, name: str, service: str = "") -> None:
        self.url = url
        self.name = name
        self.service = service or name.removeprefix("omni-")
        self._connected_gauge = metrics.NATS_CONNECTED.labels(self.service)
        self._connected_gauge.set(0)
        metrics.initialise(metrics.NATS_RECONNECTS, [(self.service,)])
        metrics.initialise(metrics.NATS_DISCONNECTS, [(self.service,)])
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._declared: set[str] = set()
        self._closing = False

    @property
    def ready(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Connect in the background; callers wait with ``wait_connected`` where they must."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_loop(), name="omni-nats-connect")

    async def _connect_loop(self) -> None:
        delay = 0.2
        while True:
            try:
                nc = await nats.connect(
                    self.url,
                    name=self.name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                )
            except Exception as exc:
                log.warning("NATS at %s unreachable (%s); retrying in %.1fs", self.url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._nc = nc
            self._js = nc.jetstream()
            self._connected.set()
            self._connected_gauge.set(1)
            log.info("connected to NATS at %s", self.url)
            return

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    async def _on_disconnect(self) -> None:
        self._connected_gauge.set(0)
        if not self._closing:
            metrics.NATS_DISCONNECTS.labels(self.service).inc()
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnect(self) -> None:
        self._connected_gauge.set(1)
        metrics.NATS_RECONNECTS.labels(self.service).inc()
        log.info("reconnected to NATS")

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise Unavailable("the event bus is not connected yet", reason="NATS_UNAVAILABLE")
        return self._js

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise Unavailable("the event bus is not connected yet", reason="NATS_UNAVAILABLE")
        return self._nc

    async def ensure_stream(self, service: str) -> str:
        """Declare the stream of ``service``'s events (idempotent; cached per process)."""
        name = stream_name(service)
        if name in self._declared:
            return name
        config = api.StreamConfig(
            name=name,
            subjects=[f"omni.{service}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=STREAM_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            await self.js.add_stream(config)
        except BadRequestError:
            # Exists with other settings (an older version of Omni); bring it up to date.
            await self.js.update_stream(config)
        self._declared.add(name)
        return name

    async def close(self) -> None:
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            # Flush what was published, then close: a drain would wait out pull subscriptions.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            await self._nc.close()
        self._connected_gauge.set(0)
