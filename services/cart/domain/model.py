"""The cart aggregate as plain data.

A cart is one document (its lines, its promotion codes and their last evaluation): it is read,
changed and written as a whole under one version number, so "one etag per cart" and "one
consistent total" come for free, and a mutation costs one row read and one row write.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

# Contract limits (cart_service.proto): quantity per line and promotion codes per cart.
MAX_LINE_QUANTITY = 999
MAX_PROMOTION_CODES = 5


class Method(IntEnum):
    """Mirror of omni.cart.v1.FulfillmentMethod (same numbers), so the domain needs no protobuf."""

    SHIP = 1
    PICKUP = 2


class Reason(IntEnum):
    """Mirror of omni.cart.v1.IneligibilityReason."""

    NONE = 0
    MINIMUM_SUBTOTAL_NOT_MET = 1
    NO_ELIGIBLE_ITEMS = 2
    CURRENCY_NOT_SUPPORTED = 3
    NOT_STARTED = 4
    ENDED = 5
    INACTIVE = 6
    USAGE_LIMIT_REACHED = 7
    CUSTOMER_LIMIT_REACHED = 8


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """Which touchpoint made a change (channel enum number, store location, device id)."""

    channel: int = 0
    store: str = ""
    device: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"c": self.channel, "s": self.store, "d": self.device}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ChannelRef:
        data = data or {}
        return cls(int(data.get("c", 0)), str(data.get("s", "")), str(data.get("d", "")))


@dataclass(frozen=True, slots=True)
class Fulfillment:
    """Ship, or pick up at ``pickup_store`` (``locations/…``); the display name is a copy."""

    method: Method = Method.SHIP
    pickup_store: str = ""
    pickup_store_name: str = ""

    @property
    def key(self) -> tuple[int, str]:
        """Two lines with the same item and this key are the same line."""
        return (int(self.method), self.pickup_store)

    @property
    def is_pickup(self) -> bool:
        return self.method is Method.PICKUP


SHIP = Fulfillment()


@dataclass(slots=True)
class Line:
    line_id: str
    item: str
    title: str
    quantity: int
    unit_price: int
    price_time: datetime
    fulfillment: Fulfillment
    added_by: ChannelRef
    create_time: datetime
    update_time: datetime

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.item, *self.fulfillment.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.line_id,
            "item": self.item,
            "title": self.title,
            "qty": self.quantity,
            "price": self.unit_price,
            "price_time": self.price_time.isoformat(),
            "method": int(self.fulfillment.method),
            "store": self.fulfillment.pickup_store,
            "store_name": self.fulfillment.pickup_store_name,
            "added_by": self.added_by.to_json(),
            "created": self.create_time.isoformat(),
            "updated": self.update_time.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Line:
        return cls(
            line_id=data["id"],
            item=data["item"],
            title=data.get("title", ""),
            quantity=int(data["qty"]),
            unit_price=int(data["price"]),
            price_time=datetime.fromisoformat(data["price_time"]),
            fulfillment=Fulfillment(
                Method(int(data.get("method", 1))), data.get("store", ""), data.get("store_name", "")
            ),
            added_by=ChannelRef.from_json(data.get("added_by")),
            create_time=datetime.fromisoformat(data["created"]),
            update_time=datetime.fromisoformat(data["updated"]),
        )


@dataclass(frozen=True, slots=True)
class AppliedCode:
    """A promotion code on the cart and what it gave at the cart's last evaluation."""

    code: str
    promotion: str  # promotions/{id}
    display_name: str = ""
    discount: int = 0
    applicable: bool = False
    reason: Reason = Reason.NONE

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "promotion": self.promotion,
            "name": self.display_name,
            "discount": self.discount,
            "ok": self.applicable,
            "reason": int(self.reason),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppliedCode:
        return cls(
            code=data["code"],
            promotion=data["promotion"],
            display_name=data.get("name", ""),
            discount=int(data.get("discount", 0)),
            applicable=bool(data.get("ok", False)),
            reason=Reason(int(data.get("reason", 0))),
        )


@dataclass(slots=True)
class Cart:
    """One customer's active cart. ``version`` is the etag; it only ever grows."""

    customer: str
    version: int = 0
    currency: str = ""
    lines: list[Line] = field(default_factory=list)
    codes: list[AppliedCode] = field(default_factory=list)
    last_channel: ChannelRef = field(default_factory=ChannelRef)
    create_time: datetime | None = None
    update_time: datetime | None = None
    next_line: int = 1

    @property
    def name(self) -> str:
        return f"customers/{self.customer}/cart"

    @property
    def etag(self) -> str:
        return etag_of(self.version)

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def subtotal(self) -> int:
        return sum(line.line_total for line in self.lines)

    @property
    def discount(self) -> int:
        """Sum of the applicable codes' discounts, never above the subtotal."""
        return min(self.subtotal, sum(c.discount for c in self.codes if c.applicable))

    @property
    def total(self) -> int:
        return self.subtotal - self.discount

    def line(self, line_id: str) -> Line | None:
        return next((line for line in self.lines if line.line_id == line_id), None)

    def new_line_id(self) -> str:
        line_id = f"l{self.next_line}"
        self.next_line += 1
        return line_id

    def copy(self) -> Cart:
        """A deep enough copy to mutate without touching the original (lines are replaced, not edited)."""
        return dataclasses.replace(
            self, lines=[dataclasses.replace(line) for line in self.lines], codes=list(self.codes)
        )


def etag_of(version: int) -> str:
    return str(version)


def version_of(etag: str) -> int | None:
    """The version an etag stands for; None for something this service never issued."""
    text = etag.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else None
