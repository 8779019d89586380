"""The runtime's probe service on a real socket (no database), for the tests of Omni's clients:
``omni call`` and the ``omni_client`` library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from omni.probe.v1 import probe_pb2_grpc
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.server import Runtime, ServiceDefinition
from omni_runtime.testing.probe import SERVICE_NAME, ProbeServicer
from omni_runtime.testing.services import running_service, test_settings


@dataclass
class Probe:
    target: str
    servicer: ProbeServicer


@pytest.fixture(scope="module")
async def probe(key_source: StaticKeySource) -> AsyncIterator[Probe]:
    servicer = ProbeServicer()

    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        probe_pb2_grpc.add_ProbeServiceServicer_to_server(servicer, server)

    definition = ServiceDefinition(
        name="probe", grpc_services=[SERVICE_NAME], register=register, uses_database=False, uses_events=False
    )
    settings = test_settings("probe", database_url="", nats_url="")
    async with running_service(definition, settings, key_source=key_source) as svc:
        yield Probe(svc.target, servicer)
