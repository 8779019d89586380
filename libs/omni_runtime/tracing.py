"""OpenTelemetry set-up and W3C trace-context propagation over gRPC metadata and NATS headers.

The exporter is configured by the standard ``OTEL_*`` variables: with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans go to that collector over OTLP/gRPC, sampled by
``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``: a caller's decision is followed,
new traces are all kept; ``parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG`` keeps a
share). Without an exporter nothing is recorded, since nothing would read it: server calls get a
non-recording span (``server_span``) that still carries a trace id, so logs and INTERNAL errors
name one and the caller's trace context travels on to peers and events.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags


class _Provider(TracerProvider):
    """The SDK's provider, knowing whether any span processor (exporter) was added."""

    exporting = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.exporting = True


_provider: _Provider | None = None


def configure_tracing(service: str, version: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the global tracer provider once per process; later calls return it."""
    global _provider  # noqa: PLW0603 - one provider per process is OpenTelemetry's model
    if _provider is not None:
        if exporter is not None:
            _provider.add_span_processor(BatchSpanProcessor(exporter))
        return _provider
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"omni-{service}"), "service.version": version}
    )
    provider = _Provider(resource=resource)
    if exporter is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop exporting; called last on shutdown."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


@lru_cache(maxsize=64)
def tracer(name: str = "omni") -> trace.Tracer:
    """A cached tracer: ``get_tracer`` builds a new one per call, which costs more than a span."""
    return trace.get_tracer(name)


def recording() -> bool:
    """Whether spans are recorded at all: only once something exports them."""
    return _provider is not None and _provider.exporting


@lru_cache(maxsize=1)
def _propagated_fields() -> frozenset[str]:
    """The header names the configured propagators read (``traceparent``, ``baggage``, …)."""
    return frozenset(propagate.get_global_textmap().fields)


def extract_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """An OpenTelemetry context from incoming gRPC metadata (``traceparent``/``tracestate``).

    Metadata without any propagated header (most calls from channel backends) skips the
    propagators and gets an empty context.
    """
    fields = _propagated_fields()
    carrier = {k: v for k, v in (metadata or ()) if k in fields and isinstance(v, str)}
    return propagate.extract(carrier) if carrier else otel_context.Context()


class ServerSpan:
    """The span of one server call, made current for the rest of the call.

    When something records, it is the SDK's span (the sampler decides, following the caller);
    when nothing does, a non-recording span with the caller's trace id (or a new one) and a
    fresh span id: no sampler, attributes or processors run for it.
    """

    __slots__ = ("span",)

    def __init__(
        self, tracer_name: str, name: str, parent: otel_context.Context, attributes: Mapping[str, Any]
    ) -> None:
        if recording():
            self.span: trace.Span = tracer(tracer_name).start_span(
                name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
        else:
            caller = trace.get_current_span(parent).get_span_context()
            self.span = NonRecordingSpan(
                SpanContext(
                    trace_id=caller.trace_id if caller.is_valid else random.getrandbits(128) or 1,
                    span_id=random.getrandbits(64) or 1,
                    is_remote=False,
                    trace_flags=caller.trace_flags if caller.is_valid else TraceFlags(TraceFlags.DEFAULT),
                    trace_state=caller.trace_state if caller.is_valid else None,
                )
            )
        # Never detached: a call's context ends with its task (see interceptors/base.py).
        otel_context.attach(trace.set_span_in_context(self.span, parent))


def inject_headers() -> dict[str, str]:
    """The current trace context as headers, for outgoing gRPC metadata or NATS messages."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context:
    """An OpenTelemetry context from HTTP or NATS headers (an empty one when they carry none)."""
    if not headers:
        return otel_context.Context()
    carrier = {name: headers[name] for name in _propagated_fields() if name in headers}
    return propagate.extract(carrier) if carrier else otel_context.Context()
