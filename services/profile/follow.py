"""What profile does, beyond the timeline, on identity's events (contact points mirrored from
identifiers, guest merges, erasures) and on every service's erasure receipt."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2 as id_ev
from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import erasure_pb2
from omni_runtime.events.consumer import Event
from omni_runtime.timestamps import to_proto, utcnow
from services.profile.events import KIND_OF_IDENTIFIER, _customer
from services.profile.merges import Merges
from services.profile.privacy import Privacy
from services.profile.profiles import Profiles, profile_row

log = logging.getLogger("omni.profile.follow")
Work = Callable[[AsyncSession], Awaitable[None]] | None
RECEIPT_EVENTS = {
    f"omni.{s}.v1.CustomerErasureProcessedEvent" for s in ("cart", "inventory", "messaging", "preferences")
}


class Follow:
    def __init__(self, profiles: Profiles, merges: Merges, privacy: Privacy) -> None:
        self.profiles = profiles
        self.merges = merges
        self.privacy = privacy

    def identity(self, event: Event) -> Work:
        kind = event.event_type.rsplit(".", 1)[-1]
        if kind == "CustomerRegisteredEvent":
            e = event.decode(id_ev.CustomerRegisteredEvent)
            return lambda session: self._registered(session, e)
        if kind in ("IdentifierLinkedEvent", "IdentifierUnlinkedEvent"):
            linked = kind == "IdentifierLinkedEvent"
            message: Any = event.decode(
                id_ev.IdentifierLinkedEvent if linked else id_ev.IdentifierUnlinkedEvent
            )
            point_kind = KIND_OF_IDENTIFIER.get(message.kind)
            customer = _customer(message.customer)
            if point_kind is None or not customer:
                return None
            point = r.ContactPoint(
                kind=point_kind,
                value=message.value,
                verified=bool(getattr(message, "verified", False)),
                primary=bool(getattr(message, "primary", False)),
            )
            return lambda session: self.profiles.sync_contact_point(
                session, customer, point, remove=not linked
            )
        if kind == "GuestUpgradedEvent":
            g = event.decode(id_ev.GuestUpgradedEvent)
            if g.outcome != id_ev.GuestUpgradedEvent.OUTCOME_MERGED:
                return None
            guest, customer = _customer(g.guest), _customer(g.customer)
            if not guest or not customer or guest == customer:
                return None
            return lambda session: self._guest_merged(session, customer, guest)
        if kind == "CustomerErasedEvent":
            erased = event.decode(id_ev.CustomerErasedEvent)
            customer = _customer(erased.customer)
            if not customer:
                return None
            return lambda session: self._erased(session, customer, erased)
        return None

    async def _registered(self, session: AsyncSession, e: id_ev.CustomerRegisteredEvent) -> None:
        customer = _customer(e.customer)
        if not customer:
            return
        row = await profile_row(session, customer, lock=True)
        if row.state != r.Profile.STATE_ACTIVE:
            return
        values = {"display_name": e.display_name} if e.display_name and not row.display_name else {}
        if values or row.create_time is None:
            await self.profiles.write(session, customer, values, list(values) or ["create_time"])
        for ident in e.identifiers:
            kind = KIND_OF_IDENTIFIER.get(ident.kind)
            if kind is not None:
                point = r.ContactPoint(kind=kind, value=ident.value, verified=e.verified)
                await self.profiles.sync_contact_point(session, customer, point)

    async def _guest_merged(self, session: AsyncSession, customer: str, guest: str) -> None:
        target = await profile_row(session, customer, lock=True)
        source = await profile_row(session, guest, lock=True)
        if target.state != r.Profile.STATE_ACTIVE or source.state != r.Profile.STATE_ACTIVE:
            return  # merged before (a redelivery past the inbox's retention) or erased
        done = await self.merges.merge(session, customer, guest, r.MERGE_REASON_GUEST_LOGIN, automatic=True)
        if not done:
            log.warning(
                "guest %s not merged into %s: they hold different verified identifiers", guest, customer
            )

    async def _erased(self, session: AsyncSession, customer: str, erased: id_ev.CustomerErasedEvent) -> None:
        await self.privacy.erase(
            session, customer, ev.CustomerDataErasedEvent.TRIGGER_CUSTOMER_ERASED, erased.requested_by
        )
        # Identity's CustomerErasedEvent is identity's own receipt.
        at = erased.occur_time if erased.HasField("occur_time") else to_proto(utcnow())
        await self.privacy.file(
            session,
            erasure_pb2.ErasureReceipt(
                customer=erased.customer,
                service="identity",
                state=erasure_pb2.ErasureReceipt.STATE_DONE,
                occur_time=at,
            ),
        )

    def receipt(self, event: Event) -> Work:
        if event.event_type not in RECEIPT_EVENTS:
            return None
        from importlib import import_module

        service = event.event_type.split(".")[1]
        module = import_module(f"omni.{service}.v1.events_pb2")
        receipt = event.decode(module.CustomerErasureProcessedEvent).receipt
        return lambda session: self.privacy.file(session, receipt)
