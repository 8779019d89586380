"""What the preferences service consumes; what it publishes is built where the change happens
(consents.py, preferences.py) and always goes through the outbox in the same transaction.

- identity's GuestUpgradedEvent (MERGED) and profile's ProfilesMergedEvent: consent-safe merges;
  profile's ProfilesUnmergedEvent: the merge undone (merges.py says how).
- profile's ProfileUpdatedEvent and identity's IdentifierLinked/UnlinkedEvent: the contact-point
  projection (which channels reach the customer, verified or not).
- identity's CustomerErasedEvent: through the runtime's erasure fan-out (main.py, erasure.py).
Handlers ignore events about customers already erased, so nothing comes back after an erasure.
"""

from __future__ import annotations

import logging
from datetime import datetime

from google.protobuf import timestamp_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2 as identity_events
from omni.profile.v1 import events_pb2 as profile_events
from omni.profile.v1 import resources_pb2 as profile_res
from omni_runtime import names
from omni_runtime.context import ChannelInfo
from omni_runtime.events.consumer import Event
from omni_runtime.timestamps import utcnow
from services.preferences import contact_points, store
from services.preferences.domain import channels
from services.preferences.merges import merge_customers, unmerge_customers
from services.preferences.txn import Unit

log = logging.getLogger("omni.preferences.events")

GUEST_UPGRADED = "omni.identity.guest_upgraded"
IDENTIFIER_LINKED = "omni.identity.identifier_linked"
IDENTIFIER_UNLINKED = "omni.identity.identifier_unlinked"
PROFILE_UPDATED = "omni.profile.profile_updated"
PROFILES_MERGED = "omni.profile.profiles_merged"
PROFILES_UNMERGED = "omni.profile.profiles_unmerged"
CUSTOMER = "customers/{customer}"


def _customer_id(name: str) -> str | None:
    ids = names.parse(CUSTOMER, name)
    return ids["customer"] if ids else None


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    """The event's time; now for an event that carries none."""
    return stamp.ToDatetime(tzinfo=utcnow().tzinfo) if stamp.seconds or stamp.nanos else utcnow()


async def _erased(session: AsyncSession, customer_id: str) -> bool:
    cs = store.customer_states
    state = (await session.execute(select(cs.c.state).where(cs.c.customer_id == customer_id))).scalar()
    return state == store.ERASED


class Handlers:
    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    async def on_guest_upgraded(self, session: AsyncSession, event: Event) -> None:
        upgraded = event.decode(identity_events.GuestUpgradedEvent)
        if upgraded.outcome != identity_events.GuestUpgradedEvent.OUTCOME_MERGED:
            return  # upgraded in place: the consents already belong to the customer
        await self._merge(
            session,
            event,
            upgraded.guest,
            upgraded.customer,
            recorded_by=upgraded.customer,
            why="guest logged in",
            channel=upgraded.channel,
        )

    async def on_profiles_merged(self, session: AsyncSession, event: Event) -> None:
        merged = event.decode(profile_events.ProfilesMergedEvent)
        reason = profile_res.MergeReason.Name(merged.reason).removeprefix("MERGE_REASON_").lower()  # type: ignore[arg-type]
        await self._merge(
            session,
            event,
            merged.source_customer,
            merged.target_customer,
            recorded_by=merged.merged_by or merged.target_customer,
            why=f"profiles merged: {reason}",
            channel=None,
        )

    async def on_profile_merges(self, session: AsyncSession, event: Event) -> None:
        """Merges and unmerges on one consumer, so an unmerge is never applied before its merge."""
        if event.subject == PROFILES_UNMERGED:
            await self.on_profiles_unmerged(session, event)
        else:
            await self.on_profiles_merged(session, event)

    async def on_profiles_unmerged(self, session: AsyncSession, event: Event) -> None:
        unmerged = event.decode(profile_events.ProfilesUnmergedEvent)
        source_id, target_id = _customer_id(unmerged.source_customer), _customer_id(unmerged.target_customer)
        if source_id is None or target_id is None or source_id == target_id:
            log.warning("ignoring unmerge event %s", event.id)
            return
        restored = await unmerge_customers(
            session,
            self.unit,
            source_id=source_id,
            target_id=target_id,
            recorded_by=unmerged.unmerged_by or "serviceClients/omni-profile",
            channel=ChannelInfo(),
        )
        if restored is None:
            log.info("unmerge of customers/%s from customers/%s: no merge here to undo", source_id, target_id)

    async def _merge(
        self,
        session: AsyncSession,
        event: Event,
        source: str,
        target: str,
        *,
        recorded_by: str,
        why: str,
        channel: object | None,
    ) -> None:
        source_id, target_id = _customer_id(source), _customer_id(target)
        if source_id is None or target_id is None or source_id == target_id:
            log.warning("ignoring merge event %s of %r into %r", event.id, source, target)
            return
        if await _erased(session, source_id) or await _erased(session, target_id):
            return
        info = ChannelInfo()
        if channel is not None:
            ctx = channel
            info = ChannelInfo(ctx.channel, ctx.store, ctx.device)  # type: ignore[attr-defined]
        changed = await merge_customers(
            session,
            self.unit,
            source_id=source_id,
            target_id=target_id,
            recorded_by=recorded_by,
            why=why,
            channel=info,
        )
        log.info(
            "merged customers/%s into customers/%s: %d consent(s) changed", source_id, target_id, changed
        )

    async def on_profile_updated(self, session: AsyncSession, event: Event) -> None:
        updated = event.decode(profile_events.ProfileUpdatedEvent)
        customer_id = _customer_id(updated.customer)
        if customer_id is None or await _erased(session, customer_id):
            return
        points = [
            contact_points.Point(channel, cp.value, cp.verified, cp.primary)
            for cp in updated.snapshot.contact_points
            for channel in channels.PROFILE_KINDS.get(cp.kind, ())
        ]
        occur = _time(updated.occur_time)
        await contact_points.replace(session, customer_id, contact_points.PROFILE, points, occur)
        await contact_points.profile_language(session, customer_id, updated.snapshot.language_code, occur)

    async def on_identifier(self, session: AsyncSession, event: Event) -> None:
        if event.subject == IDENTIFIER_LINKED:
            linked = event.decode(identity_events.IdentifierLinkedEvent)
            customer, identifier, occur = linked.customer, linked.identifier, linked.occur_time
            points = [
                contact_points.Point(channel, linked.value, linked.verified, linked.primary)
                for channel in channels.IDENTIFIER_KINDS.get(linked.kind, ())
            ]
        else:
            unlinked = event.decode(identity_events.IdentifierUnlinkedEvent)
            customer, identifier, occur = unlinked.customer, unlinked.identifier, unlinked.occur_time
            points = []
        customer_id = _customer_id(customer)
        if customer_id is None or not identifier or await _erased(session, customer_id):
            return
        await contact_points.replace(session, customer_id, identifier, points, _time(occur))
