"""Live sync: WatchCart streams fed by every replica's changes.

Every committed cart change is published as a CartUpdatedEvent (outbox → JetStream stream
OMNI_CART). Each replica runs ONE ephemeral ordered consumer on that subject, starting at new
messages, and fans each event out in-process to the WatchCart streams it holds for that cart;
changes made on this replica are also handed over directly after commit, so local watchers do
not wait for the round trip. Every event carries the whole cart and its version, so a stream
drops anything not newer than what it already sent: duplicates (local + NATS) and late arrivals
from another replica's relay both vanish, and what a client sees only moves forward.

Each watcher has a small bounded queue. A watcher that falls behind does not buffer without
limit: its backlog is dropped and it gets the newest cart as a SNAPSHOT. When this replica may
have missed events (its NATS connection dropped), every watcher re-reads its cart and sends a
SNAPSHOT if it moved. On shutdown every stream ends with OK, and clients resume elsewhere with
``since_etag``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import api

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni_runtime.events.bus import EventBus, subject_for
from services.cart import metrics

log = logging.getLogger("omni.cart.watch")

SUBJECT = subject_for(ev.CartUpdatedEvent.DESCRIPTOR.full_name)


class _Signal:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE = _Signal("CLOSE")
RESYNC = _Signal("RESYNC")
Item = ev.CartUpdatedEvent | _Signal


class Watcher:
    """One open WatchCart stream's mailbox."""

    def __init__(self, cart: str, size: int) -> None:
        self.cart = cart
        self.queue: asyncio.Queue[Item] = asyncio.Queue(size)
        self.overflowed = False

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def offer(self, item: Item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Every event is a full snapshot: the newest one replaces the whole backlog.
            self._drain()
            self.overflowed = True
            self.queue.put_nowait(item)

    def close(self) -> None:
        self._drain()
        self.queue.put_nowait(CLOSE)

    def newest(self, item: ev.CartUpdatedEvent) -> Item:
        """After an overflow: skip straight to the newest change queued (or to CLOSE)."""
        self.overflowed = False
        newest: Item = item
        resync = False
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            if queued is CLOSE:
                return CLOSE
            if isinstance(queued, ev.CartUpdatedEvent):
                newest = queued
            resync = resync or queued is RESYNC
        if resync:
            self.queue.put_nowait(RESYNC)  # still re-read once the newest change is sent
        return newest


class WatchHub:
    def __init__(self, bus: EventBus | None, *, queue_size: int, max_age: float) -> None:
        self.bus = bus
        self.queue_size = queue_size
        self.max_age = max_age
        self._watchers: dict[str, set[Watcher]] = defaultdict(set)
        self._closed = False

    # ---------------------------------------------------------------------------------------
    # Fan-out
    # ---------------------------------------------------------------------------------------

    @property
    def watcher_count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())

    @contextlib.contextmanager
    def watch(self, cart: str) -> Iterator[Watcher]:
        watcher = Watcher(cart, self.queue_size)
        if self._closed:
            watcher.close()
        self._watchers[cart].add(watcher)
        metrics.WATCHERS.inc()
        try:
            yield watcher
        finally:
            metrics.WATCHERS.dec()
            group = self._watchers.get(cart)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self._watchers[cart]

    def deliver(self, event: ev.CartUpdatedEvent) -> None:
        for watcher in tuple(self._watchers.get(event.cart, ())):
            watcher.offer(event)

    def resync_all(self) -> None:
        for group in tuple(self._watchers.values()):
            for watcher in tuple(group):
                watcher.offer(RESYNC)

    def close(self) -> None:
        """End every stream (OK) and refuse new ones: the server is stopping."""
        self._closed = True
        for group in tuple(self._watchers.values()):
            for watcher in tuple(group):
                watcher.close()

    # ---------------------------------------------------------------------------------------
    # The replica's one ephemeral consumer
    # ---------------------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        if not self._watchers:
            return  # nobody watches anything here: skip decoding
        event = ev.CartUpdatedEvent()
        try:
            event.ParseFromString(msg.data)
        except Exception:
            log.warning("undecodable CartUpdatedEvent on %s", msg.subject)
            return
        self.deliver(event)

    async def run(self) -> None:
        """Keep one ordered, ephemeral push consumer (new messages only) on cart_updated."""
        if self.bus is None:
            return
        try:
            while True:
                sub = None
                try:
                    await self.bus.wait_connected()
                    stream = await self.bus.ensure_stream("cart")
                    sub = await self.bus.js.subscribe(
                        SUBJECT,
                        stream=stream,
                        cb=self._on_message,
                        ordered_consumer=True,
                        deliver_policy=api.DeliverPolicy.NEW,
                        inactive_threshold=300.0,
                    )
                    # Anything committed before the subscription existed was not seen here.
                    self.resync_all()
                    connected = True
                    while True:
                        await asyncio.sleep(0.5)
                        now_connected = self.bus.ready
                        if now_connected and not connected:
                            self.resync_all()  # events may have been lost while disconnected
                        connected = now_connected
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("cart watch subscription lost (%s); resubscribing", exc)
                    await asyncio.sleep(1.0)
                finally:
                    if sub is not None:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
        finally:
            self.close()

    # ---------------------------------------------------------------------------------------
    # One stream
    # ---------------------------------------------------------------------------------------

    async def stream(
        self, cart: str, since_etag: str, read: Callable[[], Awaitable[r.Cart]]
    ) -> AsyncIterator[svc.CartChange]:
        """The messages of one WatchCart call (see the contract)."""
        loop = asyncio.get_running_loop()
        with self.watch(cart) as watcher:
            # Registered before reading, so no change can fall between the read and the first event.
            current = await read()
            last = int(current.etag or 0)
            if since_etag != current.etag:
                yield snapshot(current)
            ends = loop.time() + self.max_age
            while True:
                left = ends - loop.time()
                if left <= 0:
                    return
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), left)
                except TimeoutError:
                    return
                if item is CLOSE:
                    return
                if item is RESYNC:
                    current = await read()
                    if int(current.etag or 0) > last:
                        last = int(current.etag)
                        yield snapshot(current)
                    continue
                assert isinstance(item, ev.CartUpdatedEvent)
                if watcher.overflowed:
                    newest = watcher.newest(item)
                    if newest is CLOSE:
                        return
                    assert isinstance(newest, ev.CartUpdatedEvent)
                    if int(newest.etag or 0) > last:
                        last = int(newest.etag or 0)
                        yield snapshot(newest.snapshot, newest.occur_time.ToDatetime(tzinfo=UTC))
                    continue
                version = int(item.etag or 0)
                if version <= last:
                    continue
                last = version
                yield svc.CartChange(
                    cart=item.snapshot,
                    etag=item.etag,
                    kind=item.kind,
                    line_ids=item.line_ids,
                    channel=item.channel,
                    order=item.order,
                    change_time=item.occur_time,
                )


def snapshot(cart: r.Cart, when: datetime | None = None) -> svc.CartChange:
    change = svc.CartChange(cart=cart, etag=cart.etag, kind=r.CART_CHANGE_KIND_SNAPSHOT)
    if when is not None:
        change.change_time.FromDatetime(when)
    elif cart.HasField("update_time"):
        change.change_time.CopyFrom(cart.update_time)
    else:
        change.change_time.FromDatetime(datetime.now(UTC))
    return change
