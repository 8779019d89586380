"""Server spans: recorded only when something exports them, trace ids either way."""

from __future__ import annotations

import contextvars

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from omni_runtime import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"), ("x-omni-channel", "web"))


def test_without_an_exporter_the_span_is_not_recorded_but_keeps_the_callers_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = tracing.configure_tracing("tests", "0")
    monkeypatch.setattr(provider, "exporting", False)
    assert not tracing.recording()
    # A server span stays current for the rest of its call's context: give it one of its own.
    contextvars.copy_context().run(_non_recording_span_continues_the_trace)


def _non_recording_span_continues_the_trace() -> None:
    span = tracing.ServerSpan("t", "svc/Method", tracing.extract_from_metadata(PARENT), {}).span
    assert not span.is_recording()
    context = span.get_span_context()
    assert f"{context.trace_id:032x}" == TRACE_ID
    assert f"{context.span_id:016x}" != "00f067aa0ba902b7"  # a span of its own
    assert context.trace_flags.sampled  # the caller's decision travels on
    assert trace.get_current_span() is span
    headers = tracing.inject_headers()
    assert TRACE_ID in headers["traceparent"]


def test_without_a_caller_a_new_trace_id_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = tracing.configure_tracing("tests", "0")
    monkeypatch.setattr(provider, "exporting", False)
    empty = tracing.extract_from_metadata((("x-omni-channel", "web"),))
    first = contextvars.copy_context().run(_server_span, empty).get_span_context()
    second = contextvars.copy_context().run(_server_span, empty).get_span_context()
    assert first.is_valid and second.is_valid
    assert first.trace_id != second.trace_id


def test_with_an_exporter_the_span_is_recorded_as_a_child_of_the_caller() -> None:
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing("tests", "0")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.recording()
    parent = tracing.extract_from_metadata(PARENT)
    span = contextvars.copy_context().run(_server_span, parent, "svc/Recorded", {"a": "b"})
    assert span.is_recording()
    span.end()
    finished: list[ReadableSpan] = [s for s in exporter.get_finished_spans() if s.name == "svc/Recorded"]
    assert finished and finished[0].parent is not None
    assert f"{finished[0].context.trace_id:032x}" == TRACE_ID
    assert finished[0].attributes == {"a": "b"}


def _server_span(
    parent: object, name: str = "svc/Method", attributes: dict[str, str] | None = None
) -> trace.Span:
    return tracing.ServerSpan("t", name, parent, attributes or {}).span  # type: ignore[arg-type]
