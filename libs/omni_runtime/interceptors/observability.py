"""Tracing, metrics and access logs for every call: the SRE's view of a service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from omni_runtime import metrics, tracing
from omni_runtime.interceptors.base import CallInfo, Stage, is_infrastructure, metadata_dict

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

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, context: grpc.aio.ServicerContext, request: Any | None
    ) -> AsyncIterator[None]:
        parent = tracing.extract_from_metadata(context.invocation_metadata())
        token = otel_context.attach(parent)  # type: ignore[arg-type]
        try:
            with tracing.tracer("omni.grpc").start_as_current_span(
                info.full_method.lstrip("/"),
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": info.service, "rpc.method": info.method},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                error: BaseException | None = None
                try:
                    yield
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    code = final_code(context, error)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in _SERVER_FAULTS:
                        span.set_status(Status(StatusCode.ERROR, code.name))
        finally:
            otel_context.detach(token)


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

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, context: grpc.aio.ServicerContext, request: Any | None
    ) -> AsyncIterator[None]:
        labels = (info.service, info.method, info.rpc_type)
        metrics.SERVER_STARTED.labels(*labels).inc()
        if request is not None:
            metrics.SERVER_MSG_RECEIVED.labels(*labels).inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            metrics.SERVER_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - start)
            metrics.SERVER_HANDLED.labels(*labels, metrics.code_label(final_code(context, error))).inc()
            if error is None and info.rpc_type in ("unary", "client_stream"):
                metrics.SERVER_MSG_SENT.labels(*labels).inc()

    def on_message_sent(self, info: CallInfo) -> None:
        metrics.SERVER_MSG_SENT.labels(info.service, info.method, info.rpc_type).inc()

    def on_message_received(self, info: CallInfo) -> None:
        metrics.SERVER_MSG_RECEIVED.labels(info.service, info.method, info.rpc_type).inc()


class AccessLogStage(Stage):
    """One JSON line per finished call: DEBUG when OK, INFO for caller errors, ERROR for faults."""

    def applies(self, info: CallInfo) -> bool:
        return not is_infrastructure(info)

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, context: grpc.aio.ServicerContext, request: Any | None
    ) -> AsyncIterator[None]:
        start = time.perf_counter()
        # Read the context while the call is alive; after a cancellation it must not be touched.
        peer = context.peer()
        meta = metadata_dict(context)
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
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
