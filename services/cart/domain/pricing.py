"""Prices come from the catalogue (the inventory service) and are snapshotted on each line.

A snapshot older than the price TTL is refreshed at the cart's next change, and every line is
refreshed at checkout; between refreshes every channel reads the same stored snapshot, so the
web, the app and the till show the same total for the same etag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.cart.domain.model import Cart


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """What the cart needs to know about an item: its title, whether it sells, its prices."""

    name: str
    title: str
    active: bool
    prices: Mapping[str, int] = field(default_factory=dict)
    # When these facts were read from the catalogue (None: just now). A line's ``price_time`` is
    # this time, so the snapshot's age counts from the read, not from when it was used.
    read_time: datetime | None = None

    def price_in(self, currency: str) -> int | None:
        return self.prices.get(currency)


def stale_items(cart: Cart, now: datetime, ttl: timedelta) -> set[str]:
    """Items whose price snapshot on some line is older than the TTL."""
    return {line.item for line in cart.lines if now - line.price_time >= ttl}


def reprice(cart: Cart, items: Mapping[str, CatalogItem], now: datetime) -> list[str]:
    """Refresh the snapshot of every line whose item is in ``items`` and still priced in the
    cart's currency; returns the ids of lines whose unit price changed.

    An item that is no longer sold or priced keeps its old snapshot here: the line stays visible
    and checkout refuses it with ITEM_INACTIVE naming the line, rather than the line silently
    disappearing from a channel's screen.
    """
    changed: list[str] = []
    for line in cart.lines:
        found = items.get(line.item)
        if found is None or not found.active:
            continue
        price = found.price_in(cart.currency)
        read = found.read_time or now
        if price is None or read < line.price_time:
            continue  # not priced, or older than the snapshot the line already has
        if price != line.unit_price:
            changed.append(line.line_id)
            line.unit_price = price
            line.update_time = now
        line.title = found.title
        line.price_time = read
    return changed


def unsellable_lines(cart: Cart, items: Mapping[str, CatalogItem | None]) -> list[tuple[str, str, str]]:
    """Lines that cannot be sold any more, as (line_id, item, why) for a PreconditionFailure."""
    out: list[tuple[str, str, str]] = []
    for line in cart.lines:
        found = items.get(line.item)
        if found is None:
            out.append((line.line_id, line.item, "is no longer in the catalogue"))
        elif not found.active:
            out.append((line.line_id, line.item, "is no longer sold"))
        elif found.price_in(cart.currency) is None:
            out.append((line.line_id, line.item, f"has no price in {cart.currency}"))
    return out


def distinct_items(lines: Iterable[object]) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines:
        seen.setdefault(line.item, None)  # type: ignore[attr-defined]
    return list(seen)
