"""The gateway's ASGI application: HTTP/JSON in, gRPC out, driven entirely by the route table.

Per request, in this order (cheapest rejection first, nothing reaches a service that a service
would refuse anyway): route match (404/405) → channel headers (400) → bearer token for
non-public routes (401, verified against identity's JWKS; services verify again) → rate limit
per caller (429) → deadline (400 on a malformed X-Request-Timeout) → body size and type
(413/415) → transcoding (400) → the gRPC call over the pooled channel of its service, with the
token, channel, store, device, request id, W3C trace context and a deadline → JSON (or SSE).

``create_app`` takes the descriptor set, a channel per exposed service and settings, so tests and
benchmarks build the very same app in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from omni_runtime import context as call_context
from omni_runtime import tracing
from omni_runtime.auth.jwks_client import identity_jwks_source
from omni_runtime.auth.keys import KeySource
from omni_runtime.auth.tokens import TokenVerifier
from omni_runtime.config import ConfigError, Settings
from omni_runtime.errors import FieldViolation, InvalidArgument, OmniError, Unauthenticated
from omni_runtime.interceptors import deadlines
from omni_runtime.interceptors.auth import bearer_token
from omni_runtime.interceptors.channel import parse_channel
from services.gateway import errors, sse
from services.gateway.docs import Docs
from services.gateway.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from services.gateway.openapi import build_openapi
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import Contracts, Route, RouteMatch, build_routes
from services.gateway.transcode import (
    build_raw_request,
    build_request,
    dumps,
    find_etag,
    response_json,
    set_if_empty,
    to_json,
)

log = logging.getLogger("omni.gateway")

IDENTITY_SERVICE = "omni.identity.v1.IdentityService"
_TIMEOUT = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*(ms|s)?\s*")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Request fields the Last-Event-ID header resumes (WatchCart's since_etag); generic by name.
RESUME_FIELD = "since_etag"


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's own knobs; ``from_settings`` reads ``OMNI_GATEWAY_*``."""

    default_timeout_seconds: float = 30.0
    max_timeout_seconds: float = 300.0
    # A server stream (SSE) ends after this long; the client reconnects with Last-Event-ID.
    stream_max_seconds: float = 300.0
    heartbeat_seconds: float = 15.0
    # How long to wait for a stream's first message before answering 200: long enough to turn
    # an immediate refusal (403, 404) into a proper HTTP status, short enough not to stall.
    stream_first_wait_seconds: float = 0.5
    rate_per_second: float = 50.0
    rate_burst: float = 100.0
    max_body_bytes: int = 1024 * 1024
    readiness_cache_seconds: float = 1.5
    readiness_timeout_seconds: float = 1.0
    # Serve the interactive API page at /docs (OMNI_GATEWAY_DOCS=false turns it off).
    docs: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        def number(name: str, default: float) -> float:
            raw = settings.setting(name, "")
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"OMNI_GATEWAY_{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ConfigError(f"OMNI_GATEWAY_{name} must be positive")
            return value

        docs = settings.setting("DOCS", "true").strip().lower()
        if docs not in {"true", "false"}:
            raise ConfigError(f"OMNI_GATEWAY_DOCS must be true or false, got {docs!r}")
        return cls(
            docs=docs == "true",
            default_timeout_seconds=min(settings.default_deadline_seconds, settings.max_deadline_seconds),
            max_timeout_seconds=settings.max_deadline_seconds,
            stream_max_seconds=number("STREAM_MAX_SECONDS", cls.stream_max_seconds),
            heartbeat_seconds=number("HEARTBEAT_SECONDS", cls.heartbeat_seconds),
            rate_per_second=number("RATE_LIMIT_PER_SECOND", cls.rate_per_second),
            rate_burst=number("RATE_LIMIT_BURST", cls.rate_burst),
            max_body_bytes=int(number("MAX_BODY_BYTES", cls.max_body_bytes)),
        )


def call_budget(seconds: float) -> contextlib.AbstractContextManager[None]:
    """This request's budget for the runtime's client interceptor (the gateway is the edge)."""
    return deadlines.budget(seconds)


def _reject(error: OmniError, **kw: Any) -> errors.GatewayReject:
    return errors.GatewayReject(errors.from_omni_error(error, **kw))


def _bad_header(header: str, description: str, reason: str) -> errors.GatewayReject:
    return _reject(
        InvalidArgument([FieldViolation(header, description, reason)], reason=reason, domain="omni.gateway")
    )


class Gateway:
    """Holds what every request shares: routes, channels, verifier, limiter, readiness."""

    def __init__(
        self,
        contracts: Contracts,
        channels: Mapping[str, grpc.aio.Channel],
        settings: Settings,
        *,
        key_source: KeySource | None = None,
        config: GatewayConfig | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or GatewayConfig.from_settings(settings)
        self.channels = dict(channels)
        self.table = build_routes(contracts, list(self.channels))
        self.openapi = build_openapi(self.table, contracts, version=settings.version)
        self._openapi_bytes = dumps(self.openapi)
        if key_source is None:
            identity = self.channels.get(IDENTITY_SERVICE)
            if identity is None:
                raise ConfigError(
                    "the gateway verifies tokens with identity's JWKS; it needs identity's target"
                )
            key_source = identity_jwks_source(identity, ttl=settings.jwks_cache_seconds)
        self.verifier = TokenVerifier(key_source)  # caches verified tokens until they expire
        self.limiter = RateLimiter(self.config.rate_per_second, self.config.rate_burst)
        self.draining = asyncio.Event()
        self._calls: dict[str, Any] = {}
        self._ready: tuple[float, bool, dict[str, str]] = (float("-inf"), False, {})
        self._ready_lock = asyncio.Lock()
        self._tracer = tracing.tracer("omni.gateway")

    # -- infrastructure endpoints -------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        ready, detail = await self.ready()
        return JSONResponse(
            {"status": "SERVING" if ready else "NOT_SERVING", "services": detail},
            status_code=200 if ready else 503,
        )

    async def openapi_json(self, request: Request) -> Response:
        return Response(self._openapi_bytes, media_type="application/json")

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Every backend answers SERVING to grpc.health.v1 (cached briefly; false once draining)."""
        if self.draining.is_set():
            return False, {"gateway": "DRAINING"}
        async with self._ready_lock:
            checked, ready, detail = self._ready
            if time.monotonic() - checked < self.config.readiness_cache_seconds:
                return ready, detail
            names = list(self.channels)
            results = await asyncio.gather(*(self._health(name) for name in names))
            detail = dict(zip(names, results, strict=True))
            ready = all(r == "SERVING" for r in results)
            self._ready = (time.monotonic(), ready, detail)
            return ready, detail

    async def _health(self, service: str) -> str:
        stub = health_pb2_grpc.HealthStub(self.channels[service])
        try:
            with call_budget(self.config.readiness_timeout_seconds):
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=self.config.readiness_timeout_seconds,
                )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    # -- API requests -------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        method = request.method if request.method in _METHODS else "OTHER"
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.split(b"?", 1)[0].decode("latin-1")
        found = self.table.match(request.method, path)
        label = "unmatched"
        streaming = False
        try:
            if found is None:
                response = errors.error_response(
                    grpc.StatusCode.NOT_FOUND, f"no route for {request.method} {path}"
                )
            elif isinstance(found, list):
                response = errors.error_response(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{request.method} is not supported here; use {', '.join(found)}",
                    http=405,
                    headers={"Allow": ", ".join(found)},
                )
            else:
                label = found.route.label
                streaming = found.route.streaming
                response = await self._serve(request, found, request_id, label, started)
        except errors.GatewayReject as reject:
            response = reject.response
        except ClientDisconnect:
            response = Response(status_code=499)
        response.headers["X-Request-Id"] = request_id
        if not (streaming and isinstance(response, StreamingResponse)):
            self._observe(label, method, response.status_code, started)
        return response

    def _observe(self, label: str, method: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        HTTP_REQUESTS.labels(label, method, str(status)).inc()
        HTTP_REQUEST_SECONDS.labels(label, method).observe(elapsed)
        level = logging.ERROR if status >= 500 else logging.INFO if status >= 400 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s %d",
                method,
                label,
                status,
                extra={"route": label, "status": status, "duration_ms": round(elapsed * 1000, 3)},
            )

    async def _serve(
        self, request: Request, found: RouteMatch, request_id: str, label: str, started: float
    ) -> Response:
        route = found.route
        headers = request.headers
        parent = tracing.extract_from_headers(headers)
        # The request's span: recorded only when an exporter is configured, otherwise a
        # non-recording span that still carries the trace id on (omni_runtime.tracing). Each
        # request has its own task (uvicorn), so the span stays current for exactly this request.
        span = tracing.ServerSpan(
            "omni.gateway",
            f"{request.method} {label}",
            parent,
            {"http.request.method": request.method, "http.route": label, "rpc.method": route.grpc_path},
        ).span
        try:
            channel = self._channel(headers, optional=route.raw_request)
            authorization, client = await self._authenticate(route, request)
            wait = self.limiter.acquire(client)
            if wait is not None:
                raise _reject(
                    _RateLimited(f"too many requests from this client; retry in {wait:.1f}s"),
                    headers=errors.retry_after(wait),
                )
            timeout = self._timeout(headers.get("x-request-timeout"), route.streaming)
            body = await self._body(request, any_type=route.raw_request) if route.body else b""
            try:
                if route.raw_request:
                    grpc_request = build_raw_request(
                        route,
                        found.path_values,
                        method=request.method,
                        url=_public_url(request),
                        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                        body=body,
                    )
                else:
                    grpc_request = build_request(
                        route, found.path_values, list(request.query_params.multi_items()), body
                    )
            except InvalidArgument as exc:
                raise _reject(exc) from None
            last_event_id = headers.get("last-event-id", "").strip()
            if route.streaming and last_event_id:
                set_if_empty(grpc_request, RESUME_FIELD, last_event_id)
            metadata = self._metadata(channel, authorization, request_id)
            if route.streaming:
                return await self._stream(
                    route, grpc_request, metadata, timeout, label, request.method, started
                )
            try:
                with call_budget(timeout):
                    reply = await self._unary(route)(grpc_request, metadata=metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
                return errors.from_rpc_error(exc)
            return Response(dumps(response_json(route, reply)), media_type="application/json")
        finally:
            span.end()

    def _channel(self, headers: Mapping[str, str], *, optional: bool = False) -> call_context.ChannelInfo:
        raw = headers.get(call_context.CHANNEL_KEY, "").strip()
        names = ", ".join(call_context.known_channel_names())
        if not raw and optional:
            return call_context.ChannelInfo()
        if not raw:
            raise _bad_header(
                "X-Omni-Channel",
                f"every request must say which channel it comes from; set X-Omni-Channel to one of: {names}",
                "CHANNEL_MISSING",
            )
        meta = {
            call_context.CHANNEL_KEY: raw,
            call_context.STORE_KEY: headers.get(call_context.STORE_KEY, "").strip(),
            call_context.DEVICE_KEY: headers.get(call_context.DEVICE_KEY, "").strip(),
        }
        try:
            return parse_channel(meta)
        except InvalidArgument as exc:
            raise _reject(exc) from None

    async def _authenticate(self, route: Route, request: Request) -> tuple[str, str]:
        """(Authorization header to pass on, rate-limit key). Public routes take the token as is."""
        header = request.headers.get("authorization", "")
        client_ip = request.client.host if request.client else "unknown"
        if route.public:
            return header, f"ip:{client_ip}"
        if not header:
            raise _reject(
                Unauthenticated(
                    "this route needs a bearer access token (Authorization: Bearer <token>)",
                    reason="TOKEN_MISSING",
                    domain="omni.gateway",
                )
            )
        try:
            token = bearer_token({"authorization": header})
            if token is None:
                raise Unauthenticated("the access token is empty", reason="TOKEN_MALFORMED")
            principal = await self.verifier.verify(token)
        except OmniError as exc:
            raise _reject(exc) from None
        except grpc.aio.AioRpcError as exc:  # identity's JWKS could not be fetched
            raise errors.GatewayReject(errors.from_rpc_error(exc)) from None
        return header, f"sub:{principal.subject}"

    def _timeout(self, raw: str | None, streaming: bool) -> float:
        if not raw:
            return self.config.stream_max_seconds if streaming else self.config.default_timeout_seconds
        found = _TIMEOUT.fullmatch(raw)
        if found is None:
            raise _bad_header(
                "X-Request-Timeout", "must be seconds (2.5 or 2.5s) or milliseconds (250ms)", "BAD_TIMEOUT"
            )
        seconds = float(found.group(1)) / (1000.0 if found.group(2) == "ms" else 1.0)
        if seconds <= 0:
            raise _bad_header("X-Request-Timeout", "must be positive", "BAD_TIMEOUT")
        limit = self.config.stream_max_seconds if streaming else self.config.max_timeout_seconds
        return min(seconds, limit)

    async def _body(self, request: Request, *, any_type: bool = False) -> bytes:
        limit = self.config.max_body_bytes
        too_large = _reject(
            InvalidArgument(
                [FieldViolation("body", f"must be at most {limit} bytes", "BODY_TOO_LARGE")],
                reason="BODY_TOO_LARGE",
                domain="omni.gateway",
            ),
            http=413,
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        json_type = not content_type or content_type == "application/json" or content_type.endswith("+json")
        if not any_type and not json_type:
            raise _reject(
                InvalidArgument(
                    [FieldViolation("Content-Type", "must be application/json", "UNSUPPORTED_MEDIA_TYPE")],
                    reason="UNSUPPORTED_MEDIA_TYPE",
                    domain="omni.gateway",
                ),
                http=415,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _metadata(
        channel: call_context.ChannelInfo, authorization: str, request_id: str
    ) -> list[tuple[str, str]]:
        metadata = [(call_context.REQUEST_ID_KEY, request_id)]
        if channel.channel:
            metadata.append((call_context.CHANNEL_KEY, call_context.channel_name(channel.channel)))
        if channel.store:
            metadata.append((call_context.STORE_KEY, channel.store))
        if channel.device:
            metadata.append((call_context.DEVICE_KEY, channel.device))
        if authorization:
            metadata.append(("authorization", authorization))
        metadata.extend(tracing.inject_headers().items())
        return metadata

    def _unary(self, route: Route) -> Any:
        call = self._calls.get(route.grpc_path)
        if call is None:
            call = self.channels[route.service].unary_unary(
                route.grpc_path,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            self._calls[route.grpc_path] = call
        return call

    def _server_stream(self, route: Route) -> Any:
        call = self._calls.get(route.grpc_path)
        if call is None:
            call = self.channels[route.service].unary_stream(
                route.grpc_path,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            self._calls[route.grpc_path] = call
        return call

    async def _stream(
        self,
        route: Route,
        grpc_request: message.Message,
        metadata: list[tuple[str, str]],
        timeout: float,
        label: str,
        method: str,
        started: float,
    ) -> Response:
        with call_budget(timeout):
            call = self._server_stream(route)(grpc_request, metadata=metadata, timeout=timeout)
        upstream = sse.Upstream(call, self.draining)
        try:
            first = await upstream.next(self.config.stream_first_wait_seconds)
        except TimeoutError:
            first = None
        if isinstance(first, grpc.aio.AioRpcError):
            await upstream.close()
            return errors.from_rpc_error(first)

        def render(msg: message.Message) -> bytes:
            return sse.frame(dumps(to_json(msg)).decode(), event_id=find_etag(msg))

        def render_error(exc: grpc.aio.AioRpcError) -> bytes:
            return sse.frame(dumps(errors.status_json(errors.rpc_error_status(exc))).decode(), event="error")

        body = sse.events(
            upstream,
            first=first,
            heartbeat_seconds=self.config.heartbeat_seconds,
            render=render,
            render_error=render_error,
            on_close=lambda: self._observe(label, method, 200, started),
        )
        return StreamingResponse(body, media_type="text/event-stream", headers=sse.SSE_HEADERS)

    def begin_drain(self) -> None:
        """Shutdown has begun: readiness fails and open SSE streams end so connections can close."""
        self.draining.set()


def _public_url(request: Request) -> str:
    """The URL as the client addressed it (what a provider signs): scheme and host as a proxy in
    front reported them, then the raw path and query, byte for byte."""
    headers = request.headers
    scheme = headers.get("x-forwarded-proto", "").split(",", 1)[0].strip() or request.url.scheme
    host = headers.get("x-forwarded-host", "").split(",", 1)[0].strip() or headers.get("host", "")
    raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{scheme}://{host}{raw_path.split('?', 1)[0]}" + (f"?{query}" if query else "")


class _RateLimited(OmniError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RATE_LIMITED"

    def __init__(self, message: str) -> None:
        super().__init__(message, domain="omni.gateway")


def create_app(
    contracts: Contracts,
    channels: Mapping[str, grpc.aio.Channel],
    settings: Settings,
    *,
    key_source: KeySource | None = None,
    config: GatewayConfig | None = None,
) -> Starlette:
    """The gateway app over ``channels`` (service full name → pooled channel, one per backend).

    Only the services given a channel are exposed. Without ``key_source`` tokens are verified
    with identity's JWKS over identity's channel.
    """
    tracing.configure_tracing("gateway", settings.version)
    gateway = Gateway(contracts, channels, settings, key_source=key_source, config=config)
    app = Starlette(
        routes=[
            StarletteRoute("/healthz", gateway.healthz, methods=["GET"]),
            StarletteRoute("/readyz", gateway.readyz, methods=["GET"]),
            StarletteRoute("/openapi.json", gateway.openapi_json, methods=["GET"]),
            *(Docs().routes() if gateway.config.docs else []),
            StarletteRoute("/{path:path}", gateway.handle, methods=sorted(_METHODS)),
        ]
    )
    app.state.gateway = gateway
    return app
