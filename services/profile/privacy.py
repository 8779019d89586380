"""GDPR: erasure across the platform with a receipt per service, and the data export.

Erasure, end to end (docs in README.md):
1. EraseCustomerData erases profile's own data in one transaction, opens the customer's
   erasure (a receipt per expected service: the configured peers, pending; profile's own: done)
   and publishes CustomerDataErasedEvent (trigger DIRECT_REQUEST) through the outbox.
2. Identity consumes that event and erases the customer; its CustomerErasedEvent is identity's
   receipt and the one trigger every other service follows (``consume_erasures``).
3. Each service publishes its CustomerErasureProcessedEvent (DONE or FAILED); profile files
   them here. The erasure is COMPLETED when every expected receipt is DONE, FAILED when one is.
An erasure started at identity (EraseCustomer) reaches profile as CustomerErasedEvent and takes
the same path from step 1 (with trigger CUSTOMER_ERASED, which identity ignores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import erasure_pb2
from omni_runtime.context import current_principal
from omni_runtime.db import idempotency
from omni_runtime.db.engine import after_commit
from omni_runtime.errors import NotFound
from omni_runtime.events.outbox import Outbox
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto, utcnow
from services.profile import convert, metrics
from services.profile.profiles import DOMAIN, load
from services.profile.segments import Segments
from services.profile.store import (
    BLANK_PERSONAL_DATA,
    addresses,
    channel_usage,
    erasure_receipts,
    erasures,
    interactions,
    merges,
    profiles,
    purchases,
)
from services.profile.timeline import lock_profiles

Receipt = r.ErasureServiceReceipt
Trigger = ev.CustomerDataErasedEvent.Trigger
SELF = "profile"


async def erase_rows(session: AsyncSession, customer: str) -> dict[str, int]:
    """Delete or blank everything profile holds about a customer (idempotent)."""
    counts: dict[str, int] = {}
    for name, table in (("addresses", addresses), ("interactions", interactions), ("purchases", purchases)):
        result = await session.execute(table.delete().where(table.c.customer == customer))
        counts[name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    await session.execute(channel_usage.delete().where(channel_usage.c.customer == customer))
    # Merge records hold copies of both sides' data: the erased side's copy goes too.
    await session.execute(
        merges.delete().where((merges.c.source == customer) | (merges.c.target == customer))
    )
    await session.execute(
        update(profiles)
        .where(profiles.c.customer == customer)
        .values(
            state=r.Profile.STATE_ERASED,
            **BLANK_PERSONAL_DATA,
            order_count=0,
            spend={},
            spend_orders={},
            first_purchase_time=None,
            last_purchase_time=None,
            avg_days_between=0,
            channels=[],
            last_interaction_time=None,
            version=profiles.c.version + 1,
            update_time=utcnow(),
        )
    )
    counts["profiles"] = 1
    return counts


class Privacy:
    def __init__(self, runtime: Runtime, segments: Segments, peers: Sequence[str]) -> None:
        assert runtime.db is not None and runtime.outbox is not None
        self.db = runtime.db
        self.outbox: Outbox = runtime.outbox
        self.segments = segments
        self.peers = tuple(peers)

    async def erase(
        self, session: AsyncSession, customer: str, trigger: int, requested_by: str
    ) -> tuple[dict[str, int], bool]:
        """Erase locally and open the erasure; (counts, whether anything was erased now)."""
        await lock_profiles(session, [customer])
        state = (
            await session.execute(select(profiles.c.state).where(profiles.c.customer == customer))
        ).scalar_one()
        await self.open(session, customer, requested_by)
        if state == r.Profile.STATE_ERASED:
            return {}, False
        await self.segments.remove(session, [customer])
        counts = await erase_rows(session, customer)
        await self.file(
            session,
            erasure_pb2.ErasureReceipt(
                customer=f"customers/{customer}",
                service=SELF,
                state=erasure_pb2.ErasureReceipt.STATE_DONE,
                erased_counts=counts,
                occur_time=to_proto(utcnow()),
            ),
        )
        await self.outbox.emit(
            session,
            ev.CustomerDataErasedEvent(
                customer=f"customers/{customer}",
                trigger=trigger,  # type: ignore[arg-type]
                occur_time=to_proto(utcnow()),
                requested_by=requested_by,
            ),
        )
        return counts, True

    async def open(self, session: AsyncSession, customer: str, requested_by: str) -> None:
        """The erasure row and a pending receipt per expected service (idempotent)."""
        await session.execute(
            insert(erasures)
            .values(customer=customer, requested_by=requested_by, request_time=utcnow())
            .on_conflict_do_nothing()
        )
        await session.execute(
            insert(erasure_receipts)
            .values(
                [
                    {"customer": customer, "service": s, "state": Receipt.STATE_PENDING}
                    for s in (SELF, *self.peers)
                ]
            )
            .on_conflict_do_nothing()
        )

    async def file(self, session: AsyncSession, receipt: erasure_pb2.ErasureReceipt) -> None:
        """Record one service's receipt; close the erasure when nothing is pending."""
        customer = receipt.customer.removeprefix("customers/")
        if not customer or not receipt.service:
            return
        await self.open(session, customer, "")
        # Receipts arrive on several consumers at once: the erasure row's lock orders them, so
        # the last one to commit sees every other receipt and closes the erasure.
        await session.execute(
            select(erasures.c.customer).where(erasures.c.customer == customer).with_for_update()
        )
        state = (
            Receipt.STATE_DONE
            if receipt.state == erasure_pb2.ErasureReceipt.STATE_DONE
            else Receipt.STATE_FAILED
        )
        stamp: datetime = (
            receipt.occur_time.ToDatetime(tzinfo=utcnow().tzinfo)
            if receipt.HasField("occur_time")
            else utcnow()
        )
        stmt = insert(erasure_receipts).values(
            customer=customer,
            service=receipt.service,
            state=state,
            failure_reason=receipt.failure_reason,
            counts=dict(receipt.erased_counts),
            complete_time=stamp,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[erasure_receipts.c.customer, erasure_receipts.c.service],
                set_={k: stmt.excluded[k] for k in ("state", "failure_reason", "counts", "complete_time")},
            )
        )
        pending = (
            await session.execute(
                select(func.count()).where(
                    erasure_receipts.c.customer == customer, erasure_receipts.c.state == Receipt.STATE_PENDING
                )
            )
        ).scalar_one()
        await session.execute(
            update(erasures)
            .where(erasures.c.customer == customer)
            .values(complete_time=None if pending else func.coalesce(erasures.c.complete_time, func.now()))
        )
        label = "done" if state == Receipt.STATE_DONE else "failed"
        after_commit(session, lambda: metrics.ERASURE_RECEIPTS.labels(receipt.service, label).inc())

    async def erasure(self, session: AsyncSession, customer: str) -> r.Erasure | None:
        row = (await session.execute(select(erasures).where(erasures.c.customer == customer))).first()
        if row is None:
            return None
        receipts = (
            await session.execute(
                select(erasure_receipts)
                .where(erasure_receipts.c.customer == customer)
                .order_by(erasure_receipts.c.service)
            )
        ).all()
        out = r.Erasure(
            name=f"customers/{customer}/erasure",
            customer=f"customers/{customer}",
            requested_by=row.requested_by,
            request_time=to_proto(row.request_time),
        )
        for rec in receipts:
            item = Receipt(
                service=rec.service,
                state=rec.state,
                failure_reason=rec.failure_reason,
                erased_counts=dict(rec.counts),
            )
            if rec.complete_time is not None:
                item.complete_time.CopyFrom(to_proto(rec.complete_time))
            out.receipts.append(item)
        states = {rec.state for rec in receipts}
        if Receipt.STATE_FAILED in states:
            out.state = r.Erasure.STATE_FAILED
        elif Receipt.STATE_PENDING in states:
            out.state = r.Erasure.STATE_IN_PROGRESS
        else:
            out.state = r.Erasure.STATE_COMPLETED
        if row.complete_time is not None and out.state != r.Erasure.STATE_IN_PROGRESS:
            out.complete_time.CopyFrom(to_proto(row.complete_time))
        return out

    async def get_erasure(self, customer: str) -> r.Erasure:
        async with self.db.transaction() as session:
            found = await self.erasure(session, customer)
        if found is None:
            raise NotFound(f"customers/{customer}/erasure", domain=DOMAIN)
        return found

    async def erase_request(
        self, request: svc.EraseCustomerDataRequest, customer: str
    ) -> svc.EraseCustomerDataResponse:
        requested_by = current_principal.get().subject

        async def work(session: AsyncSession) -> svc.EraseCustomerDataResponse:
            counts, _ = await self.erase(session, customer, Trigger.TRIGGER_DIRECT_REQUEST, requested_by)
            erasure = await self.erasure(session, customer)
            return svc.EraseCustomerDataResponse(
                profile=await load(session, customer),
                erased_address_count=counts.get("addresses", 0),
                erased_interaction_count=counts.get("interactions", 0),
                erase_time=to_proto(utcnow()),
                erasure=erasure,
            )

        return await idempotency.once(
            self.db,
            f"profile.EraseCustomerData:{customer}",
            request.request_id,
            request,
            svc.EraseCustomerDataResponse,
            work,
        )

    # -- export -------------------------------------------------------------------------------

    async def export_page(
        self, customer: str, page_size: int, after_id: int, first: bool, at: datetime
    ) -> tuple[svc.ExportCustomerDataResponse, int | None]:
        """One page of profile's own part, as of ``at`` (interactions recorded later are left
        for a later export); returns the page and the last interaction id when more follow."""
        from services.profile.store import segment_members, segments

        out = svc.ExportCustomerDataResponse(export_time=to_proto(at))
        async with self.db.transaction() as session:
            if first:
                out.profile.CopyFrom(await load(session, customer))
                rows = (
                    await session.execute(
                        select(addresses)
                        .where(addresses.c.customer == customer)
                        .order_by(addresses.c.create_time)
                    )
                ).all()
                out.addresses.extend(convert.address(row) for row in rows)
                members = (
                    await session.execute(
                        select(segments.c.id, segments.c.display_name, segment_members.c.join_time)
                        .join(segments, segments.c.id == segment_members.c.segment)
                        .where(segment_members.c.customer == customer)
                    )
                ).all()
                out.segments.extend(
                    r.SegmentMembership(
                        segment=f"segments/{m.id}",
                        display_name=m.display_name,
                        join_time=to_proto(m.join_time),
                    )
                    for m in members
                )
            scope = (interactions.c.customer == customer, interactions.c.create_time <= at)
            out.total_interaction_count = (
                await session.execute(select(func.count()).where(*scope))
            ).scalar_one()
            rows = (
                await session.execute(
                    select(interactions)
                    .where(*scope, interactions.c.id > after_id)
                    .order_by(interactions.c.id)
                    .limit(page_size + 1)
                )
            ).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        out.interactions.extend(convert.interaction(row) for row in rows)
        return out, (rows[-1].id if more and rows else None)


def counts_of(data: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in data.items()}
