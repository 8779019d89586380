"""Promotion rules: one evaluation used by every channel and by checkout.

A code is *usable* (may be put on a cart) when the promotion is active, inside its validity window
and not exhausted overall or for this customer. A usable code *applies* when the cart holds an
eligible item, the eligible subtotal meets the minimum for the cart's currency and, for an amount
off, the promotion has an amount in that currency. Each discount is computed on the
pre-discount subtotal of its eligible lines; the cart's total discount never exceeds its
subtotal (later codes give what is left).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.cart.domain.model import AppliedCode, Line, Reason

CODE_PATTERN = re.compile(r"[A-Z0-9-]{3,32}")


def normalize_code(code: str) -> str:
    """Codes match case-insensitively and are stored upper-cased."""
    return code.strip().upper()


def round_half_away(numerator: int, denominator: int) -> int:
    """Integer division rounding half away from zero (for percentages of minor units)."""
    sign = -1 if (numerator < 0) != (denominator < 0) else 1
    n, d = abs(numerator), abs(denominator)
    return sign * ((2 * n + d) // (2 * d))


@dataclass(frozen=True, slots=True)
class PromotionRule:
    name: str
    code: str
    display_name: str
    percent_off_bp: int | None = None
    amount_off: Mapping[str, int] = field(default_factory=dict)
    minimum_subtotals: Mapping[str, int] = field(default_factory=dict)
    items: frozenset[str] = frozenset()
    start_time: datetime | None = None
    end_time: datetime | None = None
    usage_limit: int = 0
    usage_limit_per_customer: int = 0
    usage_count: int = 0
    active: bool = False


def usability(rule: PromotionRule, now: datetime, customer_uses: int) -> Reason:
    """Why the code cannot be used at all right now (Reason.NONE when it can)."""
    if not rule.active:
        return Reason.INACTIVE
    if rule.start_time is not None and now < rule.start_time:
        return Reason.NOT_STARTED
    if rule.end_time is not None and now >= rule.end_time:
        return Reason.ENDED
    if rule.usage_limit and rule.usage_count >= rule.usage_limit:
        return Reason.USAGE_LIMIT_REACHED
    if rule.usage_limit_per_customer and customer_uses >= rule.usage_limit_per_customer:
        return Reason.CUSTOMER_LIMIT_REACHED
    return Reason.NONE


def evaluate(
    rule: PromotionRule, lines: Sequence[Line], currency: str, now: datetime, customer_uses: int
) -> AppliedCode:
    """What the code gives on these lines now (before the cart-wide cap)."""

    def result(discount: int = 0, reason: Reason = Reason.NONE) -> AppliedCode:
        return AppliedCode(
            code=rule.code,
            promotion=rule.name,
            display_name=rule.display_name,
            discount=discount,
            applicable=reason is Reason.NONE,
            reason=reason,
        )

    blocked = usability(rule, now, customer_uses)
    if blocked is not Reason.NONE:
        return result(reason=blocked)
    eligible = [ln for ln in lines if not rule.items or ln.item in rule.items]
    if not eligible:
        return result(reason=Reason.NO_ELIGIBLE_ITEMS)
    base = sum(ln.line_total for ln in eligible)
    minimum = rule.minimum_subtotals.get(currency)
    if minimum is not None and base < minimum:
        return result(reason=Reason.MINIMUM_SUBTOTAL_NOT_MET)
    if rule.percent_off_bp is not None:
        return result(round_half_away(base * rule.percent_off_bp, 10_000))
    amount = rule.amount_off.get(currency)
    if amount is None:
        return result(reason=Reason.CURRENCY_NOT_SUPPORTED)
    return result(min(amount, base))


def evaluate_codes(
    codes: Sequence[AppliedCode],
    rules: Mapping[str, PromotionRule],
    lines: Sequence[Line],
    currency: str,
    now: datetime,
    customer_uses: Mapping[str, int],
) -> list[AppliedCode]:
    """Re-evaluate every code on a cart, in the order applied, with the cart-wide cap.

    A code whose promotion vanished is kept as inapplicable (INACTIVE) so the customer sees why
    it gives nothing, instead of the code disappearing.
    """
    remaining = sum(ln.line_total for ln in lines)
    out: list[AppliedCode] = []
    for code in codes:
        rule = rules.get(code.promotion)
        if rule is None:
            out.append(AppliedCode(code.code, code.promotion, code.display_name, 0, False, Reason.INACTIVE))
            continue
        applied = evaluate(rule, lines, currency, now, customer_uses.get(rule.name, 0))
        if applied.applicable:
            capped = min(applied.discount, remaining)
            remaining -= capped
            applied = AppliedCode(
                applied.code, applied.promotion, applied.display_name, capped, True, Reason.NONE
            )
        out.append(applied)
    return out
