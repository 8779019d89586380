"""Read-modify-write under optimistic concurrency (AIP-154): retry a write that lost a race.

Omni's resources carry an ``etag``; a mutation that sends a stale one is answered ABORTED (with
the current etag in ErrorInfo metadata). The right reaction is to read the resource again,
re-decide the change on what it is now, and write again, not to resend the same request:
``retry_on_aborted(read, write)`` does exactly that, a bounded number of times. Each ``write``
builds a new request, so each attempt is a new logical call with its own request id.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

R = TypeVar("R")
T = TypeVar("T")
DEFAULT_ATTEMPTS = 5


async def retry_on_aborted(
    read: Callable[[], Awaitable[R]],
    write: Callable[[R], Awaitable[T]],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    max_pause: float = 0.05,
) -> T:
    """``await write(await read())``, re-reading and writing again while the write is ABORTED.

    ``write`` receives the freshly read resource and must send its ``etag``. Between attempts a
    short random pause (at most ``max_pause`` × attempt seconds) keeps racing writers from
    colliding again in lockstep. After ``attempts`` the last ABORTED is raised.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    resource = await read()
    for attempt in range(1, attempts + 1):
        try:
            return await write(resource)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED or attempt == attempts:
                raise
        await asyncio.sleep(random.uniform(0, max_pause * attempt))
        resource = await read()
    raise AssertionError("unreachable")
