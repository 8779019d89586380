"""Readiness, default deadlines and graceful drain of the server builder."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.localinfra import EmbeddedNats, free_port
from omni_runtime.server import ServiceHost
from omni_runtime.testing.plugin import Infra
from omni_runtime.testing.probe import SERVICE_NAME, probe_definition
from omni_runtime.testing.services import running_service

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return reply.status


async def wait_status(channel: grpc.aio.Channel, wanted: int, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while await health_status(channel) != wanted:
            await asyncio.sleep(0.1)


async def test_not_serving_until_nats_is_reachable_then_serving(
    omni_infra: Infra,
    service_settings: Callable[..., Settings],
    key_source: StaticKeySource,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = free_port()
    settings = service_settings("probe", nats_url=f"nats://127.0.0.1:{port}")
    async with running_service(probe_definition(), settings, key_source=key_source, wait_ready=False) as svc:
        assert await health_status(svc.channel) == NOT_SERVING
        assert await health_status(svc.channel, SERVICE_NAME) == NOT_SERVING
        # Liveness does not follow the backends: an outage must not get pods restarted.
        assert await health_status(svc.channel, "liveness") == SERVING
        nats = EmbeddedNats(tmp_path_factory.mktemp("late-nats") / "js", port)
        nats.start()
        try:
            await wait_status(svc.channel, SERVING)
            assert await health_status(svc.channel, SERVICE_NAME) == SERVING
            nats.kill()
            await wait_status(svc.channel, NOT_SERVING)
        finally:
            nats.stop()


async def test_not_serving_while_the_database_is_unreachable(
    omni_infra: Infra, service_settings: Callable[..., Settings], key_source: StaticKeySource
) -> None:
    settings = service_settings(
        "probe", database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    )
    async with running_service(
        probe_definition(), settings, key_source=key_source, wait_ready=False, migrate=False
    ) as svc:
        await asyncio.sleep(0.5)
        assert await health_status(svc.channel) == NOT_SERVING


async def test_default_deadline_cuts_a_call_that_set_none(
    service_settings: Callable[..., Settings], key_source: StaticKeySource
) -> None:
    settings = dataclasses.replace(service_settings("probe"), default_deadline_seconds=0.3)
    async with running_service(probe_definition(), settings, key_source=key_source) as svc:
        stub = probe_pb2_grpc.ProbeServiceStub(svc.channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Sleep(probe_pb2.SleepRequest(seconds=3))
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await stub.Sleep(probe_pb2.SleepRequest(seconds=0.01))).completed


async def test_graceful_stop_drains_in_flight_calls_and_refuses_new_ones(
    service_settings: Callable[..., Settings], key_source: StaticKeySource
) -> None:
    settings = service_settings("probe")
    host = ServiceHost(
        probe_definition(), settings, key_source=key_source, bind_host="127.0.0.1", configure_process=False
    )
    from omni_runtime.db.migrate import upgrade_async

    await upgrade_async("probe", settings.database_url)
    await host.start()
    await host.wait_ready()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{host.port}")
    stub = probe_pb2_grpc.ProbeServiceStub(channel)
    try:

        async def slow_call() -> probe_pb2.SleepResponse:
            return await stub.Sleep(probe_pb2.SleepRequest(seconds=1.0), timeout=10)

        in_flight = asyncio.create_task(slow_call())
        await asyncio.sleep(0.2)
        stopping = asyncio.create_task(host.stop(grace=5))
        await asyncio.sleep(0.1)
        # Health turns NOT_SERVING before the drain, so load balancers stop routing here.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Ping(probe_pb2.PingRequest(), timeout=2)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        reply = await in_flight
        assert reply.completed
        await stopping
    finally:
        await channel.close()
