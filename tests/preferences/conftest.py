"""Fixtures of the preferences tests: the real service on a real socket over real PostgreSQL and
NATS, called with real signed tokens; helpers to seed contact points the way profile and
identity announce them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from omni.identity.v1 import events_pb2 as identity_events
from omni.identity.v1 import resources_pb2 as identity_res
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import preferences_service_pb2_grpc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.testing.calls import Caller, EventTap, eventually, tap
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from omni_runtime.testing.services import RunningService, running_service
from services.preferences.main import SERVICE

SWEEP_INTERVAL = "0.2"


def rid() -> str:
    return str(uuid.uuid4())


def new_customer() -> str:
    return f"customers/{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def extra_settings() -> dict[str, str]:
    """Overridden by a test module that needs other business defaults."""
    return {}


@pytest.fixture(scope="module")
async def preferences(
    service_settings: Callable[..., Settings], key_source: StaticKeySource, extra_settings: dict[str, str]
) -> AsyncIterator[RunningService]:
    settings = service_settings(
        "preferences",
        extra={
            "OMNI_PREFERENCES_SWEEP_INTERVAL_SECONDS": SWEEP_INTERVAL,
            "OMNI_PREFERENCES_DEFAULT_TIME_ZONE": "Europe/Bucharest",
            **extra_settings,
        },
    )
    async with running_service(SERVICE, settings, key_source=key_source) as service:
        yield service


@pytest.fixture(scope="module")
async def db(database_url: str, preferences: RunningService) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2, max_overflow=2)
    yield database
    await database.close()


@pytest.fixture(scope="module")
def stub(preferences: RunningService) -> preferences_service_pb2_grpc.PreferencesServiceStub:
    return preferences_service_pb2_grpc.PreferencesServiceStub(preferences.channel)


@pytest.fixture(scope="module")
def as_role(
    stub: preferences_service_pb2_grpc.PreferencesServiceStub, make_token: Callable[..., str]
) -> Callable[..., Caller]:
    """``as_role("customers/c1", "customer")`` → a Caller with that principal's token."""

    def make(subject: str, *roles: str, channel: str = "web", store: str = "") -> Caller:
        token = make_token(subject, roles=list(roles), store=store, ttl_seconds=3600)
        return Caller(stub, token, channel=channel, store=store)

    return make


@pytest.fixture(scope="module")
def backend(as_role: Callable[..., Caller]) -> Caller:
    """A channel backend (role ``service``)."""
    return as_role("serviceClients/web-backend", "service")


@pytest.fixture(scope="module")
def anonymous(stub: preferences_service_pb2_grpc.PreferencesServiceStub) -> Caller:
    return Caller(stub, channel="web")


@pytest.fixture
async def events(omni_infra: Infra, preferences: RunningService) -> AsyncIterator[EventTap]:
    async with tap(omni_infra.nats_url, "preferences") as collected:
        yield collected


async def link(
    infra: Infra,
    customer: str,
    kind: int,
    value: str,
    *,
    verified: bool,
    primary: bool = True,
) -> str:
    """Announce an identifier as identity does; returns the identifier's name."""
    identifier = f"{customer}/identifiers/{uuid.uuid4().hex[:12]}"
    event = identity_events.IdentifierLinkedEvent(
        identifier=identifier,
        customer=customer,
        kind=kind,
        value=value,
        verified=verified,
        primary=primary,  # type: ignore[arg-type]
    )
    await publish_event(infra.nats_url, event)
    return identifier


async def has_contact_point(db: Database, customer: str, channel: int, verified: bool | None = None) -> bool:
    from sqlalchemy import text

    async with db.transaction() as session:
        row = (
            await session.execute(
                text(
                    "SELECT bool_or(verified) AS v FROM contact_points"
                    " WHERE customer_id = :c AND channel = :ch"
                ),
                {"c": customer.removeprefix("customers/"), "ch": channel},
            )
        ).one()
    return row.v is not None and (verified is None or row.v == verified)


async def with_email(infra: Infra, db: Database, customer: str, *, verified: bool = True) -> None:
    await link(
        infra,
        customer,
        identity_res.IDENTIFIER_KIND_EMAIL,
        f"{uuid.uuid4().hex[:8]}@example.com",
        verified=verified,
    )

    async def known() -> bool:
        return await has_contact_point(db, customer, ch.CHANNEL_EMAIL, verified)

    await eventually(known, 10)


async def with_phone(infra: Infra, db: Database, customer: str, *, verified: bool = True) -> None:
    await link(infra, customer, identity_res.IDENTIFIER_KIND_PHONE, "+40712345678", verified=verified)

    async def known() -> bool:
        return await has_contact_point(db, customer, ch.CHANNEL_SMS, verified)

    await eventually(known, 10)


def set_consent(
    customer: str, channel: int, topic: str, state: int, *, basis: int = 0, evidence: str = "", **kw: Any
) -> svc.SetConsentRequest:
    return svc.SetConsentRequest(
        parent=customer,
        channel=channel,  # type: ignore[arg-type]
        topic=topic,
        state=state,  # type: ignore[arg-type]
        legal_basis=basis,  # type: ignore[arg-type]
        source=res.ConsentSource(evidence=evidence) if evidence else None,
        request_id=kw.pop("request_id", rid()),
        **kw,
    )
