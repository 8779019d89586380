"""What the cart service does when identity erases a customer (GDPR art. 17).

The active cart and the customer's promotion uses are deleted. Orders are bookkeeping records the
business must keep (a legal obligation), so they stay — totals, lines and states intact — with
what identifies the person removed: the shipping address and the device id of the channel they
ordered from. The customer's name in them is identity's tombstone id, which no longer leads to a
person. Registered through ``omni_runtime.events.erasure.consume_erasures`` (main.py), which
writes the receipt in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import resources_pb2 as r
from omni_runtime import names
from services.cart import store


async def erase_customer(session: AsyncSession, customer_name: str) -> Mapping[str, int]:
    parsed = names.parse("customers/{customer}", customer_name)
    if parsed is None:
        return {}
    customer = parsed["customer"]
    carts = await session.execute(delete(store.carts).where(store.carts.c.customer == customer))
    uses = await session.execute(
        delete(store.promotion_usage).where(store.promotion_usage.c.customer == customer)
    )
    rows = await session.execute(
        select(store.orders.c.id, store.orders.c.doc)
        .where(store.orders.c.customer == customer)
        .with_for_update()
    )
    pseudonymised = 0
    for row in rows:
        order = r.Order.FromString(row.doc)
        if not order.HasField("shipping_address") and not order.channel.device:
            continue  # erased before, or never held anything personal
        order.ClearField("shipping_address")
        order.channel.device = ""
        await session.execute(
            store.orders.update().where(store.orders.c.id == row.id).values(doc=order.SerializeToString())
        )
        pseudonymised += 1
    return {
        "carts": carts.rowcount,
        "promotion_uses": uses.rowcount,
        "orders_pseudonymised": pseudonymised,
    }
