"""Cart use cases: every change of a cart goes through one pipeline.

1. A retry (same ``request_id``) answers the first response and changes nothing.
2. The etag, when given, must be current (checked early, and again under the row lock).
3. What the change needs from the catalogue is fetched *before* the row is locked, so a slow
   inventory never holds other channels' changes of the same cart.
4. Under the lock: apply the domain change, refresh stale price snapshots, re-evaluate the
   promotion codes, bump the version, write, emit CartUpdatedEvent (outbox), store the response
   for the request id; commit.
5. After commit the change is pushed to this replica's watchers at once; other replicas get it
   through NATS.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni_runtime.context import current_channel, current_principal
from omni_runtime.db.engine import after_commit
from omni_runtime.db.idempotency import Work, once
from omni_runtime.errors import Aborted, FailedPrecondition, NotFound, OmniError, PermissionDenied
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto as ts
from omni_runtime.timestamps import utcnow
from services.cart import metrics, store
from services.cart.config import CartConfig
from services.cart.convert import cart_proto, channel_proto, channel_ref
from services.cart.domain import lines as line_rules
from services.cart.domain.merge import MergeMode, MergeOutcome, merge, source_is_empty
from services.cart.domain.model import (
    MAX_PROMOTION_CODES,
    AppliedCode,
    Cart,
    Fulfillment,
    Method,
    Reason,
    version_of,
)
from services.cart.domain.pricing import CatalogItem, reprice, stale_items
from services.cart.domain.promotions import evaluate_codes, normalize_code, usability
from services.cart.inventory_client import InventoryClient, StoreView
from services.cart.watch import WatchHub

log = logging.getLogger("omni.cart")
DOMAIN = "omni.cart"


def check_etag(cart: Cart, etag: str) -> None:
    """AIP-154: a given etag must be the cart's current one."""
    if etag and version_of(etag) != cart.version:
        raise Aborted(
            f"{cart.name} changed since etag {etag!r}; re-read it (current etag {cart.etag!r}) and retry",
            current_etag=cart.etag,
            domain=DOMAIN,
            metadata={"resource": cart.name},
        )


@dataclass(slots=True)
class Prepared:
    """What a change fetched from the inventory before taking the lock."""

    items: dict[str, CatalogItem | None] = field(default_factory=dict)
    store: StoreView | None = None


# apply(cart, prepared, now, session) -> ids of the lines changed, or None when nothing changed.
Apply = Callable[[Cart, Prepared, datetime, AsyncSession], Awaitable[list[str] | None]]
# prepare(cart, cached_only) -> what the change needs from the catalogue (None: not cached).
Prepare = Callable[[Cart, bool], Awaitable[Prepared | None]]
# The requests of cart changes: each carries the etag it expects and its AIP-155 request id.
ChangeRequest: TypeAlias = (
    svc.AddCartLineRequest
    | svc.UpdateCartLineRequest
    | svc.RemoveCartLineRequest
    | svc.ClearCartRequest
    | svc.ApplyPromotionCodeRequest
    | svc.RemovePromotionCodeRequest
)


class _NotCached(Exception):
    """A change's catalogue facts were not read moments ago: fetch them without the row lock."""

    def __init__(self, cart: Cart) -> None:
        super().__init__(f"catalogue facts for {cart.name} are not cached")
        self.cart = cart


@dataclass(frozen=True, slots=True)
class Change:
    """A kind of cart change: its RPC (the idempotency scope), what it announces, its metric."""

    method: str
    kind: int
    metric: str


ADD_LINE = Change("AddCartLine", r.CART_CHANGE_KIND_LINE_ADDED, "add_item")
UPDATE_LINE = Change("UpdateCartLine", r.CART_CHANGE_KIND_LINE_UPDATED, "update_line")
REMOVE_LINE = Change("RemoveCartLine", r.CART_CHANGE_KIND_LINE_REMOVED, "remove_item")
CLEAR = Change("ClearCart", r.CART_CHANGE_KIND_CLEARED, "clear")
APPLY_CODE = Change("ApplyPromotionCode", r.CART_CHANGE_KIND_PROMOTION_APPLIED, "apply_promotion")
REMOVE_CODE = Change("RemovePromotionCode", r.CART_CHANGE_KIND_PROMOTION_REMOVED, "remove_promotion")


class CartOps:
    def __init__(
        self, runtime: Runtime, config: CartConfig, inventory: InventoryClient, hub: WatchHub
    ) -> None:
        assert runtime.db is not None and runtime.outbox is not None
        self.db = runtime.db
        self.outbox = runtime.outbox
        self.config = config
        self.inventory = inventory
        self.hub = hub

    # ---------------------------------------------------------------------------------------
    # Reading
    # ---------------------------------------------------------------------------------------

    def to_proto(self, cart: Cart) -> r.Cart:
        return cart_proto(cart, self.config.default_currency)

    async def read(self, customer: str) -> Cart:
        async with self.db.read() as session:  # one statement: no transaction needed
            return await store.read_cart(session, customer)

    # ---------------------------------------------------------------------------------------
    # The pipeline
    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _pickup_store(store_name: str, view: StoreView | None) -> StoreView:
        if view is None or not view.pickup_enabled:
            raise FailedPrecondition(
                f"{store_name} does not offer pickup",
                reason="PICKUP_NOT_OFFERED",
                domain=DOMAIN,
                metadata={"pickup_store": store_name},
            )
        return view

    async def prefetch(
        self, cart: Cart, *, need: list[str], store_name: str = "", cached_only: bool = False
    ) -> Prepared | None:
        """What a change needs from the catalogue: the items it names (mandatory), the pickup
        store, and fresh prices for stale snapshots (best effort). With ``cached_only`` it is
        answered from recent reads alone, or None when something has to be fetched."""
        prepared = Prepared()
        stale = stale_items(cart, utcnow(), self.config.price_ttl) - set(need)
        if cached_only:
            for name in (*need, *stale):
                hit, found = self.inventory.peek(name)
                if not hit:
                    return None
                prepared.items[name] = found
            if store_name:
                hit, view = self.inventory.peek_store(store_name)
                if not hit:
                    return None
                prepared.store = self._pickup_store(store_name, view)
            return prepared
        if need:
            prepared.items = await self.inventory.items(need)
        if store_name:
            prepared.store = self._pickup_store(store_name, await self.inventory.store(store_name, need))
        if stale:
            try:
                prepared.items.update(await self.inventory.items(stale))
            except OmniError as exc:
                # Refreshing old snapshots must not block a change the customer is making; the
                # next change (or checkout, which always re-prices) refreshes them.
                log.warning("could not refresh stale prices of %s: %s", cart.name, exc.message)
        return prepared

    async def reevaluate(self, session: AsyncSession, cart: Cart, now: datetime) -> None:
        """Re-evaluate the codes on the cart against the promotions as they are now."""
        if not cart.codes:
            return
        names = [c.promotion for c in cart.codes]
        rules = await store.rules_for(session, names)
        uses = await store.customer_uses(session, cart.customer, names)
        cart.codes = evaluate_codes(cart.codes, rules, cart.lines, cart.currency, now, uses)

    def updated_event(
        self, cart: Cart, kind: int, line_ids: list[str], *, order: str = ""
    ) -> ev.CartUpdatedEvent:
        return ev.CartUpdatedEvent(
            cart=cart.name,
            etag=cart.etag,
            kind=kind,  # type: ignore[arg-type]
            line_ids=line_ids,
            channel=channel_proto(cart.last_channel),
            actor=current_principal.get().subject,
            order=order,
            snapshot=self.to_proto(cart),
            occur_time=ts(cart.update_time),
        )

    async def commit_change(
        self,
        session: AsyncSession,
        cart: Cart,
        kind: int,
        line_ids: list[str],
        now: datetime,
        *,
        order: str = "",
    ) -> ev.CartUpdatedEvent:
        """Bump, write and announce a changed cart (inside the caller's transaction)."""
        cart.version += 1
        cart.update_time = now
        cart.last_channel = channel_ref(current_channel.get())
        store.save_cart(session, cart)
        event = self.updated_event(cart, kind, line_ids, order=order)
        await self.outbox.emit(session, event)
        return event

    def _announce(self, session: AsyncSession, event: ev.CartUpdatedEvent, metric: str) -> None:
        """Once the change is committed: count it and push it to this replica's watchers."""

        def announce() -> None:
            metrics.MUTATIONS.labels(metric).inc()
            self.hub.deliver(event)

        after_commit(session, announce)

    async def _apply(
        self, session: AsyncSession, cart: Cart, prepared: Prepared, apply: Apply, change: Change
    ) -> r.Cart:
        now = utcnow()
        changed = await apply(cart, prepared, now, session)
        if changed is None:
            return self.to_proto(cart)
        reprice(cart, {k: v for k, v in prepared.items.items() if v is not None}, now)
        await self.reevaluate(session, cart, now)
        event = await self.commit_change(session, cart, change.kind, changed, now)
        self._announce(session, event, change.metric)
        return event.snapshot

    async def mutate(
        self,
        change: Change,
        request: ChangeRequest,
        *,
        customer: str,
        apply: Apply,
        prepare: Prepare | None = None,
    ) -> r.Cart:
        """Run one cart change: AIP-155 replay, etag check, catalogue facts (``prepare``; by
        default only fresh prices for stale lines), ``apply``, repricing, codes, event, metric."""
        prepare = prepare or self._prices_only
        etag, request_id = request.etag, request.request_id
        scope = f"{change.method}:customers/{customer}/cart"

        def under_lock(prepared: Prepared | None) -> Work[r.Cart]:
            async def work(session: AsyncSession) -> r.Cart:
                cart = await store.lock_cart(session, customer)
                check_etag(cart, etag)
                ready = prepared if prepared is not None else await prepare(cart, True)
                if ready is None:
                    raise _NotCached(cart)
                return await self._apply(session, cart, ready, apply, change)

            return work

        try:
            # One pass when the catalogue facts the change needs were read moments ago.
            return await once(self.db, scope, request_id, request, r.Cart, under_lock(None))
        except _NotCached as missed:
            # Otherwise fetch them without holding the row, then lock again and check again.
            prepared = await prepare(missed.cart, False)
            assert prepared is not None
            return await once(self.db, scope, request_id, request, r.Cart, under_lock(prepared))

    async def _prices_only(self, cart: Cart, cached_only: bool) -> Prepared | None:
        return await self.prefetch(cart, need=[], cached_only=cached_only)

    # ---------------------------------------------------------------------------------------
    # Lines
    # ---------------------------------------------------------------------------------------

    async def add_line(
        self,
        request: svc.AddCartLineRequest,
        *,
        customer: str,
        item: str,
        quantity: int,
        fulfillment: Fulfillment,
        currency: str,
    ) -> r.Cart:
        async def prepare(cart: Cart, cached_only: bool) -> Prepared | None:
            return await self.prefetch(
                cart, need=[item], store_name=fulfillment.pickup_store, cached_only=cached_only
            )

        async def apply(cart: Cart, prepared: Prepared, now: datetime, _s: AsyncSession) -> list[str]:
            found = prepared.items.get(item)
            if found is None:
                raise NotFound(
                    item, f"{item} is not in the catalogue", reason="ITEM_NOT_FOUND", domain=DOMAIN
                )
            chosen = fulfillment
            if prepared.store is not None:
                chosen = Fulfillment(Method.PICKUP, prepared.store.name, prepared.store.display_name)
            return line_rules.add_line(
                cart,
                item=found,
                quantity=quantity,
                fulfillment=chosen,
                currency=line_rules.resolve_currency(cart, currency, self.config.default_currency),
                channel=channel_ref(current_channel.get()),
                now=now,
                limits=self.config.limits,
            )

        return await self.mutate(ADD_LINE, request, customer=customer, prepare=prepare, apply=apply)

    async def update_line(
        self,
        request: svc.UpdateCartLineRequest,
        *,
        customer: str,
        quantity: int | None,
        fulfillment: Fulfillment | None,
    ) -> r.Cart:
        line_id = request.line_id

        async def prepare(cart: Cart, cached_only: bool) -> Prepared | None:
            line = line_rules.require_line(cart, line_id)
            store_name = fulfillment.pickup_store if fulfillment is not None else ""
            need = [line.item] if store_name else []
            return await self.prefetch(cart, need=need, store_name=store_name, cached_only=cached_only)

        async def apply(cart: Cart, prepared: Prepared, now: datetime, _s: AsyncSession) -> list[str]:
            chosen = fulfillment
            if chosen is not None and prepared.store is not None:
                chosen = Fulfillment(Method.PICKUP, prepared.store.name, prepared.store.display_name)
            return line_rules.update_line(
                cart, line_id, quantity=quantity, fulfillment=chosen, now=now, limits=self.config.limits
            )

        return await self.mutate(UPDATE_LINE, request, customer=customer, prepare=prepare, apply=apply)

    async def remove_line(self, request: svc.RemoveCartLineRequest, *, customer: str) -> r.Cart:
        line_id = request.line_id

        async def apply(cart: Cart, _p: Prepared, _now: datetime, _s: AsyncSession) -> list[str]:
            return line_rules.remove_line(cart, line_id)

        return await self.mutate(REMOVE_LINE, request, customer=customer, apply=apply)

    async def clear(self, request: svc.ClearCartRequest, *, customer: str) -> r.Cart:
        async def prepare(_cart: Cart, _cached_only: bool) -> Prepared | None:
            return Prepared()

        async def apply(cart: Cart, _p: Prepared, _now: datetime, _s: AsyncSession) -> list[str] | None:
            if not cart.lines and not cart.codes:
                return None
            line_rules.clear(cart)
            return []

        return await self.mutate(CLEAR, request, customer=customer, prepare=prepare, apply=apply)

    # ---------------------------------------------------------------------------------------
    # Promotion codes
    # ---------------------------------------------------------------------------------------

    async def apply_code(self, request: svc.ApplyPromotionCodeRequest, *, customer: str) -> r.Cart:
        wanted = normalize_code(request.code)

        async def apply(cart: Cart, _p: Prepared, now: datetime, session: AsyncSession) -> list[str] | None:
            if any(c.code == wanted for c in cart.codes):
                return None
            row = await store.promotion_by_code(session, wanted)
            if row is None:
                raise NotFound(
                    f"promotions/-?code={wanted}",
                    f"no promotion has the code {wanted!r}",
                    reason="PROMOTION_CODE_NOT_FOUND",
                    domain=DOMAIN,
                    metadata={"code": wanted},
                )
            rule = store.rule_from_row(row)
            uses = await store.customer_uses(session, cart.customer, [rule.name])
            blocked = usability(rule, now, uses.get(rule.name, 0))
            if blocked is not Reason.NONE:
                raise FailedPrecondition(
                    f"the code {wanted!r} cannot be used now ({blocked.name.lower()})",
                    reason="PROMOTION_NOT_USABLE",
                    domain=DOMAIN,
                    metadata={
                        "code": wanted,
                        "promotion": rule.name,
                        "ineligibility_reason": f"INELIGIBILITY_REASON_{blocked.name}",
                    },
                )
            if len(cart.codes) >= MAX_PROMOTION_CODES:
                raise FailedPrecondition(
                    f"a cart holds at most {MAX_PROMOTION_CODES} promotion codes",
                    reason="PROMOTION_CODE_LIMIT",
                    domain=DOMAIN,
                    metadata={"resource": cart.name},
                )
            cart.codes.append(AppliedCode(code=wanted, promotion=rule.name, display_name=rule.display_name))
            return []

        return await self.mutate(APPLY_CODE, request, customer=customer, apply=apply)

    async def remove_code(self, request: svc.RemovePromotionCodeRequest, *, customer: str) -> r.Cart:
        wanted = normalize_code(request.code)

        async def apply(cart: Cart, _p: Prepared, _now: datetime, _s: AsyncSession) -> list[str] | None:
            kept = [c for c in cart.codes if c.code != wanted]
            if len(kept) == len(cart.codes):
                return None
            cart.codes = kept
            return []

        return await self.mutate(REMOVE_CODE, request, customer=customer, apply=apply)

    # ---------------------------------------------------------------------------------------
    # Merge
    # ---------------------------------------------------------------------------------------

    async def merge_in(
        self,
        session: AsyncSession,
        *,
        target_customer: str,
        source_customer: str,
        mode: MergeMode,
        etag: str = "",
    ) -> tuple[Cart, list[ev.CartUpdatedEvent]]:
        """Merge the source cart into the target inside ``session`` (both rows locked together,
        in a fixed order). The catalogue is read under the locks: that keeps the result a
        function of exactly the two carts locked, whatever else changes them meanwhile."""
        locked = await store.lock_carts(session, [target_customer, source_customer])
        target, source = locked[target_customer], locked[source_customer]
        check_etag(target, etag)
        if source_is_empty(source):
            return target, []
        items = await self.inventory.items(ln.item for ln in source.lines)
        now = utcnow()
        source_name = source.name
        outcome: MergeOutcome = merge(target, source, mode, items, now, self.config.limits)
        if target.lines:
            stale = {ln.item for ln in target.lines if ln.item not in items} & stale_items(
                target, now, self.config.price_ttl
            )
            fresh = {k: v for k, v in items.items() if v is not None}
            if stale:
                try:
                    fresh.update({k: v for k, v in (await self.inventory.items(stale)).items() if v})
                except OmniError as exc:
                    log.warning("could not refresh stale prices of %s: %s", target.name, exc.message)
            reprice(target, fresh, now)
        await self.reevaluate(session, target, now)
        events = [
            await self.commit_change(
                session, target, r.CART_CHANGE_KIND_MERGED, outcome.target_line_ids, now
            ),
            await self.commit_change(
                session, source, r.CART_CHANGE_KIND_MERGED, outcome.source_line_ids, now
            ),
        ]
        await self.outbox.emit(
            session,
            ev.CartsMergedEvent(
                source_cart=source_name,
                target_cart=target.name,
                mode=int(mode),  # type: ignore[arg-type]
                merged_line_count=outcome.merged_line_count,
                dropped_items=outcome.dropped_items,
                target_etag=target.etag,
                channel=channel_proto(target.last_channel),
                occur_time=ts(now),
            ),
        )
        metrics.MUTATIONS.labels("merge").inc()
        return target, events

    async def merge_rpc(
        self,
        request: Message,
        *,
        target_customer: str,
        source_customer: str,
        mode: MergeMode,
        etag: str,
        request_id: str,
    ) -> r.Cart:
        async def work(session: AsyncSession) -> r.Cart:
            target, events = await self.merge_in(
                session,
                target_customer=target_customer,
                source_customer=source_customer,
                mode=mode,
                etag=etag,
            )
            for event in events:
                after_commit(session, functools.partial(self.hub.deliver, event))
            return events[0].snapshot if events else self.to_proto(target)

        scope = f"MergeCarts:customers/{target_customer}/cart"
        return await once(self.db, scope, request_id, request, r.Cart, work)


def require_guest_proof(
    principal_subject: str, token_subject: str, roles: frozenset[str], source: str
) -> None:
    """MergeCarts by a customer: the guest token must name the source cart's guest."""
    if token_subject != source or "guest" not in roles:
        raise PermissionDenied(
            "source_guest_token must be an access token of the source cart's guest",
            reason="GUEST_PROOF_INVALID",
            domain=DOMAIN,
            metadata={"source_customer": source, "caller": principal_subject},
        )
