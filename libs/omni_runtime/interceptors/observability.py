"""Tracing, metrics and access logs for every call: the SRE's view of a service."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from opentelemetry.trace import Status, StatusCode

from omni_runtime import metrics, tracing
from omni_runtime.interceptors.base import Call, CallInfo, Stage, is_infrastructure

log = logging.getLogger("omni.access")


def cancelled(error: BaseException | None) -> bool:
    """The client went away (or the server is stopping the call): the context must not be read.

    grpcio can crash the process when a cancelled call's context is queried afterwards, so every
    stage decides from the exception alone in that case.
    """
    return isinstance(error, asyncio.CancelledError | GeneratorExit)


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, as the client will see it."""
    if cancelled(error):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class TracingStage(Stage):
    """A SERVER span per call, continuing the caller's W3C trace context."""

    def bind(self, info: CallInfo) -> Stage | None:
        return _MethodTracing(info)


class _MethodTracing(Stage):
    def __init__(self, info: CallInfo) -> None:
        self.name = info.full_method.lstrip("/")
        self.attributes = {"rpc.system": "grpc", "rpc.service": info.service, "rpc.method": info.method}

    async def enter(self, call: Call) -> tracing.ServerSpan:
        parent = tracing.extract_from_metadata(call.context.invocation_metadata())
        return tracing.ServerSpan("omni.grpc", self.name, parent, self.attributes)

    async def exit(self, call: Call, state: tracing.ServerSpan, error: BaseException | None) -> None:
        span = state.span
        if span.is_recording():
            code = final_code(call.context, error)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_FAULTS:
                span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()


_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class MetricsStage(Stage):
    """``grpc_server_*`` metrics with the labels grpc-ecosystem dashboards expect."""

    def bind(self, info: CallInfo) -> Stage | None:
        return _MethodMetrics(info)


class _MethodMetrics(Stage):
    """One method's metric children, resolved once instead of by label lookup per call."""

    def __init__(self, info: CallInfo) -> None:
        labels = (info.service, info.method, info.rpc_type)
        self.labels = labels
        self.started = metrics.SERVER_STARTED.labels(*labels)
        self.received = metrics.SERVER_MSG_RECEIVED.labels(*labels)
        self.sent = metrics.SERVER_MSG_SENT.labels(*labels)
        self.seconds = metrics.SERVER_HANDLING_SECONDS.labels(*labels)
        self.handled: dict[grpc.StatusCode, Any] = {}
        self.one_response = info.rpc_type in ("unary", "client_stream")

    async def enter(self, call: Call) -> float:
        self.started.inc()
        if call.request is not None:
            self.received.inc()
        return time.perf_counter()

    async def exit(self, call: Call, state: float, error: BaseException | None) -> None:
        self.seconds.observe(time.perf_counter() - state)
        code = final_code(call.context, error)
        handled = self.handled.get(code)
        if handled is None:
            handled = self.handled[code] = metrics.SERVER_HANDLED.labels(
                *self.labels, metrics.code_label(code)
            )
        handled.inc()
        if error is None and self.one_response:
            self.sent.inc()

    def on_message_sent(self, info: CallInfo) -> None:
        self.sent.inc()

    def on_message_received(self, info: CallInfo) -> None:
        self.received.inc()


class AccessLogStage(Stage):
    """One JSON line per finished call: DEBUG when OK, INFO for caller errors, ERROR for faults."""

    def applies(self, info: CallInfo) -> bool:
        return not is_infrastructure(info)

    async def enter(self, call: Call) -> tuple[float, str]:
        # Read the context while the call is alive; after a cancellation it must not be touched.
        call.meta  # noqa: B018 - parsed now, while the call is alive
        return time.perf_counter(), call.context.peer()

    async def exit(self, call: Call, state: tuple[float, str], error: BaseException | None) -> None:
        start, peer = state
        info, context, meta = call.info, call.context, call.meta
        code = final_code(context, error)
        level = (
            logging.DEBUG
            if code is grpc.StatusCode.OK
            else logging.ERROR
            if code in _SERVER_FAULTS
            else logging.INFO
        )
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s",
                info.full_method,
                code.name,
                extra={
                    "grpc_method": info.full_method,
                    "grpc_code": code.name,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    "peer": peer,
                    "channel": meta.get("x-omni-channel", ""),
                    "request_id": meta.get("x-request-id", ""),
                    "grpc_message": "" if cancelled(error) else (context.details() or ""),
                },
            )
