"""Identity follows profile's decisions: an unmerge gives the source customer back its identifiers
and its state; an erasure requested at profile erases the customer here and fans out. Real
events on the profile stream, the real identity service behind gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni.profile.v1 import events_pb2 as profile_events
from omni.profile.v1 import resources_pb2 as profile_resources
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.services import RunningService
from tests.identity.conftest import PASSWORD, Stub, email_key, events_of, phone, phone_key, register

Admin = tuple[tuple[str, str], ...]
Customer = resources_pb2.Customer
EMAIL = profile_resources.ContactPoint.KIND_EMAIL
PHONE = profile_resources.ContactPoint.KIND_PHONE


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    async with asyncio.timeout(20):
        while not await check():
            await asyncio.sleep(0.05)
    assert await check(), what


async def state_of(stub: Stub, name: str, admin: Admin) -> Customer:
    return await stub.GetCustomer(pb.GetCustomerRequest(name=name), metadata=admin)


async def test_an_unmerge_returns_the_identifiers_and_reactivates_the_source(
    identity: RunningService, identity_settings: Settings, admin: Admin
) -> None:
    stub = Stub(identity.channel)
    source, target = await register(stub), await register(stub)
    number = phone()
    await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(parent=source.customer.name, identifier=phone_key(number), attested=True),
        metadata=admin,
    )
    names = {
        "source_profile": f"{source.customer.name}/profile",
        "source_customer": source.customer.name,
        "target_profile": f"{target.customer.name}/profile",
        "target_customer": target.customer.name,
        "reason": profile_resources.MERGE_REASON_DUPLICATE,
    }
    await publish_event(identity_settings.nats_url, profile_events.ProfilesMergedEvent(**names))  # type: ignore[arg-type]

    async def merged() -> bool:
        return (await state_of(stub, source.customer.name, admin)).state == Customer.STATE_MERGED

    await until(merged, "identity never applied the merge")
    # The target gained a phone of its own after the merge: it keeps it.
    own = phone()
    await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(parent=target.customer.name, identifier=phone_key(own), attested=True),
        metadata=admin,
    )
    unmerged = profile_events.ProfilesUnmergedEvent(
        **names,  # type: ignore[arg-type]
        returned_contact_points=[
            profile_resources.ContactPoint(kind=EMAIL, value=source.customer.primary_email),
            profile_resources.ContactPoint(kind=PHONE, value=number),
        ],
    )
    event_id = await publish_event(identity_settings.nats_url, unmerged)
    await publish_event(identity_settings.nats_url, unmerged, event_id=event_id)  # a redelivery

    async def active() -> bool:
        return (await state_of(stub, source.customer.name, admin)).state == Customer.STATE_ACTIVE

    await until(active, "identity never applied the unmerge")
    restored = await state_of(stub, source.customer.name, admin)
    assert restored.merged_into == "" and restored.primary_email == source.customer.primary_email
    assert restored.primary_phone == number
    listed = {
        i.value
        for i in (
            await stub.ListIdentifiers(pb.ListIdentifiersRequest(parent=target.customer.name), metadata=admin)
        ).identifiers
    }
    assert target.customer.primary_email in listed and own in listed
    assert source.customer.primary_email not in listed and number not in listed
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=phone_key(number), include_unverified=True), metadata=admin
    )
    assert resolved.customer.name == source.customer.name
    # The source can log in again with its own password.
    login = await stub.Login(
        pb.LoginRequest(identifier=email_key(source.customer.primary_email), password=PASSWORD)
    )
    assert login.customer.name == source.customer.name


async def test_an_erasure_requested_at_profile_erases_the_customer_and_fans_out(
    identity: RunningService, identity_settings: Settings, admin: Admin, db: Database
) -> None:
    stub = Stub(identity.channel)
    customer = await register(stub)
    name = customer.customer.name
    # Profile following identity's own erasure (trigger CUSTOMER_ERASED) is not a request.
    await publish_event(
        identity_settings.nats_url,
        profile_events.CustomerDataErasedEvent(
            customer=name, trigger=profile_events.CustomerDataErasedEvent.TRIGGER_CUSTOMER_ERASED
        ),
    )
    unknown = "customers/never-registered-" + name.rsplit("/", 1)[1]
    for who in (name, unknown):
        await publish_event(
            identity_settings.nats_url,
            profile_events.CustomerDataErasedEvent(
                customer=who,
                trigger=profile_events.CustomerDataErasedEvent.TRIGGER_DIRECT_REQUEST,
                requested_by="staffMembers/dpo",
            ),
        )

    async def announced() -> bool:
        erased = {e.customer for e in await events_of(db, events_pb2.CustomerErasedEvent)}
        return {name, unknown} <= erased

    await until(announced, "identity never announced the erasures")
    got = await state_of(stub, name, admin)
    assert got.state == Customer.STATE_ERASED and got.display_name == "" and got.primary_email == ""
    erased = [e for e in await events_of(db, events_pb2.CustomerErasedEvent) if e.customer == name]
    assert len(erased) == 1 and erased[0].requested_by == "staffMembers/dpo"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=customer.token.refresh_token))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
