"""The probe service: a tiny real service that exercises every part of the runtime.

Used by the runtime's tests and by the benchmark's "no-op RPC through the full runtime".
It lives in the runtime (not in tests/) because the benchmark harness needs it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime import errors
from omni_runtime.context import channel_name, current_channel, current_principal, current_request_id
from omni_runtime.interceptors.deadlines import remaining
from omni_runtime.server import Runtime, ServiceDefinition
from omni_runtime.validation import Checker

ECHO_PATTERN = "customers/{customer}/echoes/{echo}"


class ProbeServicer(probe_pb2_grpc.ProbeServiceServicer):
    def __init__(self) -> None:
        self.flaky_calls: dict[str, int] = {}

    async def Ping(
        self, request: probe_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> probe_pb2.PingResponse:
        channel = current_channel.get().channel
        return probe_pb2.PingResponse(
            subject=current_principal.get().subject,
            channel=channel_name(channel) if channel else "",
            remaining_seconds=remaining(default=-1.0),
        )

    async def Echo(
        self, request: probe_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> probe_pb2.EchoResponse:
        check = Checker()
        check.name("name", request.name, ECHO_PATTERN)
        if check.require("text", request.text):
            check.length("text", request.text, max_len=100, min_len=1)
        check.raise_if_invalid()
        return probe_pb2.EchoResponse(name=request.name, text=request.text)

    async def Fail(
        self, request: probe_pb2.FailRequest, context: grpc.aio.ServicerContext
    ) -> probe_pb2.FailResponse:
        kind = request.kind
        if kind == "invalid":
            raise errors.InvalidArgument([errors.FieldViolation("kind", "is invalid on purpose")])
        if kind == "not_found":
            raise errors.NotFound("customers/nobody")
        if kind == "aborted":
            raise errors.Aborted("stale etag", current_etag='W/"7"')
        if kind == "precondition":
            raise errors.FailedPrecondition(
                "not enough stock", violations=[("STOCK", "items/sku-1", "only 2 available")]
            )
        if kind == "unavailable":
            raise ConnectionRefusedError("database down")
        raise RuntimeError("secret internal detail that must not leak")

    async def Sleep(
        self, request: probe_pb2.SleepRequest, context: grpc.aio.ServicerContext
    ) -> probe_pb2.SleepResponse:
        await asyncio.sleep(request.seconds)
        return probe_pb2.SleepResponse(completed=True)

    async def Ticks(
        self, request: probe_pb2.TicksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[probe_pb2.Tick]:
        for i in range(request.count):
            if request.fail_after and i == request.fail_after:
                raise errors.FailedPrecondition("ticks stopped on purpose")
            yield probe_pb2.Tick(index=i)

    async def Flaky(
        self, request: probe_pb2.FlakyRequest, context: grpc.aio.ServicerContext
    ) -> probe_pb2.FlakyResponse:
        calls = self.flaky_calls[request.request_id] = self.flaky_calls.get(request.request_id, 0) + 1
        if not request.request_id or calls <= request.fail_times:
            raise errors.Unavailable(f"flaky on purpose (call {calls})")
        return probe_pb2.FlakyResponse(
            request_id=request.request_id, calls=calls, metadata_request_id=current_request_id.get()
        )

    async def Undeclared(
        self, request: probe_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> probe_pb2.PingResponse:
        return probe_pb2.PingResponse()


SERVICE_NAME = probe_pb2.DESCRIPTOR.services_by_name["ProbeService"].full_name


def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    probe_pb2_grpc.add_ProbeServiceServicer_to_server(ProbeServicer(), server)


def probe_definition(*, uses_database: bool = True, uses_events: bool = True) -> ServiceDefinition:
    return ServiceDefinition(
        name="probe",
        grpc_services=[SERVICE_NAME],
        register=_register,
        uses_database=uses_database,
        uses_events=uses_events,
    )
