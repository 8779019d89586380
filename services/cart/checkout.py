"""Checkout: a cart becomes an order, with the stock of every line reserved, all or nothing.

1. A retry (same request id) answers the order the first call placed.
2. The confirmed etag must be current; an empty cart has nothing to check out.
3. Every line is re-priced from the catalogue. A line that can no longer be sold fails the call
   (ITEM_INACTIVE, naming the line); a total that moved updates the cart (REPRICED, new etag) and
   fails the call (PRICE_CHANGED) so the customer confirms the new total.
4. Holding the cart's row lock (so a racing checkout or edit of this cart waits, then finds the
   etag moved, and exactly one order exists), one reservation per fulfilment group is made: the
   SHIP lines wherever the inventory allocates them, each pickup store's lines at that store.
   Request ids of the reservations derive from the order (itself derived from the checkout's
   request id) and the cart version, so a retry after a crash finds the same reservations
   instead of reserving twice.
5. If any group is refused, every reservation already made is released and the call fails:
   INSUFFICIENT_STOCK lists each short cart line. Otherwise promotion usage is counted, the order
   stored, the cart emptied (CHECKED_OUT) and OrderPlacedEvent emitted, in one transaction; if
   that transaction does not commit, the reservations are released.

A journal row (``checkout_attempts``) is committed before anything is reserved and deleted with
the order's commit: if the process dies in between, the sweeper finds the row and releases
whatever the attempt reserved, so even a crash leaves no reservation behind for long.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni.inventory.v1 import resources_pb2 as inv_r
from omni.type.v1 import address_pb2
from omni_runtime.context import current_channel, current_principal
from omni_runtime.db.engine import after_commit
from omni_runtime.db.idempotency import once, recall
from omni_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, OmniError
from omni_runtime.timestamps import to_proto as ts
from omni_runtime.timestamps import utcnow
from services.cart import metrics, store
from services.cart.carts import CartOps, check_etag
from services.cart.convert import applied_proto, fulfillment_proto, money
from services.cart.domain import lines as line_rules
from services.cart.domain.model import Cart, Fulfillment, Line
from services.cart.domain.orders import derive_state, group_key, plan_groups
from services.cart.domain.pricing import CatalogItem, distinct_items, reprice, unsellable_lines
from services.cart.inventory_client import InventoryClient, ReservationLine, ReservationRefused

log = logging.getLogger("omni.cart.checkout")
DOMAIN = "omni.cart"
# Namespace of the ids derived from a checkout's request id (orders, reservations).
NAMESPACE = uuid.UUID("6f1c7f64-3c55-4c1e-9f0e-0c2d6f5b8a11")
_LINE_INDEX = re.compile(r"lines\[(\d+)\]")
# How many fresh reservation ids a retry of a failed checkout may use per group.
_RESERVATION_ATTEMPTS = 4


class CheckoutRefused(Exception):
    def __init__(self, group: Fulfillment, lines: Sequence[Line], refusal: ReservationRefused) -> None:
        super().__init__(refusal.message)
        self.group = group
        self.lines = list(lines)
        self.refusal = refusal


def order_id_for(cart_name: str, request_id: str) -> str:
    """The order a checkout request places: the same for every retry of that request."""
    return uuid.uuid5(NAMESPACE, f"{cart_name}/{request_id}").hex


class Checkout:
    def __init__(self, ops: CartOps, inventory: InventoryClient) -> None:
        self.ops = ops
        self.db = ops.db
        self.outbox = ops.outbox
        self.config = ops.config
        self.inventory = inventory
        self._cleanups: set[asyncio.Task[bool]] = set()

    async def checkout(
        self,
        request: Message,
        *,
        customer: str,
        etag: str,
        request_id: str,
        shipping_address: address_pb2.PostalAddress | None,
        payment_reference: str,
    ) -> r.Order:
        try:
            order = await self._checkout(
                request,
                customer=customer,
                etag=etag,
                request_id=request_id,
                shipping_address=shipping_address,
                payment_reference=payment_reference,
            )
        except OmniError as exc:
            metrics.CHECKOUTS.labels("rejected" if exc.code.name != "UNAVAILABLE" else "failed").inc()
            raise
        except Exception:
            metrics.CHECKOUTS.labels("failed").inc()
            raise
        metrics.CHECKOUTS.labels("completed").inc()
        return order

    async def _checkout(
        self,
        request: Message,
        *,
        customer: str,
        etag: str,
        request_id: str,
        shipping_address: address_pb2.PostalAddress | None,
        payment_reference: str,
    ) -> r.Order:
        cart_name = f"customers/{customer}/cart"
        scope = f"Checkout:{cart_name}"
        async with self.db.read() as session:  # the cart is checked again under its lock
            replay = await recall(session, scope, request_id, request, r.Order)
            current = await store.read_cart(session, customer)
        if replay is not None:
            return replay
        check_etag(current, etag)
        if not current.lines:
            raise FailedPrecondition(
                f"{cart_name} is empty", reason="CART_EMPTY", domain=DOMAIN, metadata={"resource": cart_name}
            )
        if any(not ln.fulfillment.is_pickup for ln in current.lines) and shipping_address is None:
            raise InvalidArgument(
                [FieldViolation("shipping_address", "is required: the cart has lines to ship", "REQUIRED")]
            )
        items = await self.inventory.items(distinct_items(current.lines), fresh=True)
        self._refuse_unsellable(current, items)
        fresh = {k: v for k, v in items.items() if v is not None}
        await self._confirm_prices(current, fresh)

        order_id = order_id_for(cart_name, request_id)
        order_name = f"customers/{customer}/orders/{order_id}"
        await self._journal(order_name, customer)
        made: list[inv_r.Reservation] = []

        async def work(session: AsyncSession) -> r.Order:
            nonlocal made
            cart = await store.lock_cart(session, customer)
            check_etag(cart, etag)
            if not cart.lines:
                raise FailedPrecondition(f"{cart_name} is empty", reason="CART_EMPTY", domain=DOMAIN)
            now = utcnow()
            reprice(cart, fresh, now)
            await self.ops.reevaluate(session, cart, now)
            if cart.total != current.total:
                raise _price_changed(cart, current.total, cart.total)
            groups = plan_groups(cart.lines)
            made, refused = await self._reserve_all(order_name, cart.version, groups)
            if refused is not None:
                raise refused
            await self._count_promotions(session, cart, customer)
            order = await self._build_order(
                session, order_name, cart, groups, made, now, shipping_address, payment_reference
            )
            store.insert_order(session, order_id, customer, order)
            await store.finish_attempt(session, order_name, deferred=True)
            line_rules.clear(cart)
            event = await self.ops.commit_change(
                session, cart, r.CART_CHANGE_KIND_CHECKED_OUT, [], now, order=order_name
            )
            await self.outbox.emit(
                session,
                ev.OrderPlacedEvent(
                    order=order,
                    customer=f"customers/{customer}",
                    cart=cart_name,
                    placed_by=order.placed_by,
                    occur_time=order.create_time,
                ),
            )
            after_commit(session, functools.partial(self.ops.hub.deliver, event))
            return order

        try:
            return await once(self.db, scope, request_id, request, r.Order, work)
        except asyncio.CancelledError:
            # The caller went away mid-way: release what is known in a task of its own; anything
            # reserved by a call still in flight is found through the journal by the sweeper.
            self._release_in_background(order_name, made)
            raise
        except BaseException:
            await self.release_attempt(order_name, [m.name for m in made])
            raise

    async def _count_promotions(self, session: AsyncSession, cart: Cart, customer: str) -> None:
        """Count each applied code's use; a code used up meanwhile changes the total."""
        rules = await store.rules_for(session, [c.promotion for c in cart.codes if c.applicable])
        for code in cart.codes:
            if not code.applicable:
                continue
            rule = rules.get(code.promotion)
            if rule is None or not await store.count_usage(session, rule, customer):
                raise FailedPrecondition(
                    f"the code {code.code} was used up meanwhile; confirm the cart again",
                    reason="PRICE_CHANGED",
                    domain=DOMAIN,
                    metadata={"resource": cart.name, "code": code.code},
                )

    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _refuse_unsellable(cart: Cart, items: dict[str, CatalogItem | None]) -> None:
        bad = unsellable_lines(cart, items)
        if bad:
            raise FailedPrecondition(
                f"{len(bad)} line(s) can no longer be sold; remove them to check out",
                reason="ITEM_INACTIVE",
                domain=DOMAIN,
                metadata={"resource": cart.name, "line_id": bad[0][0], "item": bad[0][1]},
                violations=[("ITEM_INACTIVE", f"lines[{lid}]", f"{item} {why}") for lid, item, why in bad],
            )

    async def _confirm_prices(self, current: Cart, fresh: dict[str, CatalogItem]) -> None:
        """If re-pricing moves the total, store the new prices (REPRICED) and refuse."""
        probe = current.copy()
        now = utcnow()
        reprice(probe, fresh, now)
        if probe.codes:
            async with self.db.transaction() as session:
                await self.ops.reevaluate(session, probe, now)
        if probe.total == current.total:
            return
        event: ev.CartUpdatedEvent | None = None
        async with self.db.transaction() as session:
            cart = await store.lock_cart(session, current.customer)
            check_etag(cart, current.etag)
            changed = reprice(cart, fresh, now)
            await self.ops.reevaluate(session, cart, now)
            event = await self.ops.commit_change(session, cart, r.CART_CHANGE_KIND_REPRICED, changed, now)
        self.ops.hub.deliver(event)
        raise _price_changed(cart, current.total, cart.total)

    async def _journal(self, order_name: str, customer: str) -> None:
        async with self.db.transaction() as session:
            await store.start_attempt(session, order_name, customer)

    async def _reserve_group(
        self, order_name: str, version: int, group: Fulfillment, lines: list[Line]
    ) -> inv_r.Reservation:
        key = group_key(group)
        base = f"{order_name}/{version}/{key}"
        for attempt in range(_RESERVATION_ATTEMPTS):
            request_id = str(uuid.uuid5(NAMESPACE, f"{base}/{attempt}"))
            try:
                made = await self.inventory.reserve(
                    request_id=request_id,
                    owner=order_name,
                    lines=[ReservationLine(ln.item, ln.quantity) for ln in lines],
                    pickup_store=group.pickup_store or None,
                    ttl=self.config.reservation_ttl,
                )
            except ReservationRefused as refusal:
                raise CheckoutRefused(group, lines, refusal) from refusal
            if made.state == inv_r.RESERVATION_STATE_ACTIVE:
                return made
            # An earlier, failed attempt of this same checkout made and released this one.
        raise FailedPrecondition(
            "the stock could not be reserved; retry with a new request id",
            reason="RESERVATION_FAILED",
            domain=DOMAIN,
        )

    async def _reserve_all(
        self, order_name: str, version: int, groups: list[tuple[Fulfillment, list[Line]]]
    ) -> tuple[list[inv_r.Reservation], Exception | None]:
        """Reserve every group concurrently: what was reserved, and the failure if any group was
        refused (one error naming every refused cart line)."""
        results = await asyncio.gather(
            *(self._reserve_group(order_name, version, g, lines) for g, lines in groups),
            return_exceptions=True,
        )
        made = [x for x in results if isinstance(x, inv_r.Reservation)]
        failures = [x for x in results if isinstance(x, BaseException)]
        if not failures:
            return made, None
        refusals = [x for x in failures if isinstance(x, CheckoutRefused)]
        if len(refusals) < len(failures):
            other = next(x for x in failures if not isinstance(x, CheckoutRefused))
            if not isinstance(other, Exception):
                raise other
            return made, other
        return made, _explain(refusals, order_name)

    def _release_in_background(self, order_name: str, made: Sequence[inv_r.Reservation]) -> None:
        """Release what an interrupted attempt reserved, in a task outside the call's deadline."""
        names = [m.name for m in made]
        task = asyncio.create_task(
            self.release_attempt(order_name, names, keep_journal=True), context=contextvars.Context()
        )
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def release_attempt(
        self, order_name: str, known: Sequence[str], *, by_owner: bool = False, keep_journal: bool = False
    ) -> bool:
        """Release the reservations of a checkout attempt that placed no order: ``known`` ones, and
        with ``by_owner`` every ACTIVE one the inventory lists for the order (only safe once no
        attempt of that order can still be running). Returns whether it finished."""
        try:
            async with self.db.transaction() as session:
                if await store.order_exists(session, order_name):
                    await store.finish_attempt(session, order_name)
                    return True
            names = list(dict.fromkeys(known))
            if by_owner:
                names += [n for n in await self.inventory.active_reservations(order_name) if n not in names]
            for name in names:
                await self.inventory.release(name, reason="checkout did not complete")
            if not keep_journal:
                async with self.db.transaction() as session:
                    await store.finish_attempt(session, order_name)
            return True
        except Exception as exc:
            log.warning("could not release the reservations of %s yet: %s", order_name, exc)
            return False

    async def drain(self) -> None:
        """Wait for background releases (shutdown, tests)."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _build_order(
        self,
        session: AsyncSession,
        order_name: str,
        cart: Cart,
        groups: list[tuple[Fulfillment, list[Line]]],
        reservations: list[inv_r.Reservation],
        now: datetime,
        shipping_address: address_pb2.PostalAddress | None,
        payment_reference: str,
    ) -> r.Order:
        currency = cart.currency
        by_group = dict(zip((group_key(g) for g, _ in groups), reservations, strict=True))
        order_lines: list[r.OrderLine] = []
        fulfillment_groups: list[r.FulfillmentGroup] = []
        reservation_of: dict[str, inv_r.Reservation] = {}
        for group, lines in groups:
            made = by_group[group_key(group)]
            for line in lines:
                reservation_of[line.line_id] = made
            fulfillment_groups.append(
                r.FulfillmentGroup(
                    fulfillment=fulfillment_proto(group),
                    line_ids=[ln.line_id for ln in lines],
                    reservation=made.name,
                    state=r.FULFILLMENT_GROUP_STATE_OPEN,
                )
            )
            if group.is_pickup and made.HasField("expire_time"):
                fulfillment_groups[-1].pickup_deadline.CopyFrom(made.expire_time)
        for line in cart.lines:
            made = reservation_of[line.line_id]
            allocations = [
                r.StockAllocation(location=a.location, quantity=a.quantity)
                for rl in made.lines
                if rl.item == line.item
                for a in rl.allocations
            ]
            order_lines.append(
                r.OrderLine(
                    line_id=line.line_id,
                    item=line.item,
                    title=line.title,
                    quantity=line.quantity,
                    unit_price=money(currency, line.unit_price),
                    line_total=money(currency, line.line_total),
                    fulfillment=fulfillment_proto(line.fulfillment),
                    reservation=made.name,
                    allocations=allocations,
                )
            )
        year = now.astimezone(UTC).year
        order = r.Order(
            name=order_name,
            order_number=await store.next_order_number(session, year),
            lines=order_lines,
            fulfillment_groups=fulfillment_groups,
            promotions=[applied_proto(c, currency) for c in cart.codes if c.applicable],
            currency_code=currency,
            subtotal=money(currency, cart.subtotal),
            discount=money(currency, cart.discount),
            total=money(currency, cart.total),
            payment_reference=payment_reference,
            channel=current_channel.get().to_proto(),
            placed_by=current_principal.get().subject or f"customers/{cart.customer}",
            etag="1",
            create_time=ts(now),
            update_time=ts(now),
        )
        order.pickup_stores.extend(g.pickup_store for g, _ in groups if g.is_pickup)
        if shipping_address is not None and any(not g.is_pickup for g, _ in groups):
            order.shipping_address.CopyFrom(shipping_address)
        order.state = derive_state(order)  # type: ignore[assignment]
        return order


def _price_changed(cart: Cart, before: int, after: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"the cart's total changed from {before} to {after} {cart.currency} minor units; confirm it again",
        reason="PRICE_CHANGED",
        domain=DOMAIN,
        metadata={
            "resource": cart.name,
            "current_etag": cart.etag,
            "previous_total": str(before),
            "total": str(after),
        },
    )


def _explain(refusals: list[CheckoutRefused], order_name: str) -> FailedPrecondition:
    """One FAILED_PRECONDITION naming each refused cart line (``lines[<line_id>]``)."""
    short: list[tuple[str, str, str]] = []
    inactive: list[tuple[str, str, str]] = []
    other: list[str] = []
    for refused in refusals:
        found = refused.refusal.violations
        if not found and "line_index" in refused.refusal.metadata:
            found = [
                (
                    refused.refusal.reason,
                    f"lines[{refused.refusal.metadata['line_index']}]",
                    refused.refusal.message,
                )
            ]
        for kind, subject, description in found:
            match = _LINE_INDEX.fullmatch(subject)
            index = int(match.group(1)) if match else -1
            line = refused.lines[index] if 0 <= index < len(refused.lines) else None
            named = f"lines[{line.line_id}]" if line is not None else subject
            if kind == "INSUFFICIENT_STOCK":
                short.append(("INSUFFICIENT_STOCK", named, description))
            elif kind == "ITEM_INACTIVE":
                inactive.append(("ITEM_INACTIVE", named, description))
            else:
                other.append(description)
        if not found:
            other.append(refused.refusal.message)
    if short:
        return FailedPrecondition(
            f"not enough stock for {len(short)} line(s): "
            + ", ".join(s for _, s, _ in short)
            + "; nothing was reserved",
            reason="INSUFFICIENT_STOCK",
            domain=DOMAIN,
            metadata={
                "resource": order_name.split("/orders/", maxsplit=1)[0] + "/cart",
                "lines": ",".join(s for _, s, _ in short),
            },
            violations=short + inactive,
        )
    if inactive:
        return FailedPrecondition(
            f"{len(inactive)} line(s) can no longer be sold",
            reason="ITEM_INACTIVE",
            domain=DOMAIN,
            violations=inactive,
        )
    return FailedPrecondition(
        "the stock could not be reserved: " + "; ".join(other),
        reason="RESERVATION_FAILED",
        domain=DOMAIN,
    )


__all__ = ["Checkout", "order_id_for"]
