"""Back-in-stock subscriptions: a customer waits for an item, at one store or anywhere.

A subscription fires once (see ``events.MovementJournal``), when a movement turns ``available``
positive where it was 0. Creating one while the item is already available does not fire it:
the customer can buy now, and firing at once would send a pointless message. At most one
ACTIVE subscription exists per (customer, item, location), enforced by a partial unique
index, so a double tap on "notify me" returns the same subscription.

Subscriptions are named outside ``customers/…``; requests that act on one carry the customer
for the ownership check, and a subscription of another customer is NOT_FOUND (not
PERMISSION_DENIED), so its existence is not revealed.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.context import current_channel
from omni_runtime.db.idempotency import once
from omni_runtime.errors import FailedPrecondition, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery, by_name
from omni_runtime.timestamps import utcnow
from services.inventory import convert, store
from services.inventory.catalogue import existing, require_found
from services.inventory.domain import DOMAIN
from services.inventory.txn import Unit

ACTIVE = res.STOCK_SUBSCRIPTION_STATE_ACTIVE
CANCELLED = res.STOCK_SUBSCRIPTION_STATE_CANCELLED

_SUB = store.stock_subscriptions
SUBSCRIPTIONS = Listing(
    fields={
        "state": Field(Kind.ENUM, res.StockSubscriptionState, sql=_SUB.c.state),
        "item": Field(Kind.STRING, sql=by_name(_SUB.c.item_sku, "items/")),
        "location": Field(Kind.STRING, sql=by_name(func.coalesce(_SUB.c.location_id, ""), "locations/")),
        "create_time": Field(Kind.TIMESTAMP, sql=_SUB.c.create_time),
    },
    order_by={"create_time": _SUB.c.create_time},
    default_order="create_time desc",
    tiebreak=[_SUB.c.id],
    domain=DOMAIN,
)


def _owned(row: store.AnyRow | None, customer: str, subscription_id: str) -> store.AnyRow:
    if row is None or (customer and row.customer != customer):
        raise NotFound(convert.subscription_name(subscription_id), domain=DOMAIN)
    return row


async def create(
    unit: Unit, request: svc.CreateStockSubscriptionRequest, sku: str, location_id: str
) -> res.StockSubscription:
    async def work(session: AsyncSession) -> res.StockSubscription:
        found = await existing(session, [sku], [location_id] if location_id else [])
        require_found([sku], [location_id] if location_id else [], found)
        if not found[0][sku].active:
            raise FailedPrecondition(
                f"{convert.item_name(sku)} is not active; it cannot be subscribed to",
                reason="ITEM_INACTIVE",
                domain=DOMAIN,
                metadata={"item": convert.item_name(sku)},
                violations=[("ITEM_INACTIVE", "stock_subscription.item", "the item is not active")],
            )
        sub = store.stock_subscriptions
        channel = current_channel.get()
        customer = request.stock_subscription.customer
        row = (
            await session.execute(
                insert(sub)
                .values(
                    id=uuid.uuid4().hex,
                    customer=customer,
                    item_sku=sku,
                    location_id=location_id or None,
                    state=ACTIVE,
                    channel=channel.channel,
                    channel_store=channel.store,
                    channel_device=channel.device,
                    create_time=utcnow(),
                )
                .on_conflict_do_nothing()
                .returning(*sub.c)
            )
        ).first()
        if row is None:  # the customer already waits for this item here: return that subscription
            row = (
                await session.execute(
                    select(sub).where(
                        sub.c.customer == customer,
                        sub.c.item_sku == sku,
                        func.coalesce(sub.c.location_id, "") == location_id,
                        sub.c.state == ACTIVE,
                    )
                )
            ).one()
        return convert.subscription(row)

    return await once(
        unit.db, "inventory.CreateStockSubscription", request.request_id, request, res.StockSubscription, work
    )


async def get(unit: Unit, subscription_id: str, customer: str) -> res.StockSubscription:
    sub = store.stock_subscriptions
    async with unit.db.transaction() as session:
        row = (await session.execute(select(sub).where(sub.c.id == subscription_id))).first()
    return convert.subscription(_owned(row, customer, subscription_id))


async def list_(unit: Unit, customer: str, query: ListQuery) -> svc.ListStockSubscriptionsResponse:
    statement = select(_SUB)
    if customer:
        statement = statement.where(_SUB.c.customer == customer)
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, statement)
    return svc.ListStockSubscriptionsResponse(
        stock_subscriptions=[convert.subscription(r) for r in rows], next_page_token=token
    )


async def cancel(
    unit: Unit, request: svc.DeleteStockSubscriptionRequest, subscription_id: str
) -> res.StockSubscription:
    """Soft delete: ACTIVE becomes CANCELLED; FIRED and CANCELLED are returned unchanged."""

    async def work(session: AsyncSession) -> res.StockSubscription:
        sub = store.stock_subscriptions
        row = _owned(
            (await session.execute(select(sub).where(sub.c.id == subscription_id).with_for_update())).first(),
            request.customer,
            subscription_id,
        )
        if row.state != ACTIVE:
            return convert.subscription(row)
        updated = (
            await session.execute(
                update(sub)
                .where(sub.c.id == subscription_id)
                .values(state=CANCELLED, end_time=utcnow())
                .returning(*sub.c)
            )
        ).one()
        return convert.subscription(updated)

    return await once(
        unit.db, "inventory.DeleteStockSubscription", request.request_id, request, res.StockSubscription, work
    )
