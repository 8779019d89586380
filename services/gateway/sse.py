"""Server-streaming RPCs as Server-Sent Events (``text/event-stream``).

One gRPC message becomes one event: ``data:`` is its proto3 JSON on one line, ``id:`` its
etag when it has one (so a browser's EventSource sends it back as ``Last-Event-ID`` when it
reconnects, and the gateway resumes the stream from there). While nothing happens a comment
line goes out every few seconds, so proxies and load balancers keep an idle stream open and a
dead client is noticed. The stream ends cleanly (a complete chunked body) when the service ends
it, when the client goes away (the gRPC call is cancelled), or when the gateway shuts down.
A failure after the stream started is sent as an ``error`` event with the JSON error body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message

END = object()
STOP = object()

# Sent first: how long a client waits before reconnecting after the stream ends.
RECONNECT_MILLISECONDS = 1000
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx-style proxies must not buffer the stream
}


def frame(data: str, *, event_id: str = "", event: str = "") -> bytes:
    """One event. ``data`` may span lines; each becomes its own ``data:`` line."""
    lines: list[str] = []
    if event:
        lines.append(f"event: {_one_line(event)}")
    if event_id:
        lines.append(f"id: {_one_line(event_id)}")
    lines.extend(f"data: {line}" for line in (data.splitlines() or [""]))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str) -> bytes:
    return f": {_one_line(text)}\n\n".encode()


def retry(milliseconds: int) -> bytes:
    return f"retry: {int(milliseconds)}\n\n".encode()


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").replace("\0", "")


class Upstream:
    """Reads a server-streaming call into a queue, so waiting for the next message can time out
    (for heartbeats) or be interrupted (for shutdown) without cancelling the call itself."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, stop: asyncio.Event) -> None:
        self.call = call
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self._tasks = [
            asyncio.create_task(self._pump(), name="sse-pump"),
            asyncio.create_task(self._watch(stop), name="sse-stop"),
        ]

    async def _pump(self) -> None:
        try:
            async for item in self.call:
                await self.queue.put(item)
            await self.queue.put(END)
        except grpc.aio.AioRpcError as exc:
            await self.queue.put(exc)

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.queue.put(STOP)

    async def next(self, timeout: float) -> Any:
        """The next message, END, STOP or an AioRpcError; TimeoutError if nothing came in time."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def close(self) -> None:
        self.call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def events(
    upstream: Upstream,
    *,
    first: Any,
    heartbeat_seconds: float,
    render: Callable[[message.Message], bytes],
    render_error: Callable[[grpc.aio.AioRpcError], bytes],
    on_close: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The SSE body. ``first`` is what the gateway already read before choosing status 200
    (a message, or None when the service has said nothing yet)."""
    try:
        yield retry(RECONNECT_MILLISECONDS)
        item = first
        while True:
            if item is None:
                try:
                    item = await upstream.next(heartbeat_seconds)
                except TimeoutError:
                    yield comment("keep-alive")
                    continue
            if item is END or item is STOP:
                return
            if isinstance(item, grpc.aio.AioRpcError):
                # A stream the service cut at its deadline is a normal end: the client resumes.
                if item.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                    yield render_error(item)
                return
            yield render(item)
            item = None
    finally:
        await upstream.close()
        on_close()
