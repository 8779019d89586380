"""Domain values ↔ protobuf messages of omni.cart.v1 (nothing else lives here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from omni.cart.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2, money_pb2
from omni_runtime.context import ChannelInfo
from omni_runtime.timestamps import to_proto as ts
from services.cart.domain.model import AppliedCode, Cart, ChannelRef, Fulfillment, Line, Method


def from_ts(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def money(currency: str, minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, minor_units=minor)


def channel_ref(info: ChannelInfo) -> ChannelRef:
    return ChannelRef(info.channel, info.store, info.device)


def channel_proto(ref: ChannelRef) -> channel_pb2.ChannelContext:
    return channel_pb2.ChannelContext(channel=ref.channel, store=ref.store, device=ref.device)  # type: ignore[arg-type]


def fulfillment_proto(f: Fulfillment) -> r.LineFulfillment:
    return r.LineFulfillment(
        method=int(f.method),  # type: ignore[arg-type]
        pickup_store=f.pickup_store,
        pickup_store_display_name=f.pickup_store_name,
    )


def fulfillment_from_proto(f: r.LineFulfillment) -> Fulfillment:
    """UNSPECIFIED means SHIP on input (contract)."""
    if f.method == r.FULFILLMENT_METHOD_PICKUP:
        return Fulfillment(Method.PICKUP, f.pickup_store)
    return Fulfillment(Method.SHIP)


def line_proto(line: Line, currency: str) -> r.CartLine:
    return r.CartLine(
        line_id=line.line_id,
        item=line.item,
        title=line.title,
        quantity=line.quantity,
        unit_price=money(currency, line.unit_price),
        price_time=ts(line.price_time),
        line_total=money(currency, line.line_total),
        fulfillment=fulfillment_proto(line.fulfillment),
        added_by=channel_proto(line.added_by),
        create_time=ts(line.create_time),
        update_time=ts(line.update_time),
    )


def applied_proto(code: AppliedCode, currency: str) -> r.AppliedPromotion:
    return r.AppliedPromotion(
        code=code.code,
        promotion=code.promotion,
        display_name=code.display_name,
        discount=money(currency, code.discount if code.applicable else 0),
        applicable=code.applicable,
        ineligibility_reason=int(code.reason),  # type: ignore[arg-type]
    )


def cart_proto(cart: Cart, default_currency: str = "") -> r.Cart:
    currency = cart.currency or default_currency
    out = r.Cart(
        name=cart.name,
        lines=[line_proto(line, currency) for line in cart.lines],
        promotions=[applied_proto(code, currency) for code in cart.codes],
        currency_code=currency,
        subtotal=money(currency, cart.subtotal),
        discount=money(currency, cart.discount),
        total=money(currency, cart.total),
        item_count=cart.item_count,
        last_channel=channel_proto(cart.last_channel),
        etag=cart.etag,
    )
    if cart.create_time is not None:
        out.create_time.CopyFrom(ts(cart.create_time))
    if cart.update_time is not None:
        out.update_time.CopyFrom(ts(cart.update_time))
    return out


def promotion_proto(row: Any) -> r.Promotion:
    out = r.Promotion(
        name=f"promotions/{row.id}",
        code=row.code,
        display_name=row.display_name,
        minimum_subtotals=[money(c, v) for c, v in sorted((row.minimum_subtotals or {}).items())],
        items=list(row.items or ()),
        usage_limit=row.usage_limit,
        usage_limit_per_customer=row.usage_limit_per_customer,
        usage_count=row.usage_count,
        active=row.active,
        etag=str(row.version),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
    )
    if row.percent_off_bp is not None:
        out.percent_off_basis_points = row.percent_off_bp
    else:
        out.amount_off.CopyFrom(
            r.AmountOff(amounts=[money(c, v) for c, v in sorted((row.amount_off or {}).items())])
        )
    if row.start_time is not None:
        out.start_time.CopyFrom(ts(row.start_time))
    if row.end_time is not None:
        out.end_time.CopyFrom(ts(row.end_time))
    return out
