"""Tables of the cart service and the queries on them (SQLAlchemy Core, own MetaData).

A cart is one row holding its lines and codes as JSON: every mutation locks that row
(``SELECT … FOR UPDATE``), changes the document in Python and writes it back with
``version + 1``. The row lock is what makes the etag check and the write one atomic step, and
what serialises two channels editing the same cart while carts of different customers never wait
on each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from omni.cart.v1 import resources_pb2 as r
from omni_runtime.db.engine import Reader, defer_statement
from omni_runtime.listing import ListQuery
from services.cart.domain import orders as order_rules
from services.cart.domain.model import AppliedCode, Cart, ChannelRef, Line
from services.cart.domain.promotions import PromotionRule

metadata = MetaData()
TS = DateTime(timezone=True)

carts = Table(
    "carts",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("codes", JSONB, nullable=False),
    Column("last_channel", JSONB, nullable=False),
    Column("next_line", Integer, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("create_time", TS),
    Column("update_time", TS),
    Column("abandoned_at", TS),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("code", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("percent_off_bp", Integer),
    Column("amount_off", JSONB),
    Column("minimum_subtotals", JSONB, nullable=False),
    Column("items", ARRAY(Text), nullable=False),
    Column("start_time", TS),
    Column("end_time", TS),
    Column("usage_limit", Integer, nullable=False),
    Column("usage_limit_per_customer", Integer, nullable=False),
    Column("usage_count", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

promotion_usage = Table(
    "promotion_usage",
    metadata,
    Column("promotion_id", Text, primary_key=True),
    Column("customer", Text, primary_key=True),
    Column("uses", Integer, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("order_number", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("channel_store", Text, nullable=False),
    Column("pickup_stores", ARRAY(Text), nullable=False),
    Column("group_states", ARRAY(SmallInteger), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    Column("doc", LargeBinary, nullable=False),
)

# Orders per customer (kept with each order placed): a customer's order total without a count.
order_counts = Table(
    "order_counts",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("orders", BigInteger, nullable=False),
)

checkout_attempts = Table(
    "checkout_attempts",
    metadata,
    Column("order_name", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("started", TS, nullable=False),
)


# --------------------------------------------------------------------------------------------
# Carts
# --------------------------------------------------------------------------------------------


def cart_from_row(row: Any) -> Cart:
    return Cart(
        customer=row.customer,
        version=row.version,
        currency=row.currency,
        lines=[Line.from_json(item) for item in row.lines],
        codes=[AppliedCode.from_json(item) for item in row.codes],
        last_channel=ChannelRef.from_json(row.last_channel),
        create_time=row.create_time,
        update_time=row.update_time,
        next_line=row.next_line,
    )


_READ_CART = select(carts).where(carts.c.customer == bindparam("customer"))  # built once


async def read_cart(session: Reader, customer: str) -> Cart:
    """The cart as stored, or the empty cart every customer implicitly has (version 0)."""
    row = (await session.execute(_READ_CART, {"customer": customer})).first()
    return cart_from_row(row) if row is not None else Cart(customer=customer)


async def lock_carts(session: AsyncSession, customers: Sequence[str]) -> dict[str, Cart]:
    """Lock the rows of these carts (creating missing ones), always in the same order so two
    transactions locking the same pair (a merge and its mirror) cannot deadlock."""
    wanted = sorted(set(customers))
    query = select(carts).where(carts.c.customer.in_(wanted)).order_by(carts.c.customer).with_for_update()
    rows = {row.customer: row for row in (await session.execute(query)).all()}
    missing = [c for c in wanted if c not in rows]
    if missing:
        await session.execute(
            insert(carts)
            .values(
                [
                    {
                        "customer": c,
                        "version": 0,
                        "currency": "",
                        "lines": [],
                        "codes": [],
                        "last_channel": {},
                        "next_line": 1,
                        "item_count": 0,
                    }
                    for c in missing
                ]
            )
            .on_conflict_do_nothing()
        )
        rows = {row.customer: row for row in (await session.execute(query)).all()}
    return {c: cart_from_row(rows[c]) for c in wanted}


_LOCK_CART = select(carts).where(carts.c.customer == bindparam("customer")).with_for_update()  # built once


async def lock_cart(session: AsyncSession, customer: str) -> Cart:
    """Lock one cart's row (creating it if needed): every change of a cart starts here."""
    row = (await session.execute(_LOCK_CART, {"customer": customer})).first()
    if row is not None:
        return cart_from_row(row)
    return (await lock_carts(session, [customer]))[customer]


_SAVE_CART = (
    "UPDATE carts SET version = :version, currency = :currency,"
    " lines = CAST(CAST(:lines AS text) AS jsonb), codes = CAST(CAST(:codes AS text) AS jsonb),"
    " last_channel = CAST(CAST(:last_channel AS text) AS jsonb), next_line = :next_line,"
    " item_count = :item_count, create_time = :create_time, update_time = :update_time,"
    " abandoned_at = NULL WHERE customer = :customer"
)


def save_cart(session: AsyncSession, cart: Cart) -> None:
    """Write a locked cart back; the caller has already bumped ``cart.version``.

    The write goes with the transaction's last statement (``defer_statement``): it is the
    cart's final change in its transaction, and with the events and the stored answer it costs
    no round trip of its own. Any change starts a new idle period for the abandonment sweep.
    """
    defer_statement(
        session,
        _SAVE_CART,
        {
            "customer": cart.customer,
            "version": cart.version,
            "currency": cart.currency,
            "lines": json.dumps([line.to_json() for line in cart.lines]),
            "codes": json.dumps([code.to_json() for code in cart.codes]),
            "last_channel": json.dumps(cart.last_channel.to_json()),
            "next_line": cart.next_line,
            "item_count": cart.item_count,
            "create_time": cart.create_time,
            "update_time": cart.update_time,
        },
    )


async def claim_idle_carts(session: AsyncSession, idle_before: datetime, limit: int) -> list[Cart]:
    """Non-empty carts unchanged since ``idle_before`` and not yet reported, locked; replicas
    sweeping at once skip each other's rows."""
    rows = (
        await session.execute(
            select(carts)
            .where(carts.c.item_count > 0, carts.c.abandoned_at.is_(None), carts.c.update_time < idle_before)
            .order_by(carts.c.update_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    return [cart_from_row(row) for row in rows]


async def mark_abandoned(session: AsyncSession, customers: Iterable[str], when: datetime) -> None:
    await session.execute(
        update(carts).where(carts.c.customer.in_(list(customers))).values(abandoned_at=when)
    )


# --------------------------------------------------------------------------------------------
# Promotions
# --------------------------------------------------------------------------------------------


def rule_from_row(row: Any) -> PromotionRule:
    return PromotionRule(
        name=f"promotions/{row.id}",
        code=row.code,
        display_name=row.display_name,
        percent_off_bp=row.percent_off_bp,
        amount_off=dict(row.amount_off or {}),
        minimum_subtotals=dict(row.minimum_subtotals or {}),
        items=frozenset(row.items or ()),
        start_time=row.start_time,
        end_time=row.end_time,
        usage_limit=row.usage_limit,
        usage_limit_per_customer=row.usage_limit_per_customer,
        usage_count=row.usage_count,
        active=row.active,
    )


async def promotion_row(session: AsyncSession, promotion_id: str, *, lock: bool = False) -> Any:
    query = select(promotions).where(promotions.c.id == promotion_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def promotion_by_code(session: AsyncSession, code: str) -> Any:
    return (await session.execute(select(promotions).where(promotions.c.code == code))).first()


async def rules_for(session: AsyncSession, names: Iterable[str]) -> dict[str, PromotionRule]:
    ids = [n.removeprefix("promotions/") for n in names]
    if not ids:
        return {}
    rows = (await session.execute(select(promotions).where(promotions.c.id.in_(ids)))).all()
    return {f"promotions/{row.id}": rule_from_row(row) for row in rows}


async def customer_uses(session: AsyncSession, customer: str, names: Iterable[str]) -> dict[str, int]:
    ids = [n.removeprefix("promotions/") for n in names]
    if not ids:
        return {}
    rows = (
        await session.execute(
            select(promotion_usage.c.promotion_id, promotion_usage.c.uses).where(
                promotion_usage.c.customer == customer, promotion_usage.c.promotion_id.in_(ids)
            )
        )
    ).all()
    return {f"promotions/{row.promotion_id}": row.uses for row in rows}


async def count_usage(session: AsyncSession, rule: PromotionRule, customer: str) -> bool:
    """Count one order's use of a promotion, atomically against both limits; False when a
    concurrent order took the last use."""
    promotion_id = rule.name.removeprefix("promotions/")
    counted = (
        await session.execute(
            update(promotions)
            .where(
                promotions.c.id == promotion_id,
                (promotions.c.usage_limit == 0) | (promotions.c.usage_count < promotions.c.usage_limit),
            )
            .values(usage_count=promotions.c.usage_count + 1)
            .returning(promotions.c.usage_limit_per_customer)
        )
    ).first()
    if counted is None:
        return False
    per_customer = counted.usage_limit_per_customer
    upsert = insert(promotion_usage).values(promotion_id=promotion_id, customer=customer, uses=1)
    stmt = upsert.on_conflict_do_update(
        index_elements=[promotion_usage.c.promotion_id, promotion_usage.c.customer],
        set_={"uses": promotion_usage.c.uses + 1},
        where=(promotion_usage.c.uses < per_customer) if per_customer else None,
    ).returning(promotion_usage.c.uses)
    used = (await session.execute(stmt)).first()
    return used is not None


# --------------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------------


async def next_order_number(session: AsyncSession, year: int) -> str:
    seq = (await session.execute(select(func.nextval("order_number_seq")))).scalar_one()
    return f"O-{year % 100:02d}-{seq:06d}"


def _order_values(order: r.Order, version: int) -> dict[str, Any]:
    return {
        "state": order.state,
        "pickup_stores": order_rules.pickup_stores(order),
        "group_states": [g.state for g in order.fulfillment_groups],
        "version": version,
        "update_time": order.update_time.ToDatetime(tzinfo=UTC),
        "doc": order.SerializeToString(),
    }


_INSERT_ORDER = (
    "INSERT INTO orders (id, customer, order_number, state, channel, channel_store, pickup_stores,"
    " group_states, version, create_time, update_time, doc) VALUES (:id, :customer, :order_number,"
    " :state, :channel, :channel_store, CAST(:pickup_stores AS text[]),"
    " CAST(:group_states AS smallint[]), :version, :create_time, :update_time, :doc)"
)


def insert_order(session: AsyncSession, order_id: str, customer: str, order: r.Order) -> None:
    """Store a placed order, with the transaction's last statement (nothing reads it back)."""
    defer_statement(
        session,
        _INSERT_ORDER,
        {
            "id": order_id,
            "customer": customer,
            "order_number": order.order_number,
            "channel": order.channel.channel,
            "channel_store": order.channel.store,
            "create_time": order.create_time.ToDatetime(tzinfo=UTC),
            **_order_values(order, int(order.etag)),
        },
    )
    defer_statement(session, _COUNT_ORDER, {"customer": customer})


_COUNT_ORDER = (
    "INSERT INTO order_counts (customer, orders) VALUES (:customer, 1)"
    " ON CONFLICT (customer) DO UPDATE SET orders = order_counts.orders + 1"
)


async def load_order(session: Reader, customer: str, order_id: str, *, lock: bool = False) -> r.Order | None:
    query = select(orders.c.doc).where(orders.c.id == order_id, orders.c.customer == customer)
    if lock:
        query = query.with_for_update()
    doc = (await session.execute(query)).scalar_one_or_none()
    return r.Order.FromString(doc) if doc is not None else None


async def save_order(session: AsyncSession, order_id: str, order: r.Order) -> None:
    await session.execute(
        update(orders).where(orders.c.id == order_id).values(**_order_values(order, int(order.etag)))
    )


async def list_orders(
    session: Reader,
    query: ListQuery,
    conditions: Sequence[ColumnElement[bool]],
    *,
    customer: str | None = None,
) -> tuple[list[r.Order], str, int]:
    """One page of the orders matching ``conditions`` and the query, its next token, and the total.

    All of one ``customer``'s orders (no other condition, no filter) are counted by
    ``order_counts``, read in the page's own statement: one round trip and a flat cost however
    many orders there are. Any other listing counts what matches.
    """
    statement = select(orders.c.doc)
    counted = customer is not None and not query.conditions and len(conditions) == 1
    if counted:
        total_of = select(order_counts.c.orders).where(order_counts.c.customer == customer).scalar_subquery()
        statement = statement.add_columns(func.coalesce(total_of, 0).label("total_size"))
    rows, token = await query.page(session, statement.where(*conditions))
    if counted and rows:
        total = int(rows[0].total_size)
    else:
        total = await query.count(session, orders, *conditions)
    return [r.Order.FromString(row.doc) for row in rows], token, total


async def order_exists(session: AsyncSession, order_name: str) -> bool:
    order_id = order_name.rsplit("/", 1)[-1]
    found = await session.execute(select(orders.c.id).where(orders.c.id == order_id))
    return found.first() is not None


# --------------------------------------------------------------------------------------------
# Checkout journal
# --------------------------------------------------------------------------------------------


async def start_attempt(session: AsyncSession, order_name: str, customer: str) -> None:
    """Journal a checkout before it reserves. Committed asynchronously: the row only helps
    the sweeper clean up after a crash of the cart process, and PostgreSQL writes it within a
    fraction of a second (it is lost only if PostgreSQL itself crashes before then, when the
    reservations fall back on their expiry); the checkout is spared a WAL flush."""
    await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    stmt = insert(checkout_attempts).values(order_name=order_name, customer=customer, started=func.now())
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[checkout_attempts.c.order_name], set_={"started": func.now()}
        )
    )


async def finish_attempt(session: AsyncSession, order_name: str, *, deferred: bool = False) -> None:
    """Drop a checkout's journal row (``deferred``: with the transaction's last statement)."""
    if deferred:
        defer_statement(
            session,
            "DELETE FROM checkout_attempts WHERE order_name = :order_name",
            {"order_name": order_name},
        )
        return
    await session.execute(delete(checkout_attempts).where(checkout_attempts.c.order_name == order_name))


async def stale_attempts(session: AsyncSession, started_before: datetime, limit: int) -> list[str]:
    rows = await session.execute(
        select(checkout_attempts.c.order_name)
        .where(checkout_attempts.c.started < started_before)
        .order_by(checkout_attempts.c.started)
        .limit(limit)
    )
    return list(rows.scalars())
