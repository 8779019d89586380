from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from omni.probe.v1 import probe_pb2_grpc
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.testing.probe import probe_definition
from omni_runtime.testing.services import RunningService, running_service


@pytest.fixture(scope="module")
async def probe(
    service_settings: Callable[..., Settings], key_source: StaticKeySource
) -> AsyncIterator[RunningService]:
    async with running_service(probe_definition(), service_settings("probe"), key_source=key_source) as svc:
        yield svc


@pytest.fixture
def stub(probe: RunningService) -> probe_pb2_grpc.ProbeServiceStub:
    return probe_pb2_grpc.ProbeServiceStub(probe.channel)
