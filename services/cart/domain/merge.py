"""Merging one cart into another (a guest's cart into the customer's at login).

The merge is a pure function of the two carts as locked together, so the result does not depend
on which of several concurrent changes to either cart won: they are serialised before or after
it, never interleaved with it.

An empty source changes nothing in any mode: in particular REPLACE with a guest who never added
anything must not wipe the customer's cart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from services.cart.domain.lines import Limits, clear
from services.cart.domain.model import MAX_LINE_QUANTITY, MAX_PROMOTION_CODES, Cart, Line
from services.cart.domain.pricing import CatalogItem


class MergeMode(IntEnum):
    """Mirror of omni.cart.v1.MergeMode."""

    SUM_QUANTITIES = 1
    KEEP_LARGER = 2
    REPLACE = 3


@dataclass(slots=True)
class MergeOutcome:
    merged_line_count: int = 0
    dropped_items: list[str] = field(default_factory=list)
    target_line_ids: list[str] = field(default_factory=list)
    source_line_ids: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.merged_line_count or self.dropped_items or self.source_line_ids)


def source_is_empty(source: Cart) -> bool:
    return not source.lines and not source.codes


def merge(
    target: Cart,
    source: Cart,
    mode: MergeMode,
    items: Mapping[str, CatalogItem | None],
    now: datetime,
    limits: Limits,
) -> MergeOutcome:
    """Move ``source``'s lines and codes into ``target`` (both mutated); ``items`` holds the
    catalogue entries of the source's items, for re-pricing in the target's currency."""
    outcome = MergeOutcome()
    if source_is_empty(source):
        return outcome
    outcome.source_line_ids = [ln.line_id for ln in source.lines]
    currency = target.currency if target.lines else (source.currency or target.currency)
    if mode is MergeMode.REPLACE:
        outcome.target_line_ids = [ln.line_id for ln in target.lines]
        target.lines.clear()
        target.codes = []
    if not target.lines:
        target.create_time = now
    target.currency = currency
    added: list[Line] = []
    for line in source.lines:
        found = items.get(line.item)
        price = found.price_in(currency) if found is not None and found.active else None
        if found is None or price is None:
            outcome.dropped_items.append(line.item)
            continue
        twin = next((ln for ln in target.lines if ln.key == line.key), None)
        if twin is not None:
            if mode is MergeMode.SUM_QUANTITIES:
                twin.quantity = min(MAX_LINE_QUANTITY, twin.quantity + line.quantity)
            else:
                twin.quantity = max(twin.quantity, line.quantity)
            twin.unit_price = price
            twin.title = found.title
            twin.price_time = found.read_time or now
            twin.update_time = now
            outcome.target_line_ids.append(twin.line_id)
        else:
            moved = dataclasses.replace(
                line,
                line_id=target.new_line_id(),
                title=found.title,
                unit_price=price,
                price_time=found.read_time or now,
                update_time=now,
            )
            target.lines.append(moved)
            added.append(moved)
            outcome.target_line_ids.append(moved.line_id)
        outcome.merged_line_count += 1
    # A merge at login must not fail on the cart's size limits: the newest arrivals that do not
    # fit are dropped (and reported) instead.
    while added and (len(target.lines) > limits.max_lines or target.item_count > limits.max_units):
        extra = added.pop()
        target.lines.remove(extra)
        outcome.target_line_ids.remove(extra.line_id)
        outcome.dropped_items.append(extra.item)
        outcome.merged_line_count -= 1
    known = {c.code for c in target.codes}
    for code in source.codes:
        if code.code not in known and len(target.codes) < MAX_PROMOTION_CODES:
            target.codes.append(code)
            known.add(code.code)
    clear(source)
    return outcome
