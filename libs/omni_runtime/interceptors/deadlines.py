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
from collections.abc import Iterator

from omni_runtime.interceptors.base import Call, CallInfo, Stage, is_infrastructure

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

    async def enter(self, call: Call) -> asyncio.Timeout | None:
        caller = call.context.time_remaining()
        if caller is not None and caller <= self.max_seconds:
            budget: float | None = caller
            enforce = False  # gRPC itself cancels the call at the caller's deadline
        elif call.info.streams_responses:
            budget, enforce = caller, False
        else:
            budget = self.default_seconds if caller is None else self.max_seconds
            enforce = True
        _deadline.set(None if budget is None else time.monotonic() + budget)
        if not (enforce and budget is not None):
            return None
        timer = asyncio.timeout(budget)
        await timer.__aenter__()
        return timer

    async def exit(self, call: Call, state: asyncio.Timeout | None, error: BaseException | None) -> None:
        if state is not None:  # turns its own cancellation of the call into TimeoutError
            trace = error.__traceback__ if error is not None else None
            await state.__aexit__(type(error) if error is not None else None, error, trace)
