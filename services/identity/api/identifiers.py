"""Linked identifiers: list, prove, link, unlink, and "who is this?" (ResolveIdentity).

Proof rules (LinkIdentifier):
- EMAIL, PHONE: verified by a one-time code from StartIdentifierVerification; without one they
  are linked unverified, which is allowed only when nobody else holds the value.
- LOYALTY_CARD, FACEBOOK, INSTAGRAM, WHATSAPP: verified when a staff member or a service
  client attests them (``attested``; ignored for customers). Provider access tokens
  (FACEBOOK/INSTAGRAM) need a provider client that is not configured: FAILED_PRECONDITION.
- DEVICE_ID: nothing to prove; always verified, and the latest link wins (a device changes
  hands; a device id is not a credential of a registered customer).
A verified link takes an identifier away from a customer who holds it unverified
(IdentifierUnlinkedEvent reason CLAIMED); one held verified by someone else is ALREADY_EXISTS.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni_runtime.context import current_channel, current_principal
from omni_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OmniError,
)
from omni_runtime.listing import Field, Kind
from omni_runtime.validation import Checker
from services.identity import domain, events, metrics, store
from services.identity.api import convert
from services.identity.api.base import (
    CUSTOMER_PATTERN,
    IDENTIFIER_PATTERN,
    UNLINK,
    Customer,
    HandlerBase,
    customer_is_guest,
    identifier_key,
)
from services.identity.api.common import DOMAIN, identity_listing, scope, transact

LINK_PURPOSE = resources_pb2.ONE_TIME_CODE_PURPOSE_LINK_IDENTIFIER
ATTESTABLE = frozenset({domain.LOYALTY_CARD, domain.FACEBOOK, domain.INSTAGRAM, domain.WHATSAPP})
IDENTIFIERS = identity_listing(
    fields={
        "kind": Field(Kind.ENUM, resources_pb2.IdentifierKind, sql=store.identifiers.c.kind),
        "verified": Field(Kind.BOOL, sql=store.identifiers.c.verified),
        "primary": Field(Kind.BOOL, sql=store.identifiers.c.is_primary),
    },
    order_by={"create_time": store.identifiers.c.create_time, "kind": store.identifiers.c.kind},
    default_order="create_time",
    tiebreak=[store.identifiers.c.id],
)


def _trusted_attester(subject: str) -> bool:
    """Staff and channel backends may attest an identifier; customers may not."""
    return subject.startswith(("staffMembers/", "serviceClients/"))


class _LostGuestRace(Exception):
    """Rolls back a guest whose identifier a concurrent ResolveIdentity linked first."""


def _guest_login_identifier(name: str) -> FailedPrecondition:
    return customer_is_guest(name, "a guest cannot hold an e-mail address or phone number; register instead")


class IdentifierHandlers(HandlerBase):
    async def ListIdentifiers(
        self, request: pb.ListIdentifiersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIdentifiersResponse:
        check = Checker()
        check.name("parent", request.parent, CUSTOMER_PATTERN)
        check.raise_if_invalid()
        query = IDENTIFIERS.parse(request, scope=(request.parent,))
        async with self.d.db.transaction() as session:
            row = await self.customer_row(session, request.parent)
            statement = select(store.identifiers).where(store.identifiers.c.customer_id == row.id)
            rows, token = await query.page(session, statement)
        return pb.ListIdentifiersResponse(
            identifiers=[convert.identifier(r) for r in rows], next_page_token=token
        )

    async def StartIdentifierVerification(
        self, request: pb.StartIdentifierVerificationRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.OneTimeCodeChallenge:
        check = Checker()
        check.name("parent", request.parent, CUSTOMER_PATTERN)
        key = identifier_key(check, "identifier", request.identifier, domain.LOGIN_KINDS)
        check.length("language_code", request.language_code, max_len=35)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        assert key is not None
        kind, value = key

        async def body(session: AsyncSession) -> resources_pb2.OneTimeCodeChallenge | OmniError:
            row = await self.customer_row(session, request.parent, usable=True)
            if row.state == Customer.STATE_GUEST:
                raise _guest_login_identifier(request.parent)
            return await self.issue_challenge(
                session,
                purpose=LINK_PURPOSE,
                kind=kind,
                value=value,
                customer_id=row.id,
                real=True,
                allow_registration=False,
                language_code=request.language_code,
            )

        return await transact(
            self.d.db, scope("StartIdentifierVerification"), request, resources_pb2.OneTimeCodeChallenge, body
        )

    async def LinkIdentifier(
        self, request: pb.LinkIdentifierRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Identifier:
        check = Checker()
        check.name("parent", request.parent, CUSTOMER_PATTERN)
        key = identifier_key(check, "identifier", request.identifier, domain.KNOWN_KINDS)
        proof = request.proof.WhichOneof("proof") if request.HasField("proof") else None
        if proof == "one_time_code":
            check.require("proof.one_time_code.challenge_id", request.proof.one_time_code.challenge_id)
            check.require("proof.one_time_code.code", request.proof.one_time_code.code)
            if key is not None and key[0] not in domain.LOGIN_KINDS:
                check.fail(
                    "proof", "a one-time code proves only e-mail addresses and phone numbers", "WRONG_PROOF"
                )
        elif (
            proof == "provider_access_token"
            and key is not None
            and key[0]
            not in (
                domain.FACEBOOK,
                domain.INSTAGRAM,
            )
        ):
            check.fail(
                "proof", "a provider access token proves only Facebook and Instagram ids", "WRONG_PROOF"
            )
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        assert key is not None
        kind, value = key
        subject = current_principal.get().subject

        async def body(session: AsyncSession) -> resources_pb2.Identifier | OmniError:
            customer = await self.customer_row(session, request.parent, for_update=True, usable=True)
            if customer.state == Customer.STATE_GUEST and kind in domain.LOGIN_KINDS:
                raise _guest_login_identifier(request.parent)
            verified = kind == domain.DEVICE_ID
            if proof == "one_time_code":
                wrong = InvalidArgument(
                    [
                        FieldViolation(
                            "proof.one_time_code.code", "is wrong or has expired", "INVALID_ONE_TIME_CODE"
                        )
                    ]
                )
                answered = await self.answer_challenge(
                    session,
                    request.proof.one_time_code.challenge_id,
                    request.proof.one_time_code.code,
                    LINK_PURPOSE,
                    expect=(customer.id, kind, value),
                    wrong=wrong,
                )
                if isinstance(answered, OmniError):
                    return answered
                verified = True
            elif proof == "provider_access_token":
                raise FailedPrecondition(
                    "checking provider access tokens is not configured; "
                    "have the channel backend attest instead",
                    reason="PROVIDER_VERIFICATION_UNAVAILABLE",
                    domain=DOMAIN,
                )
            elif request.attested and kind in ATTESTABLE and _trusted_attester(subject):
                verified = True
            return await self._link(
                session, customer.id, kind, value, verified=verified, primary=request.primary
            )

        return await transact(self.d.db, scope("LinkIdentifier"), request, resources_pb2.Identifier, body)

    async def _link(
        self, session: AsyncSession, customer_id: str, kind: int, value: str, *, verified: bool, primary: bool
    ) -> resources_pb2.Identifier:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        existing = await store.identifier_by_key(session, kind, value, for_update=True)
        primaries = (
            await session.execute(
                select(store.identifiers.c.id, store.identifiers.c.verified).where(
                    store.identifiers.c.customer_id == customer_id,
                    store.identifiers.c.kind == kind,
                    store.identifiers.c.is_primary.is_(True),
                )
            )
        ).all()
        has_verified_primary = any(p.verified for p in primaries)
        auto_primary = not primaries or (kind in domain.LOGIN_KINDS and verified and not has_verified_primary)
        if existing is not None and existing.customer_id == customer_id:
            changed = False
            if verified and not existing.verified:
                await session.execute(
                    update(store.identifiers)
                    .where(store.identifiers.c.id == existing.id)
                    .values(verified=True, verify_time=now)
                )
                changed = True
            if (primary or auto_primary) and not existing.is_primary:
                await self.make_primary(session, customer_id, kind, existing.id)
                changed = True
            row = await store.identifier_by_key(session, kind, value)
            if changed:
                await self.d.outbox.emit(session, events.identifier_linked(row))
            return convert.identifier(row)
        if existing is not None:
            if kind == domain.DEVICE_ID or (verified and not existing.verified):
                await self.claim_from(session, existing)
            else:
                raise AlreadyExists(
                    "another customer holds this identifier",
                    reason="IDENTIFIER_ALREADY_LINKED",
                    domain=DOMAIN,
                    metadata={"kind": resources_pb2.IdentifierKind.Name(kind)},  # type: ignore[arg-type]
                )
        values = self.identifier_values(
            customer_id,
            kind,
            value,
            verified=verified,
            primary=False,
            linked_by=current_principal.get().subject,
            channel=current_channel.get(),
            now=now,
        )
        if not await store.insert_identifier(session, values):
            raise AlreadyExists(
                "another customer linked this identifier at the same moment",
                reason="IDENTIFIER_ALREADY_LINKED",
                domain=DOMAIN,
            )
        if primary or auto_primary:
            await self.make_primary(session, customer_id, kind, values["id"])
        row = await store.identifier_by_key(session, kind, value)
        await self.d.outbox.emit(session, events.identifier_linked(row))
        return convert.identifier(row)

    async def UnlinkIdentifier(
        self, request: pb.UnlinkIdentifierRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        check = Checker()
        parts = check.name("name", request.name, IDENTIFIER_PATTERN)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> empty_pb2.Empty:
            customer = await self.customer_row(session, f"customers/{parts['customer']}", for_update=True)
            row = (
                await session.execute(
                    select(store.identifiers)
                    .where(
                        store.identifiers.c.id == parts["identifier"],
                        store.identifiers.c.customer_id == customer.id,
                    )
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound(request.name, domain=DOMAIN)
            if row.kind in domain.LOGIN_KINDS and customer.state in (
                Customer.STATE_ACTIVE,
                Customer.STATE_LOCKED,
            ):
                others = (
                    await session.execute(
                        select(func.count()).where(
                            store.identifiers.c.customer_id == customer.id,
                            store.identifiers.c.kind.in_(tuple(domain.LOGIN_KINDS)),
                            store.identifiers.c.id != row.id,
                        )
                    )
                ).scalar_one()
                if not others:
                    raise FailedPrecondition(
                        "this is the customer's last e-mail address or phone number; link another first",
                        reason="LAST_LOGIN_IDENTIFIER",
                        domain=DOMAIN,
                        violations=[
                            ("LAST_LOGIN_IDENTIFIER", request.name, "the customer could no longer log in")
                        ],
                    )
            await session.execute(store.identifiers.delete().where(store.identifiers.c.id == row.id))
            await self.d.outbox.emit(session, events.identifier_unlinked(row, UNLINK.REASON_UNLINKED))
            if row.is_primary:
                await self._promote_primary(session, customer.id, row.kind)
            return empty_pb2.Empty()

        return await transact(self.d.db, scope("UnlinkIdentifier"), request, empty_pb2.Empty, body)

    async def _promote_primary(self, session: AsyncSession, customer_id: str, kind: int) -> None:
        """After the primary of a kind goes, the oldest verified one (else the oldest) takes over."""
        successor = (
            await session.execute(
                select(store.identifiers.c.id)
                .where(store.identifiers.c.customer_id == customer_id, store.identifiers.c.kind == kind)
                .order_by(store.identifiers.c.verified.desc(), store.identifiers.c.create_time)
                .limit(1)
            )
        ).first()
        if successor is not None:
            await self.make_primary(session, customer_id, kind, successor.id)
            row = (
                await session.execute(select(store.identifiers).where(store.identifiers.c.id == successor.id))
            ).one()
            await self.d.outbox.emit(session, events.identifier_linked(row))

    async def ResolveIdentity(
        self, request: pb.ResolveIdentityRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveIdentityResponse:
        check = Checker()
        key = identifier_key(check, "identifier", request.identifier, domain.KNOWN_KINDS)
        check.raise_if_invalid()
        assert key is not None
        kind, value = key
        include_unverified = request.include_unverified or request.create_guest
        response = await self._resolve(kind, value, include_unverified)
        if response is not None:
            return response
        if request.create_guest and await self._create_guest_holding(kind, value):
            created = await self._resolve(kind, value, True)
            assert created is not None
            created.guest_created = True
            return created
        # Created by a concurrent call meanwhile, or nobody holds it.
        response = await self._resolve(kind, value, include_unverified)
        if response is None:
            raise NotFound(
                "customers/-/identifiers/-",
                "no customer holds this identifier",
                domain=DOMAIN,
                reason="IDENTITY_NOT_FOUND",
            )
        return response

    async def _resolve(
        self, kind: int, value: str, include_unverified: bool
    ) -> pb.ResolveIdentityResponse | None:
        async with self.d.db.read() as reader:  # one statement (the POS and call-center path)
            found = await store.resolve(reader, kind, value)
            if found is None or not (found.identifier_verified or include_unverified):
                return None
            identifier = SimpleNamespace(
                **{
                    name.removeprefix("identifier_"): v
                    for name, v in found._mapping.items()
                    if name.startswith("identifier_")
                }
            )
            customer: Any = found
            for _ in range(8):  # merged guests resolve to the customer they were merged into
                if customer.state != Customer.STATE_MERGED or not customer.merged_into:
                    break
                target = await store.customer_view(reader, customer.merged_into)
                if target is None:
                    break
                customer = target
        return pb.ResolveIdentityResponse(
            customer=convert.customer(customer, customer.primary_email or "", customer.primary_phone or ""),
            identifier=convert.identifier(identifier),
        )

    async def _create_guest_holding(self, kind: int, value: str) -> bool:
        """A guest customer holding ``(kind, value)`` unverified (a device id is always verified):
        the customer of a message from a handle nobody holds. False when a concurrent call created
        one first (its guest is the answer; this call's guest is rolled back)."""
        now = datetime.now(UTC)
        channel = current_channel.get()
        guest_id = domain.new_id()
        try:
            async with self.d.db.transaction() as session:
                await session.execute(
                    store.customers.insert().values(
                        id=guest_id,
                        state=Customer.STATE_GUEST,
                        origin_channel=channel.channel,
                        origin_store=channel.store,
                        origin_device=channel.device,
                        create_time=now,
                        update_time=now,
                    )
                )
                values = self.identifier_values(
                    guest_id,
                    kind,
                    value,
                    verified=kind == domain.DEVICE_ID,
                    primary=True,
                    linked_by=current_principal.get().subject,
                    channel=channel,
                    now=now,
                )
                if not await store.insert_identifier(session, values):
                    raise _LostGuestRace
                row = await store.identifier_by_key(session, kind, value)
                await self.d.outbox.emit(session, events.identifier_linked(row))
        except _LostGuestRace:
            return False
        metrics.GUESTS_FROM_IDENTIFIERS.inc()
        return True
