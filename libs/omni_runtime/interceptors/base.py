"""The one mechanism every server interceptor uses: stages bound once per method, run per call.

A stage sees a call twice: ``enter`` before the handler, ``exit`` when the call ends (with the
exception that ended it, if any). grpc.aio runs every call in an asyncio task of its own, so what
a stage puts in context variables (principal, channel, deadline, the current span) lives exactly
as long as the call: stages set them and never reset them. (Resetting would fail anyway where a
stream ends because the client left: the event loop then closes the abandoned response generator
from another task, in another context.) ``Chain`` runs every stage of a method in one coroutine around
the handler, outermost first in and last out, for the four RPC shapes (and for streaming
handlers written either as async generators or with ``context.write``). It is written once
here so no stage deals with grpc.aio's handler plumbing.

Why not one ``grpc.aio.ServerInterceptor`` per stage with an async context manager each: that is
what this replaced, and it cost more than the no-op call it wrapped (each stage re-entered
grpc's interceptor pipeline, built an async generator and a context manager object per call,
and looked up its metric children and rules again). Now a stage is *bound* to a method when
the method is registered (``bind``): labels, rules and attributes are resolved then, and the
bound stage is what runs per call. ``ChainedServer`` applies the chain where handlers are
registered, so the server itself has no interceptors and finds its handlers exactly as a bare
grpc.aio server does.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What every stage knows about a method before any call of it runs."""

    full_method: str
    service: str
    method: str
    rpc_type: str  # unary, server_stream, client_stream, bidi_stream

    @classmethod
    def of(cls, full_method: str, handler: grpc.RpcMethodHandler) -> CallInfo:
        service, _, method = full_method.lstrip("/").rpartition("/")
        if handler.request_streaming and handler.response_streaming:
            kind = "bidi_stream"
        elif handler.request_streaming:
            kind = "client_stream"
        elif handler.response_streaming:
            kind = "server_stream"
        else:
            kind = "unary"
        return cls(full_method=full_method, service=service, method=method, rpc_type=kind)

    @property
    def streams_responses(self) -> bool:
        return self.rpc_type in ("server_stream", "bidi_stream")


class Call:
    """One call as the stages see it; what several stages need is worked out once and kept."""

    __slots__ = ("_meta", "context", "info", "request")

    def __init__(self, info: CallInfo, context: grpc.aio.ServicerContext, request: Any | None) -> None:
        self.info = info
        self.context = context
        self.request = request  # None for client-streaming calls
        self._meta: dict[str, str] | None = None

    @property
    def meta(self) -> dict[str, str]:
        """Invocation metadata as a dict of text values (binary ``-bin`` keys are skipped)."""
        if self._meta is None:
            self._meta = metadata_dict(self.context)
        return self._meta


def metadata_dict(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """Invocation metadata as a dict of text values (binary ``-bin`` keys are skipped)."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


class Stage:
    """Base class of Omni's server stages (tracing, metrics, errors, deadlines, auth, …).

    A stage that needs per-method state overrides ``bind`` and returns an object with the
    same ``enter``/``exit`` methods (a ``Stage`` itself is the default). ``enter`` returns a
    state handed to ``exit``. ``exit`` gets the exception the call is ending with (None on
    success); it may raise to replace it (the error stage turns exceptions into a status this
    way), and otherwise the call ends as it would have.
    """

    def applies(self, info: CallInfo) -> bool:
        """Whether this stage wraps the method; health and reflection skip most stages."""
        return True

    def bind(self, info: CallInfo) -> Stage | None:
        """What runs for every call of one method (None: nothing), decided once per method."""
        return self if self.applies(info) else None

    async def enter(self, call: Call) -> Any:
        return None

    async def exit(self, call: Call, state: Any, error: BaseException | None) -> None:
        return None

    def on_message_sent(self, info: CallInfo) -> None:
        """Called for every streamed response message."""

    def on_message_received(self, info: CallInfo) -> None:
        """Called for every streamed request message."""


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


def _overrides(stage: Stage, name: str) -> bool:
    return getattr(type(stage), name) is not getattr(Stage, name)


class Chain:
    """The stages of a server, applied to each method's handler once, when it is registered."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        info = CallInfo.of(full_method, handler)
        bound = tuple(b for b in (s.bind(info) for s in self.stages) if b is not None)
        if not bound:
            return handler
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        sent = tuple(b for b in bound if _overrides(b, "on_message_sent"))
        received = tuple(b for b in bound if _overrides(b, "on_message_received"))

        async def enter(call: Call, states: list[Any]) -> None:
            """Enter the stages outermost first; ``states`` holds those that entered."""
            for stage in bound:
                states.append(await stage.enter(call))

        async def leave(call: Call, states: list[Any], error: BaseException | None) -> BaseException | None:
            """Run the exits of the stages that entered, innermost first; the final error."""
            for index in range(len(states) - 1, -1, -1):
                try:
                    await bound[index].exit(call, states[index], error)
                except BaseException as replaced:  # a stage may replace the error
                    error = replaced
            return error

        async def run(call: Call, proceed: Callable[[], Awaitable[Any]]) -> Any:
            states: list[Any] = []
            try:
                await enter(call, states)
                result = await proceed()
            except BaseException as exc:
                final = await leave(call, states, exc)
                if final is exc or final is None:
                    raise
                raise final from exc
            final = await leave(call, states, None)
            if final is not None:
                raise final
            return result

        def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async def gen() -> AsyncIterator[Any]:
                async for item in requests:
                    for stage in received:
                        stage.on_message_received(info)
                    yield item

            return gen() if received else requests

        streamed = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            """Both response-streaming shapes, as one async generator function (grpc.aio tells
            handler kinds apart by that). Its exits run in it, so in the call's own context, also
            when the client leaves mid-stream (GeneratorExit at ``yield``)."""
            if handler.request_streaming:
                call, argument = Call(info, context, None), counted(request)
            else:
                call, argument = Call(info, context, request), request
            states: list[Any] = []
            try:
                await enter(call, states)
                async for item in _iterate(streamed(argument, context)):
                    for stage in sent:
                        stage.on_message_sent(info)
                    yield item
            except BaseException as exc:
                final = await leave(call, states, exc)
                if final is exc or final is None:
                    raise
                raise final from exc
            final = await leave(call, states, None)
            if final is not None:
                raise final

        if info.rpc_type == "unary":
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await run(Call(info, context, request), lambda: unary(request, context))

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if info.rpc_type == "client_stream":
            client = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                return await run(Call(info, context, None), lambda: client(counted(requests), context))

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        if info.rpc_type == "server_stream":
            return grpc.unary_stream_rpc_method_handler(streaming, **kw)
        return grpc.stream_stream_rpc_method_handler(streaming, **kw)


class _ChainedHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out of the chain (each built once)."""

    def __init__(self, inner: grpc.GenericRpcHandler, chain: Chain) -> None:
        self._inner = inner
        self._chain = chain
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        found = self._wrapped.get(method)
        if found is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None  # unknown method: not kept, so a flood of bad names cannot grow memory
            found = self._wrapped[method] = self._chain.wrap(method, handler)
        return found


class ChainedServer(grpc.aio.Server):
    """A grpc.aio server whose every registered handler runs through the chain.

    Servicers register as usual (``add_XServicer_to_server(servicer, server)``); the handlers
    are wrapped as they are registered, so no interceptor runs per call.
    """

    def __init__(self, server: grpc.aio.Server, chain: Chain) -> None:
        self._server = server
        self._chain = chain

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_ChainedHandler(h, self._chain) for h in generic_rpc_handlers])

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {
            name: self._chain.wrap(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        }
        self._server.add_registered_method_handlers(service_name, wrapped)  # type: ignore[attr-defined]

    def add_insecure_port(self, address: str) -> int:
        port: int = self._server.add_insecure_port(address)
        return port

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        port: int = self._server.add_secure_port(address, server_credentials)
        return port

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        terminated: bool = await self._server.wait_for_termination(timeout)
        return terminated


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
