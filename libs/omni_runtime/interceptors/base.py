"""The one mechanism every server interceptor uses: an async ``scope`` around the whole call.

grpc.aio hands interceptors a method handler; wrapping its behaviour correctly for the four
RPC shapes (and for streaming handlers written either as async generators or with
``context.write``) is fiddly, so it is done once here. A stage only writes ``scope``: code
before ``yield`` runs before the handler, code after it runs when the call ends, and
exceptions raised by the handler (or inner stages) pass through it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What every stage knows about a call before it runs."""

    full_method: str
    service: str
    method: str
    rpc_type: str  # unary, server_stream, client_stream, bidi_stream

    @classmethod
    def from_details(cls, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler) -> CallInfo:
        full = details.method  # type: ignore[attr-defined]
        service, _, method = full.lstrip("/").rpartition("/")
        if handler.request_streaming and handler.response_streaming:
            kind = "bidi_stream"
        elif handler.request_streaming:
            kind = "client_stream"
        elif handler.response_streaming:
            kind = "server_stream"
        else:
            kind = "unary"
        return cls(full_method=full, service=service, method=method, rpc_type=kind)


def metadata_dict(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """Invocation metadata as a dict of text values (binary ``-bin`` keys are skipped)."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


async def _iterate(result: Any) -> AsyncIterator[Any]:
    """Yield a streaming handler's responses whether it is an async generator or uses write()."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    else:  # a plain iterator
        for item in result:
            yield item


class Stage(grpc.aio.ServerInterceptor):
    """Base class of Omni's server interceptors.

    The wrapped handler of a method is built once and cached: a method's handler chain never
    changes, so later calls skip the inner interceptors' ``intercept_service`` and the handler
    construction entirely (a large share of per-call overhead in grpc.aio otherwise).
    """

    _handlers: dict[str, grpc.RpcMethodHandler | None]

    def applies(self, info: CallInfo) -> bool:
        """Whether this stage wraps the call; health and reflection skip most stages."""
        return True

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, context: grpc.aio.ServicerContext, request: Any | None
    ) -> AsyncIterator[None]:
        yield

    def on_message_sent(self, info: CallInfo) -> None:
        """Called for every streamed response message."""

    def on_message_received(self, info: CallInfo) -> None:
        """Called for every streamed request message."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method  # type: ignore[attr-defined]
        cache = self.__dict__.setdefault("_handlers", {})
        if method in cache:
            return cache[method]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: not cached, so a flood of bad names cannot grow memory
        info = CallInfo.from_details(handler_call_details, handler)
        wrapped = self._wrap(handler, info) if self.applies(info) else handler
        cache[method] = wrapped
        return wrapped

    def _counted_requests(self, info: CallInfo, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def gen() -> AsyncIterator[Any]:
            async for item in requests:
                self.on_message_received(info)
                yield item

        return gen()

    def _wrap(self, handler: grpc.RpcMethodHandler, info: CallInfo) -> grpc.RpcMethodHandler:
        scope = self.scope
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if info.rpc_type == "unary":
            behavior = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with scope(info, context, request):
                    return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if info.rpc_type == "server_stream":
            stream_behavior = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with scope(info, context, request):
                    async for item in _iterate(stream_behavior(request, context)):
                        self.on_message_sent(info)
                        yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        if info.rpc_type == "client_stream":
            client_behavior = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                async with scope(info, context, None):
                    return await client_behavior(self._counted_requests(info, requests), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        bidi_behavior = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with scope(info, context, None):
                async for item in _iterate(bidi_behavior(self._counted_requests(info, requests), context)):
                    self.on_message_sent(info)
                    yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)


INFRA_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def is_infrastructure(info: CallInfo) -> bool:
    """Health checks and reflection: observed in metrics, exempt from auth and channel rules."""
    return info.service in INFRA_SERVICES
