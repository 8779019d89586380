"""Interactions recorded by channel backends (RecordInteraction) and read back (Get, List)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime.context import current_channel, current_principal
from omni_runtime.db import idempotency
from omni_runtime.errors import NotFound
from omni_runtime.listing import Field, Kind, Listing
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto, utcnow
from services.profile import convert
from services.profile.profiles import DOMAIN, not_active
from services.profile.store import interactions
from services.profile.timeline import NewInteraction, PurchaseChange, Timeline, resolve

FUTURE_BOUND = timedelta(minutes=5)
IT = r.Interaction

INTERACTIONS = Listing(
    fields={
        "channel.channel": Field(Kind.ENUM, enum=channel_pb2.Channel, sql=interactions.c.channel),
        "channel.store": Field(Kind.STRING, sql=interactions.c.store),
        "type": Field(Kind.ENUM, enum=IT.Type, sql=interactions.c.type),
        "occur_time": Field(Kind.TIMESTAMP, sql=interactions.c.occur_time),
        "subject": Field(Kind.STRING, sql=interactions.c.subject),
        "staff_member": Field(Kind.STRING, sql=interactions.c.staff_member),
        "visit_id": Field(Kind.STRING, sql=interactions.c.visit_id),
    },
    prefixes={
        "attributes.": Field(
            Kind.STRING,
            sql=lambda c: (
                interactions.c.attributes[c.key].astext == c.value
                if c.op == "="
                else interactions.c.attributes[c.key].astext.is_distinct_from(c.value)
            ),
        )
    },
    order_by={"occur_time": interactions.c.occur_time},
    default_order="occur_time desc",
    tiebreak=(interactions.c.id,),
    domain=DOMAIN,
    max_page_size=500,
)


def purchase_of(customer: str, interaction: r.Interaction, ident_hint: str) -> PurchaseChange | None:
    """An ORDER_PLACED or ORDER_RETURNED interaction's effect on the purchase figures."""
    attrs = interaction.attributes
    order = interaction.subject or ident_hint
    try:
        if interaction.type == IT.TYPE_ORDER_PLACED:
            return PurchaseChange(
                order_key=order,
                customer=customer,
                currency=attrs.get("currency_code", ""),
                total=int(attrs.get("total_minor_units", "0") or 0),
                channel=interaction.channel.channel,
                placed_time=interaction.occur_time.ToDatetime().replace(tzinfo=utcnow().tzinfo),
            )
        if (
            interaction.type == IT.TYPE_ORDER_RETURNED
            and interaction.subject
            and attrs.get("refund_minor_units")
        ):
            return PurchaseChange(order_key=order, customer=customer, refund=int(attrs["refund_minor_units"]))
    except ValueError:
        return None
    return None


class Interactions:
    def __init__(self, runtime: Runtime, timeline: Timeline) -> None:
        assert runtime.db is not None and runtime.outbox is not None
        self.db = runtime.db
        self.outbox = runtime.outbox
        self.timeline = timeline

    async def record(self, request: svc.RecordInteractionRequest, customer: str) -> r.Interaction:
        async def work(session: AsyncSession) -> r.Interaction:
            where = (await resolve(session, [customer]))[customer]
            if where is None:
                raise not_active(customer, r.Profile.STATE_ERASED)
            given = request.interaction
            channel = given.channel if given.HasField("channel") else current_channel.get().to_proto()
            occur = (
                given.occur_time.ToDatetime().replace(tzinfo=utcnow().tzinfo)
                if given.HasField("occur_time")
                else utcnow()
            )
            new = NewInteraction(
                customer=customer,
                type=given.type,
                occur_time=occur,
                channel=channel.channel,
                store=channel.store,
                device=channel.device,
                subject=given.subject,
                summary=given.summary.strip(),
                attributes=dict(given.attributes),
                staff_member=given.staff_member,
                visit_id=given.visit_id,
                recorded_by=current_principal.get().subject,
            )
            recorded = r.Interaction()
            recorded.CopyFrom(given)
            recorded.occur_time.CopyFrom(to_proto(occur))
            recorded.channel.CopyFrom(channel)
            change = purchase_of(customer, recorded, "")
            [(_, ident)] = await self.timeline.apply(session, [new], [change] if change else [])
            if change is not None and not change.order_key:
                change.order_key = f"customers/{customer}/interactions/{ident}"
                await self.timeline.apply(session, [], [change])
            row = (await session.execute(select(interactions).where(interactions.c.id == ident))).one()
            out = convert.interaction(row)
            await self.outbox.emit(
                session,
                ev.InteractionRecordedEvent(
                    customer=f"customers/{row.customer}", interaction=out, occur_time=to_proto(utcnow())
                ),
            )
            return out

        return await idempotency.once(
            self.db, f"profile.RecordInteraction:{customer}", request.request_id, request, r.Interaction, work
        )

    async def get(self, customer: str, ident: str) -> r.Interaction:
        async with self.db.transaction() as session:
            row = None
            if ident.isdigit():
                row = (
                    await session.execute(
                        select(interactions).where(
                            interactions.c.id == int(ident), interactions.c.customer == customer
                        )
                    )
                ).first()
        if row is None:
            raise NotFound(f"customers/{customer}/interactions/{ident}", domain=DOMAIN)
        return convert.interaction(row)

    async def list(self, request: svc.ListInteractionsRequest, customer: str) -> svc.ListInteractionsResponse:
        query = INTERACTIONS.parse(request, scope=(customer,))
        async with self.db.transaction() as session:
            rows, token = await query.page(
                session, select(interactions).where(interactions.c.customer == customer)
            )
        return svc.ListInteractionsResponse(
            interactions=[convert.interaction(row) for row in rows], next_page_token=token
        )
