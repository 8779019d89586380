"""Deadline enforcement: every unary call ends within a bounded time.

A caller that sets no deadline gets the configured default; one asking for more than the
maximum is cut to the maximum. The remaining budget is kept in a context variable so that
downstream calls pass ``timeout=remaining()`` and never outlive their caller. Server-streaming
calls (live cart updates) are long-lived by design and keep only the caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from omni_runtime.interceptors.base import CallInfo, Stage, is_infrastructure

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("omni_deadline", default=None)


def remaining(default: float = 10.0) -> float:
    """Seconds left in the current call's budget (``default`` outside a call); never negative."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Set the call budget outside a server call: the gateway, at the edge, starts every chain here."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class DeadlineStage(Stage):
    def __init__(self, default_seconds: float, max_seconds: float) -> None:
        self.default_seconds = default_seconds
        self.max_seconds = max_seconds

    def applies(self, info: CallInfo) -> bool:
        return not is_infrastructure(info)

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, context: grpc.aio.ServicerContext, request: Any | None
    ) -> AsyncIterator[None]:
        caller = context.time_remaining()
        streaming = info.rpc_type in ("server_stream", "bidi_stream")
        if caller is not None and caller <= self.max_seconds:
            budget: float | None = caller
            enforce = False  # gRPC itself cancels the call at the caller's deadline
        elif streaming:
            budget, enforce = caller, False
        else:
            budget = self.default_seconds if caller is None else self.max_seconds
            enforce = True
        token = _deadline.set(None if budget is None else time.monotonic() + budget)
        try:
            if enforce and budget is not None:
                async with asyncio.timeout(budget):
                    yield
            else:
                yield
        finally:
            _deadline.reset(token)
