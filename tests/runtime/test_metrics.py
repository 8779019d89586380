"""The runtime's Prometheus metrics: label spelling, series that exist before traffic, and the
process-level gauges (database pool, event loop, NATS) a service exports by itself."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime import metrics
from omni_runtime.clients import make_channel
from omni_runtime.db.engine import Database
from omni_runtime.testing.services import RunningService

SVC = "omni.probe.v1.ProbeService"
GO_GRPC_CODES = {
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
}


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def handled(method: str, code: str, name: str = "grpc_server_handled_total") -> float:
    return sample(name, grpc_service=SVC, grpc_method=method, grpc_type="unary", grpc_code=code) or 0.0


def test_codes_are_spelled_as_go_grpc_prometheus_does() -> None:
    assert set(metrics.GRPC_CODE_LABELS) == set(grpc.StatusCode)
    assert set(metrics.GRPC_CODE_LABELS.values()) == GO_GRPC_CODES
    assert metrics.code_label(grpc.StatusCode.CANCELLED) == "Canceled"


async def test_every_method_and_code_exists_at_zero_before_its_first_call(probe: RunningService) -> None:
    # No probe method ever ends in DataLoss, yet its series exists, as does every other code's.
    assert handled("Sleep", "DataLoss") == 0.0
    for code in GO_GRPC_CODES:
        assert sample("grpc_server_handled_total", grpc_service=SVC, grpc_method="Undeclared",
                      grpc_type="unary", grpc_code=code) is not None  # fmt: skip
    assert sample("grpc_server_handling_seconds_count", grpc_service=SVC, grpc_method="Undeclared",
                  grpc_type="unary") is not None  # fmt: skip
    assert sample("grpc_server_started_total", grpc_service=SVC, grpc_method="Ticks",
                  grpc_type="server_stream") is not None  # fmt: skip
    health = "grpc.health.v1.Health"
    assert sample("grpc_server_handled_total", grpc_service=health, grpc_method="Watch",
                  grpc_type="server_stream", grpc_code="Unavailable") is not None  # fmt: skip


async def test_server_and_client_count_codes_in_go_spelling(probe: RunningService) -> None:
    channel = make_channel(probe.target)  # the runtime's client channel: grpc_client_* metrics
    try:
        stub = probe_pb2_grpc.ProbeServiceStub(channel)
        before = {k: handled("Fail", k) for k in ("InvalidArgument", "NotFound", "Internal", "Unavailable")}
        client_before = handled("Fail", "NotFound", "grpc_client_handled_total")
        for kind in ("invalid", "not_found", "unexpected", "unavailable"):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Fail(probe_pb2.FailRequest(kind=kind))
    finally:
        await channel.close()
    assert {k: handled("Fail", k) - v for k, v in before.items()} == dict.fromkeys(before, 1.0)
    assert handled("Fail", "NotFound", "grpc_client_handled_total") == client_before + 1
    assert handled("Fail", "NOT_FOUND") == 0.0  # Python's enum spelling is never exported


async def test_outbox_consumer_and_nats_series_exist_for_the_service(probe: RunningService) -> None:
    assert sample("omni_outbox_published_total", service="probe") is not None
    assert sample("omni_outbox_publish_errors_total", service="probe") is not None
    assert sample("omni_nats_connected", service="probe") == 1.0
    assert sample("omni_nats_reconnects_total", service="probe") is not None


async def test_event_loop_lag_is_measured_and_shows_a_blocked_loop(probe: RunningService) -> None:
    def count() -> float:
        return sample("omni_event_loop_lag_seconds_count", service="probe") or 0.0

    def slow() -> float:
        return count() - (sample("omni_event_loop_lag_seconds_bucket", service="probe", le="0.1") or 0.0)

    before, slow_before = count(), slow()
    # Block the loop on purpose for longer than the watcher's interval: its timer fires late.
    time.sleep(0.7)  # noqa: ASYNC251
    async with asyncio.timeout(5):
        while count() <= before:
            await asyncio.sleep(0.05)
    assert slow() >= slow_before + 1


async def test_the_pool_reports_checked_out_waiting_and_wait_time(database_url: str) -> None:
    db = Database(database_url, service="pooltest", pool_size=1, max_overflow=0)
    try:
        assert sample("omni_db_pool_max_connections", service="pooltest") == 1.0
        waits = sample("omni_db_pool_wait_seconds_count", service="pooltest") or 0.0
        release = asyncio.Event()
        holding = asyncio.Event()

        async def hold() -> None:
            async with db.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()
        assert sample("omni_db_pool_checked_out_connections", service="pooltest") == 1.0
        waiter = asyncio.create_task(db.ping())  # must wait: the only connection is lent out
        async with asyncio.timeout(5):
            while sample("omni_db_pool_waiting_requests", service="pooltest") != 1.0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        release.set()
        await holder
        assert await waiter
        assert sample("omni_db_pool_waiting_requests", service="pooltest") == 0.0
        assert sample("omni_db_pool_checked_out_connections", service="pooltest") == 0.0
        assert sample("omni_db_pool_idle_connections", service="pooltest") == 1.0
        assert waits == 0.0
        assert sample("omni_db_pool_wait_seconds_count", service="pooltest") == 2.0
        # The second caller waited for the first one's connection (held for >= 50 ms).
        assert (sample("omni_db_pool_wait_seconds_bucket", service="pooltest", le="0.025") or 0.0) <= 1.0
    finally:
        await db.close()
