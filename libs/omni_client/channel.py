"""``connect()``: a gRPC channel to an Omni service that does what every caller otherwise rewrites.

On every call it adds the channel context (``x-omni-channel``/``-store``/``-device``), a bearer
token from a token source, an ``x-request-id``, and a ``request_id`` when the request has an
empty one. Unary calls without a timeout get ``default_timeout``, and that deadline bounds every
attempt of the call together. A unary call answered UNAVAILABLE is retried with capped,
jittered exponential backoff when repeating it is safe: the request carries a ``request_id``
(the service answers a repeat with the first result) or the method only reads (Get, List,
Check…). An UNAUTHENTICATED answer to a token from a refreshable source invalidates the token
and retries once with a fresh one. Server streams get the metadata and token; they are not
retried (resuming a stream is the method's business, e.g. WatchCart's ``since_etag``) and get no
default deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from omni_client.metadata import AUTHORIZATION_KEY, REQUEST_ID_KEY, CallContext, bearer
from omni_client.request_ids import FIELD, has_request_id_field, new_request_id, with_request_id
from omni_client.tokens import TokenSource

log = logging.getLogger("omni_client")

DEFAULT_TIMEOUT_SECONDS = 10.0
# AIP method verbs that never change anything: safe to repeat without a request id.
READ_VERBS = ("Get", "List", "BatchGet", "Check", "Search", "Resolve", "Lookup")
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.lb_policy_name", "round_robin"),
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a unary call answered with one of ``retryable`` codes (default UNAVAILABLE)."""

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    retryable: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, initial·multiplier^(attempt-1))]."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return rng.uniform(0, cap)


NO_RETRIES = RetryPolicy(max_attempts=1)


def safe_to_repeat(method: str, request: Any) -> bool:
    """Whether a second attempt cannot do the work twice: idempotent by request id, or a read."""
    name = method.rsplit("/", 1)[-1]
    if name.startswith(READ_VERBS):
        return True
    return has_request_id_field(request) and bool(getattr(request, FIELD))


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class _Interceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(
        self,
        context: CallContext,
        token: TokenSource | None,
        default_timeout: float | None,
        retry: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self.context = context
        self.token = token
        self.default_timeout = default_timeout
        self.retry = retry
        self.rng = rng

    async def _metadata(
        self, details: grpc.aio.ClientCallDetails, request_id: str
    ) -> tuple[list[tuple[str, str]], bool]:
        """(metadata, whether the token came from our source). The caller's own keys win."""
        given = [(str(k), v) for k, v in (details.metadata or ())]
        keys = {k.lower() for k, _ in given}
        md = [*given, *((k, v) for k, v in self.context.metadata() if k not in keys)]
        if REQUEST_ID_KEY not in keys:
            md.append((REQUEST_ID_KEY, request_id))
        sourced = False
        if self.token is not None and AUTHORIZATION_KEY not in keys:
            token = await self.token()
            if token:
                md.append(bearer(token))
                sourced = True
        return md, sourced

    @staticmethod
    def _details(
        details: grpc.aio.ClientCallDetails, metadata: Sequence[tuple[str, str]], timeout: float | None
    ) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        request = with_request_id(request)
        request_id = getattr(request, FIELD, "") if has_request_id_field(request) else ""
        request_id = request_id or new_request_id()
        method = _method_name(client_call_details)
        timeout = (
            client_call_details.timeout if client_call_details.timeout is not None else self.default_timeout
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        repeatable = safe_to_repeat(method, request)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            metadata, sourced = await self._metadata(client_call_details, request_id)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            call = await continuation(self._details(client_call_details, metadata, left), request)
            code = await call.code()
            if code == grpc.StatusCode.OK:
                return call
            if code == grpc.StatusCode.UNAUTHENTICATED and sourced and not refreshed:
                invalidate = getattr(self.token, "invalidate", None)
                if callable(invalidate):
                    refreshed = True
                    invalidate()
                    log.info("%s: token refused; retrying once with a fresh token", method)
                    continue
            if code not in self.retry.retryable or not repeatable or attempt >= self.retry.max_attempts:
                return call
            pause = self.retry.backoff(attempt, self.rng)
            if deadline is not None and time.monotonic() + pause >= deadline:
                return call
            log.info("%s answered %s; attempt %d in %.3fs", method, code.name, attempt + 1, pause)
            await asyncio.sleep(pause)

    async def _stream_details(self, details: Any) -> Any:
        metadata, _ = await self._metadata(details, new_request_id())
        return self._details(details, metadata, details.timeout)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._stream_details(client_call_details), request)

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(await self._stream_details(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(await self._stream_details(client_call_details), request_iterator)


def connect(
    target: str,
    *,
    context: CallContext | None = None,
    token: TokenSource | None = None,
    default_timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    retry: RetryPolicy | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    seed: int | None = None,
) -> grpc.aio.Channel:
    """A channel to ``target`` (``host:port``); pass it to any generated stub.

    ``credentials`` (``grpc.ssl_channel_credentials()``) makes it TLS; without them the channel
    is plaintext (local platform, or inside a service mesh that adds TLS). Create one channel per
    target for the process's life and share it: gRPC multiplexes every call over it.
    """
    interceptor = _Interceptor(
        context or CallContext(), token, default_timeout, retry or RetryPolicy(), random.Random(seed)
    )
    merged = (*CHANNEL_OPTIONS, *options)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=merged, interceptors=[interceptor])
    return grpc.aio.insecure_channel(target, options=merged, interceptors=[interceptor])
