"""omni_client against a real service on a real socket: metadata, tokens, request ids, retries.

The probe's ``Flaky`` answers UNAVAILABLE to the first ``fail_times`` calls of a request id and
reports how many calls it saw, so the tests observe retries from the server's side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

import omni_client
from omni.probe.v1 import probe_pb2 as pb
from omni.probe.v1 import probe_pb2_grpc
from tests.client.conftest import Probe

FAST = omni_client.RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.005)
Stub = probe_pb2_grpc.ProbeServiceStub


@pytest.fixture
async def connect(probe: Probe) -> AsyncIterator[Callable[..., Stub]]:
    channels: list[grpc.aio.Channel] = []

    def make(**kw: object) -> Stub:
        kw.setdefault("retry", FAST)
        channel = omni_client.connect(probe.target, **kw)  # type: ignore[arg-type]
        channels.append(channel)
        return Stub(channel)

    yield make
    for channel in channels:
        await channel.close()


async def test_every_call_carries_the_channel_context_the_token_and_a_default_deadline(
    connect, make_token
) -> None:
    stub = connect(
        context=omni_client.CallContext("store_pos", store="locations/store-1", device="till-1"),
        token=omni_client.StaticToken(make_token("staffMembers/s1", roles=["store_associate"])),
        default_timeout=3.0,
    )
    ping = await stub.Ping(pb.PingRequest())
    assert (ping.subject, ping.channel) == ("staffMembers/s1", "store_pos")
    assert 2.0 < ping.remaining_seconds < 3.5  # gRPC rounds the wire deadline up
    # A caller's own timeout and metadata win over the channel's defaults.
    own = await stub.Ping(pb.PingRequest(), timeout=20, metadata=(("x-omni-channel", "kiosk"),))
    assert own.channel == "kiosk" and 15 < own.remaining_seconds < 20.5


def test_call_context_refuses_what_services_would_refuse() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        omni_client.CallContext("fax")
    with pytest.raises(ValueError, match="locations/"):
        omni_client.CallContext("store_pos", store="store-1")


async def test_unavailable_is_retried_with_one_request_id_for_the_logical_call(connect, probe: Probe) -> None:
    stub = connect()
    first = await stub.Flaky(pb.FlakyRequest(fail_times=2))
    assert first.calls == 3  # two UNAVAILABLE answers, then success: the same id each time
    assert first.request_id and probe.servicer.flaky_calls[first.request_id] == 3
    assert first.metadata_request_id == first.request_id  # logs correlate with the idempotency key
    # The same request object sent again is a new logical call: a new id, not a replay.
    request = pb.FlakyRequest(fail_times=0)
    one, two = await stub.Flaky(request), await stub.Flaky(request)
    assert one.request_id != two.request_id and request.request_id == ""
    # An id chosen by the caller is kept.
    mine = await stub.Flaky(pb.FlakyRequest(request_id="caller-chosen", fail_times=1))
    assert (mine.request_id, mine.calls) == ("caller-chosen", 2)


async def test_retries_stop_at_max_attempts_and_at_the_deadline(connect, probe: Probe) -> None:
    stub = connect()
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:
        await stub.Flaky(pb.FlakyRequest(request_id="always-down", fail_times=100))
    assert exhausted.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.servicer.flaky_calls["always-down"] == FAST.max_attempts

    patient = connect(
        retry=omni_client.RetryPolicy(max_attempts=1000, initial_backoff=0.02, max_backoff=0.05)
    )
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await patient.Flaky(pb.FlakyRequest(request_id="deadline", fail_times=10_000), timeout=0.4)
    assert late.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert time.monotonic() - started < 2.0  # one deadline for all attempts, not one per attempt
    assert 1 < probe.servicer.flaky_calls["deadline"] < 1000


async def test_calls_that_are_not_safe_to_repeat_are_not_retried(connect) -> None:
    # Fail has no request_id and is no read: a second attempt could do the work twice.
    assert not omni_client.safe_to_repeat("/omni.probe.v1.ProbeService/Fail", pb.FailRequest())
    assert omni_client.safe_to_repeat("/omni.cart.v1.CartService/GetCart", pb.PingRequest())
    stub = connect()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Fail(pb.FailRequest(kind="unavailable"))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 1.0


class RotatingToken:
    """A token source whose first token is refused (a retired key, a revoked session)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.invalidated = 0

    async def __call__(self) -> str:
        return self.tokens[0]

    def invalidate(self) -> None:
        self.invalidated += 1
        self.tokens.pop(0)


async def test_a_refused_token_is_refreshed_once(connect, make_token) -> None:
    good = make_token("customers/c1", roles=["customer"])
    source = RotatingToken(["not-a-jwt", good])
    stub = connect(token=source)
    echo = await stub.Echo(pb.EchoRequest(name="customers/c1/echoes/e1", text="hi"))
    assert echo.text == "hi" and source.invalidated == 1

    refused = RotatingToken(["bad-1", "bad-2", "bad-3"])
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await connect(token=refused).Echo(pb.EchoRequest(name="customers/c1/echoes/e1", text="hi"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED and refused.invalidated == 1


async def test_server_streams_carry_metadata_and_no_default_deadline(connect) -> None:
    stub = connect(context=omni_client.CallContext("mobile_app"), default_timeout=0.001)
    ticks = [t.index async for t in stub.Ticks(pb.TicksRequest(count=3))]
    assert ticks == [0, 1, 2]


async def test_errors_decode_the_google_rpc_details(connect) -> None:
    stub = connect()
    with pytest.raises(grpc.aio.AioRpcError) as aborted:
        await stub.Fail(pb.FailRequest(kind="aborted"))
    assert omni_client.errors.current_etag(aborted.value) == 'W/"7"'
    assert omni_client.errors.reason(aborted.value) == "CONCURRENT_MODIFICATION"
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.Fail(pb.FailRequest(kind="invalid"))
    text = omni_client.errors.describe(invalid.value)
    assert text.startswith("INVALID_ARGUMENT (3): kind: is invalid on purpose")
    assert "  field kind: is invalid on purpose [INVALID_FIELD]" in text.splitlines()


async def test_retry_on_aborted_rereads_and_writes_again(connect) -> None:
    stub = connect()
    reads: list[int] = []
    writes: list[int] = []

    async def read() -> int:
        reads.append(len(reads))
        return len(reads)

    async def write(version: int) -> str:
        writes.append(version)
        if version < 3:  # the first two writes lose the race
            await stub.Fail(pb.FailRequest(kind="aborted"))
        return f"written at {version}"

    assert await omni_client.retry_on_aborted(read, write, max_pause=0) == "written at 3"
    assert writes == [1, 2, 3]

    async def always_stale(version: int) -> str:
        await stub.Fail(pb.FailRequest(kind="aborted"))
        return "never"

    with pytest.raises(grpc.aio.AioRpcError) as gave_up:
        await omni_client.retry_on_aborted(read, always_stale, attempts=2, max_pause=0)
    assert gave_up.value.code() == grpc.StatusCode.ABORTED

    async def other_error(version: int) -> str:
        await stub.Fail(pb.FailRequest(kind="not_found"))
        return "never"

    before = len(reads)
    with pytest.raises(grpc.aio.AioRpcError):
        await omni_client.retry_on_aborted(read, other_error, max_pause=0)
    assert len(reads) == before + 1  # not retried: only ABORTED means "read again"


async def test_concurrent_callers_share_one_channel(connect) -> None:
    stub = connect(context=omni_client.CallContext("web"))
    answers = await asyncio.gather(*(stub.Flaky(pb.FlakyRequest(fail_times=1)) for _ in range(20)))
    assert len({a.request_id for a in answers}) == 20 and {a.calls for a in answers} == {2}
