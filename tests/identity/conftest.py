"""Fixtures for identity's tests: a real identity service (PostgreSQL, NATS, gRPC socket) per module.

Argon2 is made cheap here (one pass over 1 MiB) through identity's own settings, because the
suite hashes hundreds of passwords; production keeps RFC 9106's parameters (see config.py).
Everything else is production code: tokens are signed by identity's own key ring, one-time
codes are read from the transactional outbox exactly as messaging would receive them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from sqlalchemy import select

from omni.identity.v1 import events_pb2, identity_service_pb2_grpc, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.auth.tokens import issue_token
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.db.schema import outbox
from omni_runtime.errors import status_of, unpack_details
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.services import RunningService, running_service
from services.identity.keys import KeyRing
from services.identity.main import SERVICE

FAST_ARGON2 = {
    "OMNI_IDENTITY_ARGON2_TIME_COST": "1",
    "OMNI_IDENTITY_ARGON2_MEMORY_KIB": "1024",
    "OMNI_IDENTITY_ARGON2_PARALLELISM": "1",
}
PASSWORD = "correct horse battery"
Stub = identity_service_pb2_grpc.IdentityServiceStub


def identity_extra(**overrides: str) -> dict[str, str]:
    return {**FAST_ARGON2, **{f"OMNI_IDENTITY_{k.upper()}": v for k, v in overrides.items()}}


@pytest.fixture(scope="module")
def identity_overrides() -> dict[str, str]:
    """Per-module identity settings (without the OMNI_IDENTITY_ prefix); override in a module."""
    return {}


@pytest.fixture(scope="module")
def identity_settings(
    service_settings: Callable[..., Settings], identity_overrides: dict[str, str]
) -> Settings:
    return service_settings("identity", extra=identity_extra(**identity_overrides))


@pytest.fixture(scope="module")
async def identity(identity_settings: Settings) -> AsyncIterator[RunningService]:
    async with running_service(SERVICE, identity_settings) as svc:
        yield svc


@pytest.fixture
def stub(identity: RunningService) -> Stub:
    return Stub(identity.channel)


@pytest.fixture(scope="module")
def keyring(identity: RunningService) -> KeyRing:
    assert identity.host.runtime is not None
    ring = identity.host.runtime.key_source
    assert isinstance(ring, KeyRing)
    return ring


@pytest.fixture(scope="module")
def db(identity: RunningService) -> Database:
    assert identity.host.runtime is not None and identity.host.runtime.db is not None
    return identity.host.runtime.db


@pytest.fixture
def token_for(keyring: KeyRing) -> Callable[..., str]:
    """An access token signed by the running identity's current key, for any subject and roles."""

    def make(subject: str, roles: list[str] | tuple[str, ...], **kw: Any) -> str:
        return issue_token(keyring.current(), subject=subject, roles=roles, **kw)

    return make


@pytest.fixture
def admin(token_for: Callable[..., str]) -> tuple[tuple[str, str], ...]:
    return bearer(token_for("staffMembers/root", ["admin"]))


# --- helpers ---------------------------------------------------------------------------------


def email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def phone() -> str:
    return "+4072" + f"{uuid.uuid4().int % 10**7:07d}"


def email_key(value: str) -> resources_pb2.IdentifierKey:
    return resources_pb2.IdentifierKey(kind=resources_pb2.IDENTIFIER_KIND_EMAIL, value=value)


def phone_key(value: str) -> resources_pb2.IdentifierKey:
    return resources_pb2.IdentifierKey(kind=resources_pb2.IDENTIFIER_KIND_PHONE, value=value)


async def register(stub: Stub, address: str | None = None, **kw: Any) -> pb.RegisterCustomerResponse:
    key = kw.pop("identifier", None) or email_key(address or email())
    return await stub.RegisterCustomer(
        pb.RegisterCustomerRequest(identifier=key, password=kw.pop("password", PASSWORD), **kw)
    )


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def reason(err: grpc.aio.AioRpcError) -> str:
    status = status_of(err)
    assert status is not None
    return str(unpack_details(status)["ErrorInfo"].reason)  # type: ignore[attr-defined]


def violations(err: grpc.aio.AioRpcError) -> set[tuple[str, str]]:
    status = status_of(err)
    assert status is not None
    bad = unpack_details(status)["BadRequest"]
    return {(v.field, v.reason) for v in bad.field_violations}  # type: ignore[attr-defined]


async def expect(call: Any, code: grpc.StatusCode, why: str | None = None) -> grpc.aio.AioRpcError:
    err = await rpc_error(call)
    assert err.code() is code, (err.code(), err.details())
    if why is not None:
        assert reason(err) == why, (reason(err), err.details())
    return err


async def events_of(db: Database, message_type: type[Any]) -> list[Any]:
    """Every event of one type identity wrote to its outbox, oldest first."""
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == message_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.seq)
            )
        ).all()
    out = []
    for row in rows:
        message: Message = message_type()
        message.ParseFromString(row.payload)
        out.append(message)
    return out


async def code_of(db: Database, challenge_id: str) -> str:
    """The one-time code as messaging receives it: from OneTimeCodeIssuedEvent."""
    for event in await events_of(db, events_pb2.OneTimeCodeIssuedEvent):
        if event.challenge_id == challenge_id:
            return str(event.code)
    raise AssertionError(f"no code was issued for challenge {challenge_id}")


def auth(token: resources_pb2.AuthToken) -> tuple[tuple[str, str], ...]:
    return bearer(token.access_token)
