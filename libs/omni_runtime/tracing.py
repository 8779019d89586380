"""OpenTelemetry set-up and W3C trace-context propagation over gRPC metadata and NATS headers.

The exporter is configured by the standard ``OTEL_*`` variables: with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans go to that collector over OTLP/gRPC; without it spans
are still created (so logs carry trace ids) but not exported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import lru_cache

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

_provider: TracerProvider | None = None


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
    provider = TracerProvider(resource=resource)
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


def extract_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> object:
    """An OpenTelemetry context from incoming gRPC metadata (``traceparent``/``tracestate``)."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    return propagate.extract(carrier)


def inject_headers() -> dict[str, str]:
    """The current trace context as headers, for outgoing gRPC metadata or NATS messages."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_from_headers(headers: Mapping[str, str] | None) -> object:
    return propagate.extract(dict(headers or {}))
