"""What identity publishes (event builders) and consumes (profile's merges and unmerges).

Published through the transactional outbox, so an event exists exactly when its change was
committed. Subjects derive from message names (``CustomerRegisteredEvent`` →
``omni.identity.customer_registered``). The one-time code travels only inside
OneTimeCodeIssuedEvent, never in logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2, resources_pb2
from omni.profile.v1 import events_pb2 as profile_events_pb2
from omni.profile.v1 import resources_pb2 as profile_resources_pb2
from omni.type.v1 import channel_pb2
from omni_runtime.context import ChannelInfo
from omni_runtime.events.consumer import Event
from omni_runtime.events.outbox import Outbox
from omni_runtime.timestamps import to_proto, utcnow
from services.identity import store

if TYPE_CHECKING:
    from services.identity.sessions import SessionManager

log = logging.getLogger("omni.identity.events")
Customer = resources_pb2.Customer
UNLINKED = events_pb2.IdentifierUnlinkedEvent


def ts(moment: datetime | None = None) -> timestamp_pb2.Timestamp:
    """The moment as a Timestamp; now when none is given (event occur times)."""
    return to_proto(moment or utcnow())


def customer_name(customer_id: str) -> str:
    return f"customers/{customer_id}"


def identifier_name(customer_id: str, identifier_id: str) -> str:
    return f"customers/{customer_id}/identifiers/{identifier_id}"


def customer_registered(
    customer_id: str,
    display_name: str,
    keys: Iterable[tuple[int, str]],
    *,
    verified: bool,
    upgraded: bool,
    channel: ChannelInfo,
) -> events_pb2.CustomerRegisteredEvent:
    return events_pb2.CustomerRegisteredEvent(
        customer=customer_name(customer_id),
        display_name=display_name,
        identifiers=[resources_pb2.IdentifierKey(kind=k, value=v) for k, v in keys],  # type: ignore[arg-type]
        verified=verified,
        upgraded_from_guest=upgraded,
        channel=channel.to_proto(),
        occur_time=ts(),
    )


def guest_upgraded(
    guest_id: str, customer_id: str, *, merged: bool, channel: ChannelInfo
) -> events_pb2.GuestUpgradedEvent:
    return events_pb2.GuestUpgradedEvent(
        guest=customer_name(guest_id),
        customer=customer_name(customer_id),
        outcome=(
            events_pb2.GuestUpgradedEvent.OUTCOME_MERGED
            if merged
            else events_pb2.GuestUpgradedEvent.OUTCOME_UPGRADED
        ),
        channel=channel.to_proto(),
        occur_time=ts(),
    )


def identifier_linked(row: Any) -> events_pb2.IdentifierLinkedEvent:
    """From an ``identity_identifiers`` row (as it is after the change)."""
    return events_pb2.IdentifierLinkedEvent(
        identifier=identifier_name(row.customer_id, row.id),
        customer=customer_name(row.customer_id),
        kind=row.kind,
        value=row.value,
        verified=row.verified,
        primary=row.is_primary,
        channel=channel_pb2.ChannelContext(
            channel=row.source_channel, store=row.source_store, device=row.source_device
        ),
        occur_time=ts(),
    )


def identifier_unlinked(row: Any, reason: int) -> events_pb2.IdentifierUnlinkedEvent:
    return events_pb2.IdentifierUnlinkedEvent(
        identifier=identifier_name(row.customer_id, row.id),
        customer=customer_name(row.customer_id),
        kind=row.kind,
        value=row.value,
        reason=reason,  # type: ignore[arg-type]
        occur_time=ts(),
    )


def customer_erased(customer_id: str, requested_by: str) -> events_pb2.CustomerErasedEvent:
    return events_pb2.CustomerErasedEvent(
        customer=customer_name(customer_id), requested_by=requested_by, occur_time=ts()
    )


def one_time_code_issued(
    challenge_id: str,
    customer_id: str | None,
    kind: int,
    value: str,
    code: str,
    expire: datetime,
    purpose: int,
    language_code: str,
    channel: ChannelInfo,
) -> events_pb2.OneTimeCodeIssuedEvent:
    return events_pb2.OneTimeCodeIssuedEvent(
        challenge_id=challenge_id,
        customer=customer_name(customer_id) if customer_id else "",
        destination=resources_pb2.IdentifierKey(kind=kind, value=value),  # type: ignore[arg-type]
        code=code,
        expire_time=ts(expire),
        purpose=purpose,  # type: ignore[arg-type]
        language_code=language_code,
        channel=channel.to_proto(),
        occur_time=ts(),
    )


def session_started(
    session_name: str, principal: str, auth_method: int, channel: ChannelInfo, *, guest: bool
) -> events_pb2.SessionStartedEvent:
    return events_pb2.SessionStartedEvent(
        session=session_name,
        principal=principal,
        auth_method=auth_method,  # type: ignore[arg-type]
        channel=channel.to_proto(),
        guest=guest,
        occur_time=ts(),
    )


def session_revoked(session_name: str, principal: str, reason: int) -> events_pb2.SessionRevokedEvent:
    return events_pb2.SessionRevokedEvent(
        session=session_name,
        principal=principal,
        reason=reason,  # type: ignore[arg-type]
        occur_time=ts(),
    )


# --- consumed ------------------------------------------------------------------------------------


async def move_identifier(
    outbox: Outbox, session: AsyncSession, row: Any, to_customer: str, *, primary: bool
) -> None:
    """Give an identifier to another customer: IdentifierUnlinkedEvent MOVED from the holder,
    then IdentifierLinkedEvent for the new one (merges and unmerges that profile decided)."""
    await outbox.emit(session, identifier_unlinked(row, UNLINKED.REASON_MOVED))
    await session.execute(
        update(store.identifiers)
        .where(store.identifiers.c.id == row.id)
        .values(customer_id=to_customer, is_primary=primary)
    )
    moved = SimpleNamespace(**{**row._asdict(), "customer_id": to_customer, "is_primary": primary})
    await outbox.emit(session, identifier_linked(moved))


class ProfileMerges:
    """Profile's ProfilesMergedEvent, reason DUPLICATE: the two records were one person.

    Identity follows profile's decision: the source customer's identifiers move to the target
    (IdentifierUnlinkedEvent MOVED, then IdentifierLinkedEvent), the source becomes MERGED with
    ``merged_into`` = target (so ResolveIdentity of anything it held finds the target) and its
    sessions end. Reason GUEST_LOGIN is ignored: identity made that merge itself. Redeliveries
    are skipped by the runtime's inbox; a source already merged or erased is left as it is.
    """

    SUBJECTS = ("omni.profile.profiles_merged",)

    def __init__(self, outbox: Outbox, sessions: SessionManager) -> None:
        self.outbox = outbox
        self.sessions = sessions

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        merged = event.decode(profile_events_pb2.ProfilesMergedEvent)
        if merged.reason == profile_resources_pb2.MERGE_REASON_GUEST_LOGIN:
            return
        source_id = merged.source_customer.removeprefix("customers/")
        target_id = merged.target_customer.removeprefix("customers/")
        if not source_id or not target_id or source_id == target_id:
            log.warning("ignoring a profile merge without two distinct customers (event %s)", event.id)
            return
        rows = {}
        for customer_id in sorted((source_id, target_id)):  # one lock order: no deadlocks
            rows[customer_id] = await store.customer_for_update(session, customer_id)
        source, target = rows[source_id], rows[target_id]
        usable = (Customer.STATE_ACTIVE, Customer.STATE_LOCKED, Customer.STATE_GUEST)
        if source is None or target is None or source.state not in usable or target.state not in usable:
            log.info("profile merge %s -> %s: nothing for identity to do", source_id, target_id)
            return
        taken = {row.kind for row in await store.customer_identifiers(session, target_id) if row.is_primary}
        for row in await store.customer_identifiers(session, source_id):
            await move_identifier(
                self.outbox, session, row, target_id, primary=row.is_primary and row.kind not in taken
            )
        await store.bump_customer(session, source_id, state=Customer.STATE_MERGED, merged_into=target_id)
        await self.sessions.revoke_all(
            session, customer_name(source_id), events_pb2.SessionRevokedEvent.REASON_PRINCIPAL_DISABLED
        )


# Profile's contact-point kinds that are identity's identifiers (push tokens are not).
IDENTIFIER_OF_CONTACT_POINT = {
    profile_resources_pb2.ContactPoint.KIND_EMAIL: resources_pb2.IDENTIFIER_KIND_EMAIL,
    profile_resources_pb2.ContactPoint.KIND_PHONE: resources_pb2.IDENTIFIER_KIND_PHONE,
    profile_resources_pb2.ContactPoint.KIND_FACEBOOK: resources_pb2.IDENTIFIER_KIND_FACEBOOK,
    profile_resources_pb2.ContactPoint.KIND_WHATSAPP: resources_pb2.IDENTIFIER_KIND_WHATSAPP,
    profile_resources_pb2.ContactPoint.KIND_INSTAGRAM: resources_pb2.IDENTIFIER_KIND_INSTAGRAM,
}


class ProfileUnmerges:
    """Profile's ProfilesUnmergedEvent (any reason): a merge was undone.

    The source customer, if it is still MERGED into the target, is usable again: ACTIVE when it
    had registered (a password or a register time), GUEST otherwise, ``merged_into`` cleared.
    The target's identifiers named in
    ``returned_contact_points`` move back to it (IdentifierUnlinkedEvent MOVED, then
    IdentifierLinkedEvent), primary when the source has no primary of that kind; the target
    keeps every other identifier, including those it gained since the merge. Sessions are not
    restored: the source logs in again. A source that is no longer merged into the target
    (erased, unmerged before) is left as it is.
    """

    SUBJECTS = ("omni.profile.profiles_unmerged",)

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        unmerged = event.decode(profile_events_pb2.ProfilesUnmergedEvent)
        source_id = unmerged.source_customer.removeprefix("customers/")
        target_id = unmerged.target_customer.removeprefix("customers/")
        if not source_id or not target_id or source_id == target_id:
            log.warning("ignoring a profile unmerge without two distinct customers (event %s)", event.id)
            return
        rows = {}
        for customer_id in sorted((source_id, target_id)):  # the merge consumer's lock order
            rows[customer_id] = await store.customer_for_update(session, customer_id)
        source = rows[source_id]
        if source is None or source.state != Customer.STATE_MERGED or source.merged_into != target_id:
            log.info("profile unmerge %s <- %s: nothing for identity to do", target_id, source_id)
            return
        returned = {
            (IDENTIFIER_OF_CONTACT_POINT[p.kind], p.value)
            for p in unmerged.returned_contact_points
            if p.kind in IDENTIFIER_OF_CONTACT_POINT
        }
        taken: set[int] = set()
        for row in await store.customer_identifiers(session, target_id):
            if (row.kind, row.value) not in returned:
                continue
            await move_identifier(self.outbox, session, row, source_id, primary=row.kind not in taken)
            taken.add(row.kind)
        # Guests never set a password nor registered; every registered customer did one or both.
        registered = source.register_time is not None or source.password_hash is not None
        state = Customer.STATE_ACTIVE if registered else Customer.STATE_GUEST
        await store.bump_customer(session, source_id, state=state, merged_into=None)
