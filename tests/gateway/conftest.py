"""Fixtures for the gateway's tests: the real probe service behind the real gateway app.

The probe is the runtime's test-only service (full interceptor chain, real sockets); its
contract carries google.api.http annotations so the gateway can be driven over HTTP. The one
change here is a probe whose Ticks stream pauses between messages, because SSE heartbeats and
disconnects can only be observed on a stream that stays open.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime import errors
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.clients import make_channel
from omni_runtime.config import Settings
from omni_runtime.server import Runtime, ServiceDefinition
from omni_runtime.testing.probe import SERVICE_NAME, ProbeServicer
from omni_runtime.testing.services import RunningService, running_service, test_settings
from services.gateway.app import GatewayConfig, create_app
from services.gateway.routes import Contracts

TICK_PAUSE_SECONDS = 0.2


class SlowTicksProbe(ProbeServicer):
    """The probe, with a pause between ticks and a record of how each stream ended."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_endings: list[str] = []

    async def Ticks(self, request: probe_pb2.TicksRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.count < 0:
            raise errors.InvalidArgument([errors.FieldViolation("count", "must not be negative")])
        ending = "completed"
        try:
            for i in range(request.count):
                if request.fail_after and i == request.fail_after:
                    ending = "failed"
                    raise errors.FailedPrecondition("ticks stopped on purpose")
                yield probe_pb2.Tick(index=i)
                await asyncio.sleep(TICK_PAUSE_SECONDS)
        except asyncio.CancelledError:
            ending = "cancelled"
            raise
        finally:
            self.stream_endings.append(ending)


@dataclasses.dataclass
class Probe:
    service: RunningService
    servicer: SlowTicksProbe
    channel: grpc.aio.Channel


@pytest.fixture(scope="session")
def contracts() -> Contracts:
    return Contracts.load()


@pytest.fixture(scope="module")
async def probe(key_source: StaticKeySource) -> AsyncIterator[Probe]:
    servicer = SlowTicksProbe()

    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        probe_pb2_grpc.add_ProbeServiceServicer_to_server(servicer, server)

    definition = ServiceDefinition(
        name="probe",
        grpc_services=[SERVICE_NAME],
        register=register,
        uses_database=False,
        uses_events=False,
    )
    settings = test_settings("probe", database_url="", nats_url="")
    async with running_service(definition, settings, key_source=key_source) as svc:
        channel = make_channel(svc.target)  # pooled: one for every request of the module
        try:
            yield Probe(svc, servicer, channel)
        finally:
            await channel.close()


def gateway_settings(**overrides: Any) -> Settings:
    base = test_settings("gateway", database_url="", nats_url="")
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def make_app(contracts: Contracts, probe: Probe, key_source: StaticKeySource) -> Callable[..., Starlette]:
    """``make_app(rate_burst=2, ...)`` → the gateway over the probe with those config values."""

    def make(**config: Any) -> Starlette:
        return create_app(
            contracts,
            {SERVICE_NAME: probe.channel},
            gateway_settings(),
            key_source=key_source,
            config=GatewayConfig(**config),
        )

    return make


@pytest.fixture
async def client(make_app: Callable[..., Starlette]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app()), base_url="http://gateway"
    ) as http:
        yield http


WEB = {"X-Omni-Channel": "web"}


def auth(token: str, **headers: str) -> dict[str, str]:
    return {**WEB, "Authorization": f"Bearer {token}", **headers}
