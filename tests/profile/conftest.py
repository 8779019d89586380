"""Fixtures of the profile tests: the service in-process against real PostgreSQL and NATS,
callers with real signed tokens, and real events published on the producers' streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from omni.profile.v1 import profile_service_pb2_grpc as svc_grpc
from omni_runtime.errors import status_of, unpack_details
from omni_runtime.localinfra import free_port
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.services import RunningService, running_service
from services.profile.main import SERVICE


def uid(prefix: str = "c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def rid() -> str:
    return str(uuid.uuid4())


class Caller:
    """A stub whose calls carry one principal's token and channel."""

    def __init__(self, stub: Any, token: str, channel: str = "web") -> None:
        self.stub = stub
        self.metadata = (*bearer(token), ("x-omni-channel", channel))

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self.stub, method)
        return lambda request, **kw: call(request, metadata=self.metadata, **kw)


@pytest.fixture(scope="module")
async def profile(service_settings: Any, key_source: Any) -> AsyncIterator[RunningService]:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: a stopped service
    settings = service_settings(
        "profile",
        targets={"cart": dead, "messaging": dead, "preferences": dead, "identity": dead, "inventory": dead},
        extra={
            "OMNI_PROFILE_PEERS": "identity,cart,inventory,preferences",
            "OMNI_PROFILE_VIEW_SOURCE_TIMEOUT_SECONDS": "0.5",
        },
    )
    async with running_service(SERVICE, settings, key_source=key_source) as running:
        yield running


@pytest.fixture(scope="module")
def stub(profile: RunningService) -> svc_grpc.ProfileServiceStub:
    return svc_grpc.ProfileServiceStub(profile.channel)


@pytest.fixture(scope="module")
def agent(stub: Any, make_token: Any) -> Caller:
    return Caller(stub, make_token("staffMembers/a1", roles=["agent"]), channel="call_center")


@pytest.fixture(scope="module")
def service(stub: Any, make_token: Any) -> Caller:
    return Caller(stub, make_token("serviceClients/pos", roles=["service"]), channel="store_pos")


@pytest.fixture(scope="module")
def admin(stub: Any, make_token: Any) -> Caller:
    return Caller(stub, make_token("staffMembers/root", roles=["admin"]), channel="backoffice")


@pytest.fixture(scope="module")
def customer_of(stub: Any, make_token: Any) -> Callable[[str], Caller]:
    return lambda c: Caller(stub, make_token(f"customers/{c}", roles=["customer"]))


async def expect(call: Awaitable[Any], code: grpc.StatusCode, reason: str | None = None) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    status = status_of(caught.value)
    details = unpack_details(status) if status is not None else {}
    if reason is not None:
        assert details["ErrorInfo"].reason == reason  # type: ignore[attr-defined]
    return details


def violated(details: dict[str, Any]) -> set[str]:
    return {v.field for v in details["BadRequest"].field_violations}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
