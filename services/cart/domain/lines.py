"""Line mutations and their limits.

Two lines never share item and fulfilment: adding the same item with the same fulfilment raises
the existing line, and changing a line's fulfilment onto another line's merges the two. Limits:
999 units per line (contract), and per cart a maximum number of lines and of units (settings),
so a runaway client cannot grow a document every channel has to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from omni_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.cart.domain.model import MAX_LINE_QUANTITY, Cart, ChannelRef, Fulfillment, Line
from services.cart.domain.pricing import CatalogItem

DOMAIN = "omni.cart"


@dataclass(frozen=True, slots=True)
class Limits:
    max_lines: int = 100
    max_units: int = 5000


def _too_many_units(quantity: int, field: str) -> InvalidArgument:
    return InvalidArgument(
        [
            FieldViolation(
                field,
                f"the line would hold {quantity} units; at most {MAX_LINE_QUANTITY} per line",
                "QUANTITY_LIMIT",
            )
        ],
        domain=DOMAIN,
    )


def check_cart_limits(cart: Cart, limits: Limits) -> None:
    if len(cart.lines) > limits.max_lines:
        raise FailedPrecondition(
            f"a cart holds at most {limits.max_lines} lines",
            reason="CART_LINE_LIMIT",
            domain=DOMAIN,
            metadata={"resource": cart.name, "max_lines": str(limits.max_lines)},
            violations=[("CART_LINE_LIMIT", "lines", f"at most {limits.max_lines} lines")],
        )
    if cart.item_count > limits.max_units:
        raise FailedPrecondition(
            f"a cart holds at most {limits.max_units} units",
            reason="CART_QUANTITY_LIMIT",
            domain=DOMAIN,
            metadata={"resource": cart.name, "max_units": str(limits.max_units)},
            violations=[("CART_QUANTITY_LIMIT", "lines", f"at most {limits.max_units} units in all")],
        )


def resolve_currency(cart: Cart, requested: str, default: str) -> str:
    """The currency a line added now is priced in (contract: AddCartLineRequest.currency_code)."""
    if cart.lines:
        if requested and requested != cart.currency:
            raise FailedPrecondition(
                f"the cart is in {cart.currency}; empty it to shop in {requested}",
                reason="CURRENCY_MISMATCH",
                domain=DOMAIN,
                metadata={"resource": cart.name, "cart_currency": cart.currency, "requested": requested},
            )
        return cart.currency
    return requested or cart.currency or default


def sellable_price(item: CatalogItem, currency: str) -> int:
    """The unit price of an item a cart may take, or the contract's FAILED_PRECONDITION."""
    if not item.active:
        raise FailedPrecondition(
            f"{item.name} is not sold",
            reason="ITEM_INACTIVE",
            domain=DOMAIN,
            metadata={"item": item.name},
        )
    price = item.price_in(currency)
    if price is None:
        raise FailedPrecondition(
            f"{item.name} has no price in {currency}",
            reason="NO_PRICE_IN_CURRENCY",
            domain=DOMAIN,
            metadata={"item": item.name, "currency": currency},
        )
    return price


def add_line(
    cart: Cart,
    *,
    item: CatalogItem,
    quantity: int,
    fulfillment: Fulfillment,
    currency: str,
    channel: ChannelRef,
    now: datetime,
    limits: Limits,
) -> list[str]:
    """Add ``quantity`` of ``item``; returns the id of the line added or raised."""
    price = sellable_price(item, currency)
    cart.currency = currency
    existing = next((ln for ln in cart.lines if ln.key == (item.name, *fulfillment.key)), None)
    if existing is not None:
        total = existing.quantity + quantity
        if total > MAX_LINE_QUANTITY:
            raise _too_many_units(total, "line.quantity")
        existing.quantity = total
        existing.unit_price = price
        existing.title = item.title
        existing.price_time = item.read_time or now
        existing.update_time = now
        if fulfillment.pickup_store_name:
            existing.fulfillment = fulfillment
        changed = existing.line_id
    else:
        if not cart.lines:
            cart.create_time = now
        line = Line(
            line_id=cart.new_line_id(),
            item=item.name,
            title=item.title,
            quantity=quantity,
            unit_price=price,
            price_time=item.read_time or now,
            fulfillment=fulfillment,
            added_by=channel,
            create_time=now,
            update_time=now,
        )
        cart.lines.append(line)
        changed = line.line_id
    check_cart_limits(cart, limits)
    return [changed]


def require_line(cart: Cart, line_id: str) -> Line:
    found = cart.line(line_id)
    if found is None:
        raise NotFound(
            cart.name,
            f"{cart.name} has no line {line_id!r}",
            reason="LINE_NOT_FOUND",
            domain=DOMAIN,
            metadata={"line_id": line_id},
        )
    return found


def update_line(
    cart: Cart,
    line_id: str,
    *,
    quantity: int | None,
    fulfillment: Fulfillment | None,
    now: datetime,
    limits: Limits,
) -> list[str]:
    """Change a line's quantity and/or fulfilment; a line that becomes identical to another in
    item and fulfilment absorbs it (contract: quantities summed into the line being updated)."""
    line = require_line(cart, line_id)
    changed = [line.line_id]
    if quantity is not None:
        line.quantity = quantity
    if fulfillment is not None and fulfillment.key != line.fulfillment.key:
        twin = next(
            (ln for ln in cart.lines if ln is not line and ln.key == (line.item, *fulfillment.key)), None
        )
        line.fulfillment = fulfillment
        if twin is not None:
            line.quantity += twin.quantity
            cart.lines.remove(twin)
            changed.append(twin.line_id)
    elif fulfillment is not None:
        line.fulfillment = fulfillment  # same store, maybe a fresher display name
    if line.quantity > MAX_LINE_QUANTITY:
        raise _too_many_units(line.quantity, "line.quantity")
    line.update_time = now
    check_cart_limits(cart, limits)
    return changed


def remove_line(cart: Cart, line_id: str) -> list[str]:
    line = require_line(cart, line_id)
    cart.lines.remove(line)
    return [line_id]


def clear(cart: Cart) -> None:
    """Empty the cart; its currency is free to change again and a new cart 'starts' later."""
    cart.lines.clear()
    cart.codes.clear()
    cart.currency = ""
    cart.create_time = None
