"""Outgoing gRPC calls: pooled channels with trace, channel and deadline propagation.

One channel per peer target for the life of the process (gRPC multiplexes calls over it).
Every call carries the W3C trace context, the caller's channel headers and request id, and a
timeout no longer than what is left of the incoming call's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from omni_runtime import metrics, tracing
from omni_runtime.context import (
    CHANNEL_KEY,
    DEVICE_KEY,
    REQUEST_ID_KEY,
    STORE_KEY,
    channel_name,
    current_channel,
    current_request_id,
)
from omni_runtime.interceptors.deadlines import remaining

TokenProvider = Callable[[], Awaitable[str | None]]

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    ("grpc.lb_policy_name", "round_robin"),
)


def _outgoing_metadata(existing: Any) -> list[tuple[str, str]]:
    md = list(existing or ())
    keys = {k for k, _ in md}
    channel = current_channel.get()
    if CHANNEL_KEY not in keys and channel.channel:
        md.append((CHANNEL_KEY, channel_name(channel.channel)))
    if STORE_KEY not in keys and channel.store:
        md.append((STORE_KEY, channel.store))
    if DEVICE_KEY not in keys and channel.device:
        md.append((DEVICE_KEY, channel.device))
    request_id = current_request_id.get()
    if REQUEST_ID_KEY not in keys and request_id:
        md.append((REQUEST_ID_KEY, request_id))
    md.extend((k, v) for k, v in tracing.inject_headers().items() if k not in keys)
    return md


class _PropagatingInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds metadata, a bounded timeout, a bearer token and client metrics to every call."""

    def __init__(self, token_provider: TokenProvider | None) -> None:
        self.token_provider = token_provider
        self._children: dict[str, _ClientMetrics] = {}

    def _metrics(self, details: grpc.aio.ClientCallDetails) -> _ClientMetrics:
        """The unary method's metric children, resolved on its first call."""
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        found = self._children.get(method)
        if found is None:
            found = self._children[method] = _ClientMetrics(self._labels(details, "unary"))
        return found

    async def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        md = _outgoing_metadata(details.metadata)
        if self.token_provider is not None and not any(k == "authorization" for k, _ in md):
            token = await self.token_provider()
            if token:
                md.append(("authorization", f"Bearer {token}"))
        budget = remaining()
        timeout = budget if details.timeout is None else min(details.timeout, budget)
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=grpc.aio.Metadata(*md),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    @staticmethod
    def _labels(details: grpc.aio.ClientCallDetails, kind: str) -> tuple[str, str, str]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, _, name = method.lstrip("/").rpartition("/")
        return service, name, kind

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        details = await self._details(client_call_details)
        children = self._metrics(details)
        children.started.inc()
        start = time.perf_counter()
        call = await continuation(details, request)
        code = grpc.StatusCode.UNKNOWN
        try:
            code = await call.code()
        finally:
            children.handled(code).inc()
            children.seconds.observe(time.perf_counter() - start)
        return call

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        details = await self._details(client_call_details)
        metrics.CLIENT_STARTED.labels(*self._labels(details, "server_stream")).inc()
        return await continuation(details, request)


class _ClientMetrics:
    """``grpc_client_*`` children of one method (label lookups once, not per call)."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = metrics.CLIENT_STARTED.labels(*labels)
        self.seconds = metrics.CLIENT_HANDLING_SECONDS.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        found = self._handled.get(code)
        if found is None:
            found = self._handled[code] = metrics.CLIENT_HANDLED.labels(
                *self.labels, metrics.code_label(code)
            )
        return found


class PeerChannels:
    """The process's channels to other services, created on first use and closed on shutdown."""

    def __init__(self, targets: dict[str, str] | Any, token_provider: TokenProvider | None = None) -> None:
        self._targets = dict(targets)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.token_provider = token_provider

    def channel(self, peer: str) -> grpc.aio.Channel:
        found = self._channels.get(peer)
        if found is None:
            target = self._targets.get(peer) or peer
            found = make_channel(target, self.token_provider)
            self._channels[peer] = found
        return found

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()


def make_channel(target: str, token_provider: TokenProvider | None = None) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target, options=CHANNEL_OPTIONS, interceptors=[_PropagatingInterceptor(token_provider)]
    )
