"""Guests: created per device, upgraded in place at registration, merged at log-in."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import jwt
import pytest

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.db.engine import Database
from tests.identity.conftest import (
    PASSWORD,
    Stub,
    auth,
    code_of,
    email,
    email_key,
    events_of,
    expect,
    phone,
    phone_key,
    register,
    violations,
)

Customer = resources_pb2.Customer
DEVICE = resources_pb2.IDENTIFIER_KIND_DEVICE_ID
GuestUpgraded = events_pb2.GuestUpgradedEvent


@pytest.fixture(scope="module")
def identity_overrides() -> dict[str, str]:
    return {"one_time_code_resend_seconds": "0"}


def device_key(value: str) -> resources_pb2.IdentifierKey:
    return resources_pb2.IdentifierKey(kind=DEVICE, value=value)


async def test_create_guest_for_a_device_and_find_it_again(
    stub: Stub, admin: tuple[tuple[str, str], ...]
) -> None:
    device = f"app-{uuid.uuid4()}"
    first = await stub.CreateGuest(
        pb.CreateGuestRequest(device_id=device), metadata=(("x-omni-channel", "mobile_app"),)
    )
    assert first.created and first.customer.state == Customer.STATE_GUEST and not first.customer.has_password
    assert first.token.guest and list(first.token.roles) == [resources_pb2.ROLE_GUEST]
    claims = jwt.decode(first.token.access_token, options={"verify_signature": False})
    assert claims["roles"] == ["guest"] and claims["ch"] == "mobile_app"
    again = await stub.CreateGuest(pb.CreateGuestRequest(device_id=device))
    assert not again.created and again.customer.name == first.customer.name
    assert again.token.session != first.token.session
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=device_key(device)), metadata=admin
    )
    assert resolved.customer.name == first.customer.name


async def test_concurrent_guests_for_one_device_are_one_guest(stub: Stub) -> None:
    device = f"web-{uuid.uuid4()}"
    replies = await asyncio.gather(
        *(stub.CreateGuest(pb.CreateGuestRequest(device_id=device)) for _ in range(8))
    )
    assert len({r.customer.name for r in replies}) == 1
    assert sum(r.created for r in replies) == 1


async def test_guest_without_a_device_and_bad_device_ids(stub: Stub) -> None:
    reply = await stub.CreateGuest(pb.CreateGuestRequest())
    assert reply.created
    err = await expect(
        stub.CreateGuest(pb.CreateGuestRequest(device_id="has spaces")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violations(err) == {("device_id", "INVALID_IDENTIFIER")}


async def test_registering_upgrades_the_guest_in_place(stub: Stub, db: Database) -> None:
    device = f"app-{uuid.uuid4()}"
    guest = await stub.CreateGuest(pb.CreateGuestRequest(device_id=device))
    address = email()
    reply = await register(stub, address, guest_token=guest.token.access_token, display_name="Mara")
    assert reply.customer.name == guest.customer.name
    assert reply.customer.state == Customer.STATE_ACTIVE and reply.customer.HasField("register_time")
    assert reply.guest_resolution.outcome == pb.GuestResolution.OUTCOME_UPGRADED
    assert reply.guest_resolution.guest == reply.guest_resolution.customer == guest.customer.name
    assert list(reply.token.roles) == [resources_pb2.ROLE_CUSTOMER] and not reply.token.guest
    upgraded = [e for e in await events_of(db, GuestUpgraded) if e.guest == guest.customer.name]
    assert [(e.customer, e.outcome) for e in upgraded] == [
        (guest.customer.name, GuestUpgraded.OUTCOME_UPGRADED)
    ]
    registered = [
        e
        for e in await events_of(db, events_pb2.CustomerRegisteredEvent)
        if e.customer == guest.customer.name
    ]
    assert registered[0].upgraded_from_guest
    assert {(k.kind, k.value) for k in registered[0].identifiers} == {
        (resources_pb2.IDENTIFIER_KIND_EMAIL, address),
        (DEVICE, device),
    }
    # The same guest token cannot be used twice: the guest is no more.
    await expect(
        register(stub, email(), guest_token=guest.token.access_token), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_logging_in_merges_the_guest_into_the_account(
    stub: Stub, db: Database, admin: tuple[tuple[str, str], ...]
) -> None:
    address = email()
    account = await register(stub, address)
    device = f"app-{uuid.uuid4()}"
    guest = await stub.CreateGuest(pb.CreateGuestRequest(device_id=device))
    reply = await stub.Login(
        pb.LoginRequest(
            identifier=email_key(address), password=PASSWORD, guest_token=guest.token.refresh_token
        )
    )
    assert reply.customer.name == account.customer.name
    assert reply.guest_resolution.outcome == pb.GuestResolution.OUTCOME_MERGED
    assert reply.guest_resolution.guest == guest.customer.name
    merged = await stub.GetCustomer(pb.GetCustomerRequest(name=guest.customer.name), metadata=admin)
    assert merged.state == Customer.STATE_MERGED and merged.merged_into == account.customer.name
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=device_key(device)), metadata=admin
    )
    assert resolved.customer.name == account.customer.name  # the device moved with the guest
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=guest.token.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    events = [e for e in await events_of(db, GuestUpgraded) if e.guest == guest.customer.name]
    assert [(e.customer, e.outcome) for e in events] == [
        (account.customer.name, GuestUpgraded.OUTCOME_MERGED)
    ]
    moved = [e for e in await events_of(db, events_pb2.IdentifierUnlinkedEvent) if e.value == device]
    assert [e.reason for e in moved] == [events_pb2.IdentifierUnlinkedEvent.REASON_MOVED]
    revoked = [
        e for e in await events_of(db, events_pb2.SessionRevokedEvent) if e.principal == guest.customer.name
    ]
    assert {e.reason for e in revoked} == {events_pb2.SessionRevokedEvent.REASON_GUEST_MERGED}


async def test_code_login_merges_or_upgrades_the_guest(stub: Stub, db: Database) -> None:
    guest = await stub.CreateGuest(pb.CreateGuestRequest(device_id=f"d-{uuid.uuid4()}"))
    number = phone()
    challenge = await stub.StartOneTimeCodeLogin(
        pb.StartOneTimeCodeLoginRequest(destination=phone_key(number), allow_registration=True)
    )
    reply = await stub.VerifyOneTimeCode(
        pb.VerifyOneTimeCodeRequest(
            challenge_id=challenge.challenge_id,
            code=await code_of(db, challenge.challenge_id),
            guest_token=guest.token.access_token,
        )
    )
    assert reply.registered and reply.customer.name == guest.customer.name
    assert reply.guest_resolution.outcome == pb.GuestResolution.OUTCOME_UPGRADED
    # A second guest logs into that (now verified) phone: merged.
    second = await stub.CreateGuest(pb.CreateGuestRequest())
    again = await stub.StartOneTimeCodeLogin(pb.StartOneTimeCodeLoginRequest(destination=phone_key(number)))
    merged = await stub.VerifyOneTimeCode(
        pb.VerifyOneTimeCodeRequest(
            challenge_id=again.challenge_id,
            code=await code_of(db, again.challenge_id),
            guest_token=second.token.access_token,
        )
    )
    assert not merged.registered and merged.customer.name == guest.customer.name
    assert merged.guest_resolution.outcome == pb.GuestResolution.OUTCOME_MERGED


async def test_a_token_that_is_not_a_live_guest_token_is_invalid_argument(stub: Stub) -> None:
    customer = await register(stub)
    for token in ("garbage", customer.token.access_token, customer.token.refresh_token):
        err = await expect(register(stub, email(), guest_token=token), grpc.StatusCode.INVALID_ARGUMENT)
        assert violations(err) == {("guest_token", "INVALID_GUEST_TOKEN")}


async def test_a_registered_customers_device_is_not_given_to_a_new_guest(
    stub: Stub, admin: tuple[tuple[str, str], ...]
) -> None:
    device = f"app-{uuid.uuid4()}"
    guest = await stub.CreateGuest(pb.CreateGuestRequest(device_id=device))
    upgraded = await register(stub, guest_token=guest.token.access_token)
    other = await stub.CreateGuest(pb.CreateGuestRequest(device_id=device))
    assert other.created and other.customer.name != upgraded.customer.name
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=device_key(device)), metadata=admin
    )
    assert resolved.customer.name == upgraded.customer.name


async def test_guests_cannot_hold_login_identifiers(stub: Stub) -> None:
    guest = await stub.CreateGuest(pb.CreateGuestRequest())
    await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(parent=guest.customer.name, identifier=email_key(email())),
            metadata=auth(guest.token),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CUSTOMER_IS_GUEST",
    )


# --- guests for handles nobody holds (messaging's inbound messages) --------------------------

FACEBOOK = resources_pb2.IDENTIFIER_KIND_FACEBOOK


async def test_resolving_an_unknown_handle_with_create_guest_makes_one_guest(
    stub: Stub, db: Database, admin: tuple[tuple[str, str], ...]
) -> None:
    psid = f"{uuid.uuid4().int % 10**16:016d}"
    key = resources_pb2.IdentifierKey(kind=FACEBOOK, value=psid)
    await expect(
        stub.ResolveIdentity(pb.ResolveIdentityRequest(identifier=key), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    replies = await asyncio.gather(
        *(
            stub.ResolveIdentity(pb.ResolveIdentityRequest(identifier=key, create_guest=True), metadata=admin)
            for _ in range(8)
        )
    )
    assert len({r.customer.name for r in replies}) == 1
    assert sum(r.guest_created for r in replies) == 1
    guest = replies[0].customer
    assert guest.state == Customer.STATE_GUEST
    assert replies[0].identifier.value == psid and not replies[0].identifier.verified
    # Found again (unverified holders count with create_guest), not created twice.
    again = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=key, create_guest=True), metadata=admin
    )
    assert again.customer.name == guest.name and not again.guest_created
    linked = [e for e in await events_of(db, events_pb2.IdentifierLinkedEvent) if e.customer == guest.name]
    assert len(linked) == 1


async def test_a_guest_holding_an_address_from_a_message_never_blocks_registration(
    stub: Stub, admin: tuple[tuple[str, str], ...]
) -> None:
    address = email()
    guest = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=email_key(address), create_guest=True), metadata=admin
    )
    assert guest.guest_created
    # Registering with a password proves nothing: a new customer, the guest loses the address.
    account = await register(stub, address)
    assert account.customer.name != guest.customer.name
    now = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=email_key(address), include_unverified=True), metadata=admin
    )
    assert now.customer.name == account.customer.name


async def test_a_one_time_code_to_a_guests_number_upgrades_that_guest(
    stub: Stub, db: Database, admin: tuple[tuple[str, str], ...]
) -> None:
    number = phone()
    guest = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=phone_key(number), create_guest=True), metadata=admin
    )
    challenge = await stub.StartOneTimeCodeLogin(
        pb.StartOneTimeCodeLoginRequest(destination=phone_key(number), allow_registration=True)
    )
    reply = await stub.VerifyOneTimeCode(
        pb.VerifyOneTimeCodeRequest(
            challenge_id=challenge.challenge_id, code=await code_of(db, challenge.challenge_id)
        )
    )
    # The code proves the number is theirs: the guest (and what it wrote) becomes the account.
    assert reply.registered and reply.customer.name == guest.customer.name
    assert reply.customer.state == Customer.STATE_ACTIVE
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=phone_key(number)), metadata=admin
    )
    assert resolved.customer.name == guest.customer.name and resolved.identifier.verified
