"""Helpers for tests that call services over real sockets: a caller bound to a principal's token
and channel headers, error inspection (AIP-193 details), waiting for eventual effects, and a
tap on a producer's JetStream subjects. One copy for every service's tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from omni_runtime.errors import status_of, unpack_details
from omni_runtime.testing.plugin import bearer


class Caller:
    """A stub whose calls carry one caller's token and channel headers (``web``, ``store_pos``…)."""

    def __init__(self, stub: Any, token: str = "", channel: str = "web", store: str = "") -> None:
        self.stub = stub
        metadata: list[tuple[str, str]] = [*bearer(token)] if token else []
        metadata.append(("x-omni-channel", channel))
        if store:
            metadata.append(("x-omni-store", store))
        self.metadata = tuple(metadata)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self.stub, method)

        def invoke(request: Any, **kw: Any) -> Any:
            return call(request, metadata=self.metadata, timeout=kw.pop("timeout", 20), **kw)

        return invoke


async def rpc_error(call: Awaitable[Any], code: grpc.StatusCode | None = None) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with (and, given ``code``, check it is that code)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    if code is not None:
        assert info.value.code() is code, f"{info.value.code()}: {info.value.details()}"
    return info.value


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = status_of(error)
    assert status is not None, "the error carries no google.rpc.Status"
    return unpack_details(status)


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    """Field paths of a BadRequest (INVALID_ARGUMENT)."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return {v.field for v in details(error)["BadRequest"].field_violations}


def reason(error: grpc.aio.AioRpcError) -> str:
    return str(details(error)["ErrorInfo"].reason)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        # Polling: the effect happens in another task or process; there is no event to wait on.
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


class EventTap:
    """Every event published on some subjects while it is open, read from JetStream."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    def of(self, message_type: Any) -> list[Any]:
        from omni_runtime.events.bus import subject_for

        subject = subject_for(message_type.DESCRIPTOR.full_name)
        return [message_type.FromString(data) for subj, data in self.received if subj == subject]

    async def wait_for(
        self, message_type: Any, predicate: Callable[[Any], bool], timeout: float = 10.0
    ) -> Any:
        found: list[Any] = []

        async def seen() -> bool:
            found[:] = [m for m in self.of(message_type) if predicate(m)]
            return bool(found)

        await eventually(seen, timeout)
        return found[0]


@contextlib.asynccontextmanager
async def tap(nats_url: str, producer: str) -> AsyncIterator[EventTap]:
    """Collect what ``producer`` publishes (``omni.<producer>.>``) from now on."""
    from nats.js import api

    from omni_runtime.events.bus import EventBus

    collected = EventTap()
    bus = EventBus(nats_url, name=f"test-tap-{producer}")
    await bus.start()

    async def on_message(msg: Any) -> None:
        collected.received.append((msg.subject, msg.data))

    try:
        await bus.wait_connected(10)
        await bus.ensure_stream(producer)
        sub = await bus.js.subscribe(
            f"omni.{producer}.>", cb=on_message, ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW
        )
        try:
            yield collected
        finally:
            await sub.unsubscribe()
    finally:
        await bus.close()
