"""Lanes: concurrent work on one hot row, served in groups (the mechanics, without I/O).

Each key (here a stock level, ``(location, item)``) has a lane. A caller ``submit``s its member
and waits for its own result. While no group of that key is running, the first member starts
one at once (a lone caller waits for nobody); members arriving while a group runs queue up and
become the next group, all of them, in arrival order. So a group is exactly what piled up during
the previous group's transaction: one at a time when calls are rare, many when they crowd.

Groups run in a task of their own, never in a caller's: a caller that goes away (cancelled)
while queued leaves the queue; one whose group is already running leaves the group to finish
(what the group wrote is committed and answers a retry of the same request id).

Two members with the same ``dedupe`` key (the same request id of the same method) never share a
group: the later one waits for the next, where it finds the first one's stored answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger("omni.inventory.lanes")

K = TypeVar("K", bound=Hashable)


@dataclass(eq=False)
class Member:
    """One caller's part of a group; ``future`` gets its result."""

    dedupe: Hashable | None = None
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def resolve(self, result: Any) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


M = TypeVar("M", bound=Member)
# run(key, members): serve one group; it resolves or fails every member (left unresolved: failed).
RunGroup = Callable[[K, Sequence[M]], Awaitable[None]]


@dataclass
class _Lane(Generic[M]):
    queue: list[M] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None


class Lanes(Generic[K, M]):
    """The lanes of one process; ``max_group`` bounds a group's size (and its statements')."""

    def __init__(self, run: RunGroup[K, M], *, max_group: int = 200) -> None:
        self._run = run
        self.max_group = max_group
        self._lanes: dict[K, _Lane[M]] = {}
        self.on_group: Callable[[int], None] | None = None  # observes group sizes (metrics)

    async def submit(self, key: K, member: M) -> Any:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.queue.append(member)
        if lane.runner is None:
            # A clean context: the group serves many callers, it is none of theirs.
            lane.runner = asyncio.create_task(self._drain(key, lane), context=contextvars.Context())
        try:
            return await asyncio.shield(member.future)
        except asyncio.CancelledError:
            if member in lane.queue:  # not taken into a group yet: leave quietly
                lane.queue.remove(member)
                member.future.cancel()
            else:  # its group runs on; nobody will read the outcome
                member.future.add_done_callback(_discard)
            raise

    def _next_group(self, lane: _Lane[M]) -> list[M]:
        group: list[M] = []
        seen: set[Hashable] = set()
        kept: list[M] = []
        for member in lane.queue:
            if member.future.done():
                continue
            if len(group) >= self.max_group or (member.dedupe is not None and member.dedupe in seen):
                kept.append(member)
                continue
            if member.dedupe is not None:
                seen.add(member.dedupe)
            group.append(member)
        lane.queue[:] = kept
        return group

    async def _drain(self, key: K, lane: _Lane[M]) -> None:
        try:
            while lane.queue:
                group = self._next_group(lane)
                if not group:
                    continue
                if self.on_group is not None:
                    self.on_group(len(group))
                try:
                    await self._run(key, group)
                except Exception as exc:
                    for member in group:
                        member.fail(exc)
                except BaseException:  # the group's task itself is cancelled (shutdown)
                    for member in (*group, *lane.queue):
                        member.future.cancel()
                    raise
                else:
                    for member in group:
                        member.fail(RuntimeError("the group ended without answering this member"))
        finally:
            lane.runner = None
            if not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]


def _discard(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as lost
