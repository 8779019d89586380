"""Rows ↔ protobuf messages of omni.profile.v1 (no rules, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format

from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import address_pb2, channel_pb2, money_pb2
from omni_runtime.timestamps import to_proto
from services.profile.domain.profile import primary_value

PROFILE = "customers/{customer}/profile"
ADDRESS = "customers/{customer}/addresses/{address}"
INTERACTION = "customers/{customer}/interactions/{interaction}"
SEGMENT = "segments/{segment}"


def etag(version: int) -> str:
    return f'W/"{version}"'


def profile_name(customer: str) -> str:
    return f"customers/{customer}/profile"


def contact_points(data: Iterable[Mapping[str, Any]]) -> list[r.ContactPoint]:
    return [json_format.ParseDict(dict(item), r.ContactPoint()) for item in data]


def contact_points_json(points: Iterable[r.ContactPoint]) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(p, preserving_proto_field_name=True) for p in points]


def profile(row: Any, *, usage: Iterable[Any] = (), defaults: tuple[str, str] = ("", "")) -> r.Profile:
    """A profile from its row (None: the empty profile nobody wrote yet)."""
    if row is None:
        return r.Profile(state=r.Profile.STATE_ACTIVE, etag=etag(0))
    points = contact_points(row.contact_points)
    out = r.Profile(
        name=profile_name(row.customer),
        state=row.state,
        given_name=row.given_name,
        family_name=row.family_name,
        display_name=row.display_name,
        contact_points=points,
        primary_email=primary_value(points, r.ContactPoint.KIND_EMAIL),
        primary_phone=primary_value(points, r.ContactPoint.KIND_PHONE),
        language_code=row.language_code,
        traits=dict(row.traits),
        lifetime=lifetime(row, usage),
        merged_into=profile_name(row.merged_into) if row.merged_into else "",
        etag=etag(row.version),
    )
    if row.birthday_month:
        out.birthday.year, out.birthday.month, out.birthday.day = (
            row.birthday_year,
            row.birthday_month,
            row.birthday_day,
        )
    if defaults[0]:
        out.default_shipping_address = f"customers/{row.customer}/addresses/{defaults[0]}"
    if defaults[1]:
        out.default_billing_address = f"customers/{row.customer}/addresses/{defaults[1]}"
    if row.create_time is not None:
        out.create_time.CopyFrom(to_proto(row.create_time))
    if row.update_time is not None:
        out.update_time.CopyFrom(to_proto(row.update_time))
    return out


def lifetime(row: Any, usage: Iterable[Any]) -> r.LifetimeFigures:
    figures = r.LifetimeFigures(
        order_count=row.order_count,
        average_days_between_purchases=round(float(row.avg_days_between), 4),
        channels_used=[channel_usage(u) for u in usage],
    )
    for currency, total in sorted(row.spend.items()):
        figures.total_spend.append(money_pb2.Money(currency_code=currency, minor_units=int(total)))
        count = int(row.spend_orders.get(currency, 0))
        if count:
            figures.average_order_value.append(
                money_pb2.Money(currency_code=currency, minor_units=int(total) // count)
            )
    for name in ("first_purchase_time", "last_purchase_time", "last_interaction_time"):
        value = getattr(row, name)
        if value is not None:
            getattr(figures, name).CopyFrom(to_proto(value))
    if row.lifetime_time is not None:
        figures.compute_time.CopyFrom(to_proto(row.lifetime_time))
    return figures


def channel_usage(row: Any) -> r.ChannelUsage:
    return r.ChannelUsage(
        channel=row.channel,
        interaction_count=row.interaction_count,
        order_count=getattr(row, "order_count", 0) or 0,
        first_seen_time=to_proto(row.first_seen),
        last_seen_time=to_proto(row.last_seen),
    )


def address(row: Any) -> r.Address:
    return r.Address(
        name=f"customers/{row.customer}/addresses/{row.id}",
        display_name=row.display_name,
        postal_address=json_format.ParseDict(row.postal_address, address_pb2.PostalAddress()),
        phone=row.phone,
        instructions=row.instructions,
        default_shipping=row.default_shipping,
        default_billing=row.default_billing,
        create_time=to_proto(row.create_time),
        update_time=to_proto(row.update_time),
        etag=etag(row.version),
    )


def postal_json(value: address_pb2.PostalAddress) -> dict[str, Any]:
    return json_format.MessageToDict(value, preserving_proto_field_name=True)


def interaction(row: Any) -> r.Interaction:
    return r.Interaction(
        name=f"customers/{row.customer}/interactions/{row.id}",
        channel=channel_pb2.ChannelContext(channel=row.channel, store=row.store, device=row.device),
        type=row.type,
        occur_time=to_proto(row.occur_time),
        subject=row.subject,
        summary=row.summary,
        attributes=dict(row.attributes),
        staff_member=row.staff_member,
        visit_id=row.visit_id,
        recorded_by=row.recorded_by,
        create_time=to_proto(row.create_time),
    )
