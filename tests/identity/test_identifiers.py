"""Linked identifiers: link with and without proof, claims, unlink, list, ResolveIdentity."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.db.engine import Database
from omni_runtime.testing.plugin import bearer
from tests.identity.conftest import (
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

K = resources_pb2
Admin = tuple[tuple[str, str], ...]
Unlinked = events_pb2.IdentifierUnlinkedEvent


def key(kind: int, value: str) -> resources_pb2.IdentifierKey:
    return resources_pb2.IdentifierKey(kind=kind, value=value)  # type: ignore[arg-type]


def card() -> str:
    return f"LC{uuid.uuid4().int % 10**10:010d}"


@pytest.fixture
def agent(token_for: Callable[..., str]) -> Admin:
    return bearer(token_for("staffMembers/agent-1", ["agent"]))


async def test_customer_links_an_unverified_loyalty_card_nobody_else_holds(stub: Stub, db: Database) -> None:
    me, other = await register(stub), await register(stub)
    number = card()
    linked = await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=me.customer.name,
            identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, f" {number[:4]} {number[4:]} "),
        ),
        metadata=(*auth(me.token), ("x-omni-channel", "store_pos"), ("x-omni-store", "locations/s1")),
    )
    assert linked.value == number and not linked.verified and linked.primary
    assert linked.linked_by == me.customer.name and linked.source.store == "locations/s1"
    # Customers may claim only what nobody holds, even unverified.
    await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=other.customer.name, identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, number)
            ),
            metadata=auth(other.token),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDENTIFIER_ALREADY_LINKED",
    )
    events = [e for e in await events_of(db, events_pb2.IdentifierLinkedEvent) if e.value == number]
    assert len(events) == 1 and events[0].customer == me.customer.name


async def test_staff_attestation_verifies_and_claims_an_unverified_identifier(
    stub: Stub, db: Database, agent: Admin
) -> None:
    holder, owner = await register(stub), await register(stub)
    number = card()
    await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=holder.customer.name, identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, number)
        ),
        metadata=auth(holder.token),
    )
    # A customer saying "attested" is ignored; an agent who saw the card is believed.
    self_attested = await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=holder.customer.name, identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, number), attested=True
        ),
        metadata=auth(holder.token),
    )
    assert not self_attested.verified
    claimed = await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=owner.customer.name, identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, number), attested=True
        ),
        metadata=agent,
    )
    assert claimed.verified and claimed.linked_by == "staffMembers/agent-1"
    unlinked = [e for e in await events_of(db, Unlinked) if e.value == number]
    assert [(e.customer, e.reason) for e in unlinked] == [(holder.customer.name, Unlinked.REASON_CLAIMED)]
    # Held verified now: nobody else gets it.
    await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=holder.customer.name,
                identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, number),
                attested=True,
            ),
            metadata=agent,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, number)), metadata=agent
    )
    assert resolved.customer.name == owner.customer.name and resolved.identifier.verified


async def test_email_is_verified_by_a_one_time_code_and_becomes_primary(stub: Stub, db: Database) -> None:
    me = await register(stub)
    second = email()
    start = pb.StartIdentifierVerificationRequest(parent=me.customer.name, identifier=email_key(second))
    challenge = await stub.StartIdentifierVerification(start, metadata=auth(me.token))
    code = await code_of(db, challenge.challenge_id)
    wrong = await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=me.customer.name,
                identifier=email_key(second),
                proof=pb.IdentifierProof(
                    one_time_code=pb.IdentifierProof.OneTimeCode(
                        challenge_id=challenge.challenge_id, code="x"
                    )
                ),
            ),
            metadata=auth(me.token),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(wrong) == {("proof.one_time_code.code", "INVALID_ONE_TIME_CODE")}
    linked = await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=me.customer.name,
            identifier=email_key(second),
            proof=pb.IdentifierProof(
                one_time_code=pb.IdentifierProof.OneTimeCode(challenge_id=challenge.challenge_id, code=code)
            ),
        ),
        metadata=auth(me.token),
    )
    assert linked.verified and linked.primary and linked.HasField("verify_time")
    got = await stub.GetCustomer(pb.GetCustomerRequest(name=me.customer.name), metadata=auth(me.token))
    assert got.primary_email == second  # the first verified e-mail took over from the unverified one


async def test_a_code_for_another_customer_or_identifier_proves_nothing(stub: Stub, db: Database) -> None:
    me, other = await register(stub), await register(stub)
    target = email()
    challenge = await stub.StartIdentifierVerification(
        pb.StartIdentifierVerificationRequest(parent=other.customer.name, identifier=email_key(target)),
        metadata=auth(other.token),
    )
    code = await code_of(db, challenge.challenge_id)
    await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=me.customer.name,
                identifier=email_key(target),
                proof=pb.IdentifierProof(
                    one_time_code=pb.IdentifierProof.OneTimeCode(
                        challenge_id=challenge.challenge_id, code=code
                    )
                ),
            ),
            metadata=auth(me.token),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_proof_kinds_are_checked(stub: Stub) -> None:
    me = await register(stub)
    err = await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=me.customer.name,
                identifier=key(K.IDENTIFIER_KIND_LOYALTY_CARD, card()),
                proof=pb.IdentifierProof(
                    one_time_code=pb.IdentifierProof.OneTimeCode(challenge_id="c", code="1")
                ),
            ),
            metadata=auth(me.token),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("proof", "WRONG_PROOF")}
    await expect(
        stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=me.customer.name,
                identifier=key(K.IDENTIFIER_KIND_FACEBOOK, "1234567890"),
                proof=pb.IdentifierProof(provider_access_token="EAAB..."),
            ),
            metadata=auth(me.token),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_VERIFICATION_UNAVAILABLE",
    )


async def test_social_handles_attested_by_a_channel_backend(
    stub: Stub, token_for: Callable[..., str]
) -> None:
    me = await register(stub)
    backend = bearer(token_for("serviceClients/social-bot", ["service"]))
    wa = await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=me.customer.name,
            identifier=key(K.IDENTIFIER_KIND_WHATSAPP, "+40 721 000 111"),
            attested=True,
        ),
        metadata=backend,
    )
    assert wa.value == "40721000111" and wa.verified and wa.linked_by == "serviceClients/social-bot"


async def test_device_ids_move_to_the_latest_holder(stub: Stub, db: Database) -> None:
    a, b = await register(stub), await register(stub)
    device = f"dev-{uuid.uuid4()}"
    for owner in (a, b):
        linked = await stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=owner.customer.name, identifier=key(K.IDENTIFIER_KIND_DEVICE_ID, device)
            ),
            metadata=auth(owner.token),
        )
        assert linked.verified
    listed = await stub.ListIdentifiers(
        pb.ListIdentifiersRequest(parent=a.customer.name), metadata=auth(a.token)
    )
    assert device not in {i.value for i in listed.identifiers}


async def test_unlink_keeps_at_least_one_login_identifier(stub: Stub, db: Database) -> None:
    me = await register(stub)
    md = auth(me.token)
    listed = await stub.ListIdentifiers(pb.ListIdentifiersRequest(parent=me.customer.name), metadata=md)
    (only,) = listed.identifiers
    await expect(
        stub.UnlinkIdentifier(pb.UnlinkIdentifierRequest(name=only.name), metadata=md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_LOGIN_IDENTIFIER",
    )
    number = phone()
    await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(parent=me.customer.name, identifier=phone_key(number)), metadata=md
    )
    await stub.UnlinkIdentifier(pb.UnlinkIdentifierRequest(name=only.name), metadata=md)
    await expect(
        stub.UnlinkIdentifier(pb.UnlinkIdentifierRequest(name=only.name), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )
    events = [e for e in await events_of(db, Unlinked) if e.identifier == only.name]
    assert [e.reason for e in events] == [Unlinked.REASON_UNLINKED]
    got = await stub.GetCustomer(pb.GetCustomerRequest(name=me.customer.name), metadata=md)
    assert got.primary_email == "" and got.primary_phone == number


async def test_list_identifiers_filters_orders_and_pages(stub: Stub) -> None:
    me = await register(stub)
    md = auth(me.token)
    for _ in range(3):
        await stub.LinkIdentifier(
            pb.LinkIdentifierRequest(
                parent=me.customer.name, identifier=key(K.IDENTIFIER_KIND_DEVICE_ID, str(uuid.uuid4()))
            ),
            metadata=md,
        )
    devices = await stub.ListIdentifiers(
        pb.ListIdentifiersRequest(
            parent=me.customer.name, filter="kind = IDENTIFIER_KIND_DEVICE_ID AND verified = true"
        ),
        metadata=md,
    )
    assert len(devices.identifiers) == 3
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListIdentifiers(
            pb.ListIdentifiersRequest(
                parent=me.customer.name, page_size=2, page_token=token, order_by="kind desc"
            ),
            metadata=md,
        )
        seen.extend(i.name for i in page.identifiers)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4
    for bad, field in (
        ("colour = red", "filter"),
        ("kind = IDENTIFIER_KIND_EMAIL OR NOT verified = true", "filter"),
        ("", "page_token"),
    ):
        request = pb.ListIdentifiersRequest(parent=me.customer.name, filter=bad)
        if field == "page_token":
            request.page_token = "forged"
        err = await expect(stub.ListIdentifiers(request, metadata=md), grpc.StatusCode.INVALID_ARGUMENT)
        assert {f for f, _ in violations(err)} == {field}


async def test_resolve_identity_for_the_call_center(stub: Stub, agent: Admin, db: Database) -> None:
    number = phone()
    me = await register(stub, identifier=phone_key(number))
    # Unverified: not an answer for the call center unless asked for.
    await expect(
        stub.ResolveIdentity(pb.ResolveIdentityRequest(identifier=phone_key(number)), metadata=agent),
        grpc.StatusCode.NOT_FOUND,
        "IDENTITY_NOT_FOUND",
    )
    found = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(identifier=phone_key(number.replace("+", "00")), include_unverified=True),
        metadata=agent,
    )
    assert found.customer.name == me.customer.name and found.identifier.value == number
    err = await expect(
        stub.ResolveIdentity(pb.ResolveIdentityRequest(identifier=phone_key("12")), metadata=agent),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("identifier.value", "INVALID_IDENTIFIER")}
