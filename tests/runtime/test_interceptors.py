"""Every interceptor of the shared runtime, through a real server over a real socket."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import grpc
import pytest
from google.rpc import code_pb2
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime import tracing
from omni_runtime.auth.tokens import SigningKey, issue_token
from omni_runtime.errors import status_of, unpack_details
from omni_runtime.logs import JsonFormatter
from omni_runtime.testing.plugin import bearer

SVC = "omni.probe.v1.ProbeService"


async def call_error(coro) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value


def handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_service": SVC, "grpc_method": method, "grpc_type": "unary", "grpc_code": code},
    )
    return value or 0.0


# --- channel context -------------------------------------------------------------------------


async def test_channel_headers_reach_the_handler(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    reply = await stub.Ping(probe_pb2.PingRequest(), metadata=(("x-omni-channel", "mobile_app"),))
    assert reply.channel == "mobile_app"
    assert reply.subject == ""


async def test_unknown_channel_is_invalid_argument_with_field_violation(
    stub: probe_pb2_grpc.ProbeServiceStub,
) -> None:
    err = await call_error(
        stub.Ping(probe_pb2.PingRequest(), metadata=(("x-omni-channel", "fax"), ("x-omni-store", "shop 1")))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = unpack_details(status_of(err))  # type: ignore[arg-type]
    fields = {v.field for v in details["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {"x-omni-channel", "x-omni-store"}


# --- authentication and authorization --------------------------------------------------------


async def test_missing_token_is_unauthenticated(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    err = await call_error(stub.Echo(probe_pb2.EchoRequest(name="customers/c1/echoes/e", text="x")))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert unpack_details(status_of(err))["ErrorInfo"].reason == "TOKEN_MISSING"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("header", "reason"),
    [("Bearer not-a-jwt", "TOKEN_MALFORMED"), ("Basic abc", "TOKEN_MALFORMED")],
)
async def test_malformed_token_is_unauthenticated(
    stub: probe_pb2_grpc.ProbeServiceStub, header: str, reason: str
) -> None:
    err = await call_error(
        stub.Echo(
            probe_pb2.EchoRequest(name="customers/c1/echoes/e", text="x"),
            metadata=(("authorization", header),),
        )
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert unpack_details(status_of(err))["ErrorInfo"].reason == reason  # type: ignore[attr-defined]


async def test_token_signed_by_unknown_key_is_rejected(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    forged = issue_token(SigningKey.generate("test-key-1"), subject="customers/c1", roles=["admin"])
    err = await call_error(
        stub.Echo(probe_pb2.EchoRequest(name="customers/c1/echoes/e", text="x"), metadata=bearer(forged))
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_expired_token_is_rejected(
    stub: probe_pb2_grpc.ProbeServiceStub, make_token: Callable[..., str]
) -> None:
    token = make_token("customers/c1", ["customer"], ttl_seconds=60, now=1_000_000)
    err = await call_error(
        stub.Echo(probe_pb2.EchoRequest(name="customers/c1/echoes/e", text="x"), metadata=bearer(token))
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert unpack_details(status_of(err))["ErrorInfo"].reason == "TOKEN_EXPIRED"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("subject", "roles", "target", "expected"),
    [
        ("customers/c1", ["customer"], "customers/c1/echoes/e", grpc.StatusCode.OK),
        ("customers/c1", ["customer"], "customers/c2/echoes/e", grpc.StatusCode.PERMISSION_DENIED),
        ("customers/g1", ["guest"], "customers/g1/echoes/e", grpc.StatusCode.OK),
        ("staffMembers/a1", ["agent"], "customers/c2/echoes/e", grpc.StatusCode.OK),
        ("staffMembers/m1", ["marketer"], "customers/c2/echoes/e", grpc.StatusCode.OK),
        ("staffMembers/s1", ["store_associate"], "customers/c2/echoes/e", grpc.StatusCode.OK),
        ("staffMembers/x1", [], "customers/c2/echoes/e", grpc.StatusCode.PERMISSION_DENIED),
        ("serviceClients/web", ["service"], "customers/c2/echoes/e", grpc.StatusCode.OK),
        ("staffMembers/root", ["admin"], "customers/c9/echoes/e", grpc.StatusCode.OK),
    ],
)
async def test_authorization_matrix(
    stub: probe_pb2_grpc.ProbeServiceStub,
    make_token: Callable[..., str],
    subject: str,
    roles: list[str],
    target: str,
    expected: grpc.StatusCode,
) -> None:
    token = make_token(subject, roles)
    request = probe_pb2.EchoRequest(name=target, text="hello")
    if expected is grpc.StatusCode.OK:
        reply = await stub.Echo(request, metadata=bearer(token))
        assert reply.name == target
    else:
        err = await call_error(stub.Echo(request, metadata=bearer(token)))
        assert err.code() is expected


async def test_method_without_auth_rule_is_refused(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    err = await call_error(stub.Undeclared(probe_pb2.PingRequest()))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert unpack_details(status_of(err))["ErrorInfo"].reason == "NO_AUTH_RULE"  # type: ignore[attr-defined]


async def test_public_method_sees_the_principal_of_a_valid_token(
    stub: probe_pb2_grpc.ProbeServiceStub, make_token: Callable[..., str]
) -> None:
    reply = await stub.Ping(probe_pb2.PingRequest(), metadata=bearer(make_token("customers/c7")))
    assert reply.subject == "customers/c7"


# --- validation and error mapping ------------------------------------------------------------


async def test_bad_input_lists_every_field_violation(
    stub: probe_pb2_grpc.ProbeServiceStub, make_token: Callable[..., str]
) -> None:
    err = await call_error(
        stub.Echo(probe_pb2.EchoRequest(name="carts/1", text=""), metadata=bearer(make_token("x", ["admin"])))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = unpack_details(status_of(err))["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert {(v.field, v.reason) for v in violations} == {("name", "INVALID_NAME"), ("text", "REQUIRED")}


@pytest.mark.parametrize(
    ("kind", "code", "detail"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "BadRequest"),
        ("not_found", grpc.StatusCode.NOT_FOUND, "ErrorInfo"),
        ("aborted", grpc.StatusCode.ABORTED, "ErrorInfo"),
        ("precondition", grpc.StatusCode.FAILED_PRECONDITION, "PreconditionFailure"),
        ("unavailable", grpc.StatusCode.UNAVAILABLE, "ErrorInfo"),
    ],
)
async def test_domain_errors_map_to_status_with_details(
    stub: probe_pb2_grpc.ProbeServiceStub, kind: str, code: grpc.StatusCode, detail: str
) -> None:
    err = await call_error(stub.Fail(probe_pb2.FailRequest(kind=kind)))
    assert err.code() is code
    status = status_of(err)
    assert status is not None and status.code == code.value[0]
    assert detail in unpack_details(status)


async def test_stale_etag_carries_the_current_etag(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    err = await call_error(stub.Fail(probe_pb2.FailRequest(kind="aborted")))
    info = unpack_details(status_of(err))["ErrorInfo"]  # type: ignore[arg-type]
    assert info.metadata["current_etag"] == 'W/"7"'  # type: ignore[attr-defined]


async def test_unexpected_exception_is_internal_without_leaking(
    stub: probe_pb2_grpc.ProbeServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    before = handled("Fail", "Internal")
    with caplog.at_level(logging.ERROR, logger="omni.errors"):
        err = await call_error(stub.Fail(probe_pb2.FailRequest(kind="unexpected")))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in (err.details() or "")
    assert "Traceback" not in (err.details() or "")
    status = status_of(err)
    assert status is not None and status.code == code_pb2.INTERNAL
    trace_id = unpack_details(status)["ErrorInfo"].metadata["trace_id"]  # type: ignore[attr-defined]
    assert len(trace_id) == 32
    assert trace_id in (err.details() or "")
    # The log line has the stack trace and the same trace id.
    records = [r for r in caplog.records if r.name == "omni.errors"]
    assert records and records[-1].exc_info is not None
    line = json.loads(JsonFormatter("probe").format(records[-1]))
    assert "secret internal detail" in line["exception"]
    assert handled("Fail", "Internal") == before + 1


# --- metrics ---------------------------------------------------------------------------------


async def test_metrics_count_started_and_handled_by_code(
    stub: probe_pb2_grpc.ProbeServiceStub, make_token: Callable[..., str]
) -> None:
    ok_before, denied_before = handled("Echo", "OK"), handled("Echo", "PermissionDenied")
    started_before = (
        REGISTRY.get_sample_value(
            "grpc_server_started_total", {"grpc_service": SVC, "grpc_method": "Echo", "grpc_type": "unary"}
        )
        or 0.0
    )
    token = make_token("customers/c1")
    await stub.Echo(probe_pb2.EchoRequest(name="customers/c1/echoes/e", text="x"), metadata=bearer(token))
    await call_error(
        stub.Echo(probe_pb2.EchoRequest(name="customers/c2/echoes/e", text="x"), metadata=bearer(token))
    )
    assert handled("Echo", "OK") == ok_before + 1
    assert handled("Echo", "PermissionDenied") == denied_before + 1
    started = REGISTRY.get_sample_value(
        "grpc_server_started_total", {"grpc_service": SVC, "grpc_method": "Echo", "grpc_type": "unary"}
    )
    assert started == started_before + 2
    count = REGISTRY.get_sample_value(
        "grpc_server_handling_seconds_count",
        {"grpc_service": SVC, "grpc_method": "Echo", "grpc_type": "unary"},
    )
    assert count is not None and count >= 2


async def test_streaming_calls_count_messages_and_map_errors_mid_stream(
    stub: probe_pb2_grpc.ProbeServiceStub,
) -> None:
    ticks = [t.index async for t in stub.Ticks(probe_pb2.TicksRequest(count=4))]
    assert ticks == [0, 1, 2, 3]
    received: list[int] = []
    call = stub.Ticks(probe_pb2.TicksRequest(count=5, fail_after=2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for tick in call:
            received.append(tick.index)
    assert received == [0, 1]
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    sent = REGISTRY.get_sample_value(
        "grpc_server_msg_sent_total",
        {"grpc_service": SVC, "grpc_method": "Ticks", "grpc_type": "server_stream"},
    )
    assert sent is not None and sent >= 6


# --- tracing and logs ------------------------------------------------------------------------


async def test_server_span_continues_the_callers_trace(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing("tests", "0")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    await stub.Ping(probe_pb2.PingRequest(), metadata=(("traceparent", parent),))
    spans = [s for s in exporter.get_finished_spans() if s.name == f"{SVC}/Ping"]
    assert spans, "no server span recorded"
    span = spans[-1]
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes["rpc.grpc.status_code"] == 0  # type: ignore[index]


async def test_access_log_is_json_with_trace_id(
    stub: probe_pb2_grpc.ProbeServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    tracing.configure_tracing("tests", "0")
    with caplog.at_level(logging.INFO, logger="omni.access"):
        await call_error(stub.Fail(probe_pb2.FailRequest(kind="not_found")))
    records = [r for r in caplog.records if r.name == "omni.access"]
    assert records
    line = json.loads(JsonFormatter("probe").format(records[-1]))
    assert line["grpc_code"] == "NOT_FOUND"
    assert line["grpc_method"] == f"/{SVC}/Fail"
    assert line["level"] == "INFO"
    assert "duration_ms" in line


# --- deadlines -------------------------------------------------------------------------------


async def test_callers_deadline_is_visible_to_the_handler(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    reply = await stub.Ping(probe_pb2.PingRequest(), timeout=5)
    assert 0 < reply.remaining_seconds <= 5.1


async def test_call_without_deadline_gets_the_default(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    reply = await stub.Ping(probe_pb2.PingRequest())
    assert 25 < reply.remaining_seconds <= 30.1


async def test_callers_deadline_cancels_a_slow_call(stub: probe_pb2_grpc.ProbeServiceStub) -> None:
    err = await call_error(stub.Sleep(probe_pb2.SleepRequest(seconds=2), timeout=0.2))
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_cancelling_a_stream_is_logged_without_touching_the_dead_call(
    stub: probe_pb2_grpc.ProbeServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: reading a cancelled stream's context after the fact crashed grpcio (segfault)."""
    with caplog.at_level(logging.DEBUG, logger="omni.access"):
        for _ in range(20):
            call = stub.Ticks(probe_pb2.TicksRequest(count=1_000_000))
            async for tick in call:
                if tick.index == 3:
                    break
            call.cancel()
        # The server is alive and well.
        assert (await stub.Ping(probe_pb2.PingRequest())).subject == ""
    cancelled = [
        r for r in caplog.records if r.name == "omni.access" and getattr(r, "grpc_code", "") == "CANCELLED"
    ]
    assert cancelled


def test_a_method_the_servicer_does_not_implement_answers_unimplemented() -> None:
    """The generated servicer base raises NotImplementedError for RPCs a service has not built
    yet (messaging's conversations until part 2): UNIMPLEMENTED, not INTERNAL."""
    from omni_runtime.interceptors.errors import translate

    mapped = translate(NotImplementedError("Method not implemented!"))
    assert mapped is not None
    assert mapped.code is grpc.StatusCode.UNIMPLEMENTED
