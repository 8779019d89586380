"""The gateway app over the real probe service: errors, auth, channel, limits, deadlines, tracing."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from omni_runtime.auth.tokens import SigningKey, issue_token
from services.gateway.errors import HTTP_STATUS
from tests.gateway.conftest import WEB, auth

ECHO = "/v1/customers/c1/echoes/e1:echo"


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == response.status_code
    return body["error"]


def detail(error: dict, kind: str) -> dict:
    return next(d for d in error["details"] if d["@type"].endswith(kind))


async def test_unary_call_round_trip_carries_channel_and_subject(
    client: httpx.AsyncClient, make_token: Callable[..., str]
) -> None:
    response = await client.get("/v1/probe:ping", headers={"X-Omni-Channel": "mobile_app"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["channel"] == "mobile_app"
    assert body["subject"] == ""
    # The same RPC through its additional binding (POST with a JSON body).
    token = make_token("customers/c1")
    again = await client.post("/v1/probe:ping", headers=auth(token), json={})
    assert again.status_code == 200 and again.json()["subject"] == "customers/c1"

    echoed = await client.post(ECHO, headers=auth(token), json={"text": "héllo"})
    assert echoed.status_code == 200
    assert echoed.json() == {"name": "customers/c1/echoes/e1", "text": "héllo"}


@pytest.mark.parametrize(
    ("kind", "status", "code", "detail_type"),
    [
        ("invalid", 400, "INVALID_ARGUMENT", "BadRequest"),
        ("not_found", 404, "NOT_FOUND", "ErrorInfo"),
        ("aborted", 409, "ABORTED", "ErrorInfo"),
        ("precondition", 400, "FAILED_PRECONDITION", "PreconditionFailure"),
        ("unavailable", 503, "UNAVAILABLE", "ErrorInfo"),
        ("unexpected", 500, "INTERNAL", "ErrorInfo"),
    ],
)
async def test_grpc_errors_become_http_statuses_with_the_status_details(
    client: httpx.AsyncClient, kind: str, status: int, code: str, detail_type: str
) -> None:
    response = await client.post("/v1/probe:fail", headers=WEB, json={"kind": kind})
    assert response.status_code == status
    error = error_of(response)
    assert error["status"] == code
    found = detail(error, detail_type)
    if kind == "invalid":
        assert found["fieldViolations"][0]["field"] == "kind"
    if kind == "aborted":
        assert found["metadata"]["current_etag"] == 'W/"7"'
    if kind == "precondition":
        assert found["violations"][0] == {
            "type": "STOCK",
            "subject": "items/sku-1",
            "description": "only 2 available",
        }
    if kind == "unexpected":
        assert "secret" not in response.text
        assert found["metadata"]["trace_id"]


def test_status_mapping_table_matches_google_rpc_code() -> None:
    import grpc

    expected = {
        "INVALID_ARGUMENT": 400,
        "FAILED_PRECONDITION": 400,
        "OUT_OF_RANGE": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "ABORTED": 409,
        "ALREADY_EXISTS": 409,
        "RESOURCE_EXHAUSTED": 429,
        "CANCELLED": 499,
        "UNIMPLEMENTED": 501,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
        "INTERNAL": 500,
        "UNKNOWN": 500,
        "DATA_LOSS": 500,
    }
    assert {code.name: HTTP_STATUS[code] for code in grpc.StatusCode if code.name in expected} == expected


async def test_tokens_are_checked_before_the_service_is_called(
    client: httpx.AsyncClient, make_token: Callable[..., str], probe
) -> None:
    missing = await client.post(ECHO, headers=WEB, json={"text": "x"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert detail(error_of(missing), "ErrorInfo") == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "TOKEN_MISSING",
        "domain": "omni.gateway",
    }
    expired = make_token("customers/c1", now=time.time() - 3600, ttl_seconds=60)
    forged = issue_token(SigningKey.generate("test-key-1"), subject="customers/c1", roles=["customer"])
    for header, reason in [
        (f"Bearer {expired}", "TOKEN_EXPIRED"),
        (f"Bearer {forged}", "TOKEN_INVALID"),
        ("Bearer not-a-jwt", "TOKEN_MALFORMED"),
        (f"Basic {make_token('customers/c1')}", "TOKEN_MALFORMED"),
    ]:
        response = await client.post(ECHO, headers={**WEB, "Authorization": header}, json={"text": "x"})
        assert response.status_code == 401, header
        assert detail(error_of(response), "ErrorInfo")["reason"] == reason
    # Authorization (ownership) stays the service's job: the gateway passes a valid token on.
    other = await client.post(ECHO, headers=auth(make_token("customers/c2")), json={"text": "x"})
    assert other.status_code == 403
    assert detail(error_of(other), "ErrorInfo")["reason"] == "NOT_OWNER"
    # Public routes need no token.
    assert (await client.get("/v1/probe:ping", headers=WEB)).status_code == 200


async def test_channel_is_required_and_validated(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/probe:ping")
    assert missing.status_code == 400
    error = error_of(missing)
    assert (
        "X-Omni-Channel" in error["message"]
        and "mobile_app" in error["message"]
        and "store_pos" in error["message"]
    )
    assert detail(error, "ErrorInfo")["reason"] == "CHANNEL_MISSING"

    unknown = await client.get("/v1/probe:ping", headers={"X-Omni-Channel": "fax"})
    assert unknown.status_code == 400 and "unknown channel 'fax'" in error_of(unknown)["message"]
    bad_store = await client.get("/v1/probe:ping", headers={**WEB, "X-Omni-Store": "shop 1"})
    assert bad_store.status_code == 400 and "x-omni-store" in error_of(bad_store)["message"]

    in_store = await client.get(
        "/v1/probe:ping",
        headers={"X-Omni-Channel": "Store_POS", "X-Omni-Store": "locations/s1", "X-Omni-Device": "till-7"},
    )
    assert in_store.status_code == 200 and in_store.json()["channel"] == "store_pos"
    # Infrastructure endpoints need no channel.
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_rate_limit_answers_429_with_retry_after_per_client(
    make_app: Callable[..., Starlette], make_token: Callable[..., str]
) -> None:
    app = make_app(rate_per_second=0.5, rate_burst=3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        statuses = [(await http.get("/v1/probe:ping", headers=WEB)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await http.get("/v1/probe:ping", headers=WEB)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        error = error_of(limited)
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert detail(error, "ErrorInfo")["reason"] == "RATE_LIMITED"
        # A customer is limited by its token's subject, not by the address it shares.
        token = make_token("customers/c1")
        assert (await http.post(ECHO, headers=auth(token), json={"text": "x"})).status_code == 200


async def test_request_body_limit_and_content_type(make_app: Callable[..., Starlette]) -> None:
    app = make_app(max_body_bytes=64)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        big = {"kind": "x" * 100}
        declared = await http.post("/v1/probe:fail", headers=WEB, json=big)
        assert declared.status_code == 413
        assert detail(error_of(declared), "ErrorInfo")["reason"] == "BODY_TOO_LARGE"

        async def chunks():
            yield b'{"kind": "'
            yield b"x" * 100
            yield b'"}'

        streamed = await http.post("/v1/probe:fail", headers=WEB, content=chunks())
        assert streamed.status_code == 413
        text = await http.post(
            "/v1/probe:sleep", headers={**WEB, "Content-Type": "text/plain"}, content=b"hi"
        )
        assert text.status_code == 415
        ok = await http.post(
            "/v1/probe:sleep",
            headers={**WEB, "Content-Type": "application/json; charset=utf-8"},
            content=b"{}",
        )
        assert ok.status_code == 200 and ok.json() == {"completed": True}


async def test_deadline_header_bounds_the_call(client: httpx.AsyncClient) -> None:
    slow = await client.post(
        "/v1/probe:sleep", headers={**WEB, "X-Request-Timeout": "150ms"}, json={"seconds": 2}
    )
    assert slow.status_code == 504
    assert error_of(slow)["status"] == "DEADLINE_EXCEEDED"

    seen = (await client.get("/v1/probe:ping", headers={**WEB, "X-Request-Timeout": "4.5"})).json()
    assert 3.5 < seen["remainingSeconds"] <= 4.6
    default = (await client.get("/v1/probe:ping", headers=WEB)).json()
    assert 25 < default["remainingSeconds"] <= 30.5  # the default deadline, not the client lib's 10 s
    capped = (await client.get("/v1/probe:ping", headers={**WEB, "X-Request-Timeout": "100000"})).json()
    assert capped["remainingSeconds"] <= 301

    for bad in ("soon", "-1", "0", "1h"):
        response = await client.get("/v1/probe:ping", headers={**WEB, "X-Request-Timeout": bad})
        assert response.status_code == 400, bad
        assert detail(error_of(response), "ErrorInfo")["reason"] == "BAD_TIMEOUT"


async def test_request_ids_are_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/v1/probe:ping", headers={**WEB, "X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/v1/probe:ping", headers=WEB)
    other = await client.get("/v1/nowhere", headers={**WEB, "X-Request-Id": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32
    assert other.status_code == 404 and other.headers["x-request-id"] != "bad id with spaces"


async def test_trace_context_reaches_the_service(client: httpx.AsyncClient) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get(
        "/v1/probe:ping", headers={**WEB, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    gateway_span = next(s for s in spans if s.name == "GET /v1/probe:ping")
    service_span = next(s for s in spans if "Ping" in s.name and s is not gateway_span)
    assert f"{gateway_span.context.trace_id:032x}" == trace_id
    assert f"{service_span.context.trace_id:032x}" == trace_id
    assert service_span.parent is not None and service_span.parent.span_id == gateway_span.context.span_id
    exporter.shutdown()


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing/here", headers=WEB)
    assert missing.status_code == 404 and error_of(missing)["status"] == "NOT_FOUND"
    wrong = await client.delete("/v1/probe:ping", headers=WEB)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST"


async def test_health_readiness_and_metrics(client: httpx.AsyncClient, probe) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "SERVING", "services": {"omni.probe.v1.ProbeService": "SERVING"}}

    def count(status: str) -> float:
        value = REGISTRY.get_sample_value(
            "omni_gateway_http_requests_total",
            {"route": "/v1/probe:fail", "method": "POST", "status": status},
        )
        return value or 0.0

    before = count("404")
    await client.post("/v1/probe:fail", headers=WEB, json={"kind": "not_found"})
    assert count("404") == before + 1
    assert REGISTRY.get_sample_value(
        "omni_gateway_http_request_seconds_count", {"route": "/v1/probe:fail", "method": "POST"}
    )


async def test_readiness_fails_when_a_backend_is_down_and_while_draining(
    make_app: Callable[..., Starlette], contracts, key_source
) -> None:
    from omni_runtime.clients import make_channel
    from omni_runtime.localinfra import free_port
    from services.gateway.app import GatewayConfig, create_app
    from tests.gateway.conftest import gateway_settings

    down = make_channel(f"127.0.0.1:{free_port()}")
    try:
        app = create_app(
            contracts,
            {"omni.probe.v1.ProbeService": down},
            gateway_settings(),
            key_source=key_source,
            config=GatewayConfig(readiness_timeout_seconds=0.3),
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as http:
            response = await http.get("/readyz")
            assert response.status_code == 503
            assert response.json()["services"]["omni.probe.v1.ProbeService"] in {
                "UNAVAILABLE",
                "DEADLINE_EXCEEDED",
            }
            unavailable = await http.get("/v1/probe:ping", headers={**WEB, "X-Request-Timeout": "0.5"})
            assert unavailable.status_code in (503, 504)
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await down.close()
    healthy = make_app()
    healthy.state.gateway.begin_drain()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=healthy), base_url="http://g") as http:
        assert (await http.get("/readyz")).status_code == 503
