"""The cart's pure rules: money arithmetic, promotions, merge, lines, order state, and the
watch hub's fan-out (in-process, no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni_runtime.errors import FailedPrecondition, InvalidArgument
from services.cart.domain import lines as rules
from services.cart.domain.merge import MergeMode, merge
from services.cart.domain.model import Cart, ChannelRef, Fulfillment, Method, Reason, version_of
from services.cart.domain.orders import derive_state, plan_groups
from services.cart.domain.pricing import CatalogItem, reprice, stale_items
from services.cart.domain.promotions import PromotionRule, evaluate_codes, round_half_away, usability
from services.cart.watch import WatchHub

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LIMITS = rules.Limits(max_lines=10, max_units=100)


def item(sku: str, eur: int | None = 1000, *, active: bool = True, usd: int | None = None) -> CatalogItem:
    prices = {k: v for k, v in (("EUR", eur), ("USD", usd)) if v is not None}
    return CatalogItem(f"items/{sku}", sku.title(), active, prices)


def cart_with(*lines: tuple[CatalogItem, int, Fulfillment], customer: str = "c1") -> Cart:
    cart = Cart(customer=customer)
    for found, quantity, fulfillment in lines:
        rules.add_line(
            cart,
            item=found,
            quantity=quantity,
            fulfillment=fulfillment,
            currency="EUR",
            channel=ChannelRef(1),
            now=NOW,
            limits=LIMITS,
        )
    return cart


SHIP = Fulfillment()
AT_S1 = Fulfillment(Method.PICKUP, "locations/s1", "Store 1")


def test_rounding_is_half_away_from_zero() -> None:
    assert [round_half_away(n, 10_000) for n in (4_999, 5_000, 15_000, -5_000)] == [0, 1, 2, -1]
    assert round_half_away(6666 * 1000, 10_000) == 667


def test_etags_are_versions_and_unknown_etags_never_match() -> None:
    assert version_of("7") == 7 and version_of('W/"7"') == 7
    assert version_of("garbage") is None


def test_adding_the_same_item_and_fulfilment_raises_the_line() -> None:
    shoe = item("shoe")
    cart = cart_with((shoe, 2, SHIP), (shoe, 1, AT_S1), (shoe, 3, SHIP))
    assert [(ln.line_id, ln.quantity, ln.fulfillment.method) for ln in cart.lines] == [
        ("l1", 5, Method.SHIP),
        ("l2", 1, Method.PICKUP),
    ]
    with pytest.raises(InvalidArgument):
        rules.add_line(
            cart,
            item=shoe,
            quantity=995,
            fulfillment=SHIP,
            currency="EUR",
            channel=ChannelRef(),
            now=NOW,
            limits=LIMITS,
        )
    changed = rules.update_line(cart, "l2", quantity=None, fulfillment=SHIP, now=NOW, limits=LIMITS)
    assert changed == ["l2", "l1"] and [(ln.line_id, ln.quantity) for ln in cart.lines] == [("l2", 6)]


def test_limits_and_currency_rules() -> None:
    cart = cart_with(*((item(f"i{n}"), 10, SHIP) for n in range(10)))
    with pytest.raises(FailedPrecondition) as caught:
        rules.add_line(
            cart,
            item=item("more"),
            quantity=1,
            fulfillment=SHIP,
            currency="EUR",
            channel=ChannelRef(),
            now=NOW,
            limits=LIMITS,
        )
    assert caught.value.reason == "CART_LINE_LIMIT"
    assert rules.resolve_currency(Cart("c"), "", "RON") == "RON"
    with pytest.raises(FailedPrecondition) as caught:
        rules.resolve_currency(cart, "USD", "EUR")
    assert caught.value.reason == "CURRENCY_MISMATCH"


def test_stale_snapshots_are_repriced_and_unsellable_items_keep_theirs() -> None:
    a, b = item("a"), item("b")
    cart = cart_with((a, 1, SHIP), (b, 1, SHIP))
    later = NOW + timedelta(minutes=20)
    assert stale_items(cart, later, timedelta(minutes=15)) == {"items/a", "items/b"}
    changed = reprice(cart, {"items/a": item("a", 1200), "items/b": item("b", 900, active=False)}, later)
    assert changed == ["l1"] and [ln.unit_price for ln in cart.lines] == [1200, 1000]
    assert stale_items(cart, later, timedelta(minutes=15)) == {"items/b"}


def rule(**kw: object) -> PromotionRule:
    values: dict[str, object] = {
        "name": "promotions/p",
        "code": "P",
        "display_name": "P",
        "active": True,
        **kw,
    }
    return PromotionRule(**values)  # type: ignore[arg-type]


def test_promotion_usability_and_eligibility() -> None:
    assert usability(rule(active=False), NOW, 0) is Reason.INACTIVE
    assert usability(rule(start_time=NOW + timedelta(seconds=1)), NOW, 0) is Reason.NOT_STARTED
    assert usability(rule(end_time=NOW), NOW, 0) is Reason.ENDED
    assert usability(rule(usage_limit=2, usage_count=2), NOW, 0) is Reason.USAGE_LIMIT_REACHED
    assert usability(rule(usage_limit_per_customer=1), NOW, 1) is Reason.CUSTOMER_LIMIT_REACHED
    assert usability(rule(), NOW, 5) is Reason.NONE


def test_codes_are_capped_at_the_subtotal_in_the_order_applied() -> None:
    cart = cart_with((item("a", 1000), 1, SHIP), (item("b", 500), 2, SHIP))
    from services.cart.domain.model import AppliedCode

    codes = [
        AppliedCode("HALF", "promotions/half"),
        AppliedCode("BIG", "promotions/big"),
        AppliedCode("B", "promotions/b"),
    ]
    found = {
        "promotions/half": rule(name="promotions/half", code="HALF", percent_off_bp=5000),
        "promotions/big": rule(name="promotions/big", code="BIG", amount_off={"EUR": 1500}),
        "promotions/b": rule(
            name="promotions/b",
            code="B",
            percent_off_bp=1000,
            items=frozenset({"items/b"}),
            minimum_subtotals={"EUR": 1500},
        ),
    }
    applied = evaluate_codes(codes, found, cart.lines, "EUR", NOW, {})
    assert [(c.discount, c.applicable, c.reason) for c in applied] == [
        (1000, True, Reason.NONE),
        (1000, True, Reason.NONE),  # capped: 2000 - 1000 left
        (0, False, Reason.MINIMUM_SUBTOTAL_NOT_MET),
    ]
    cart.codes = applied
    assert (cart.subtotal, cart.discount, cart.total) == (2000, 2000, 0)
    gone = evaluate_codes(codes[:1], {}, cart.lines, "EUR", NOW, {})
    assert gone[0].reason is Reason.INACTIVE and not gone[0].applicable


@pytest.mark.parametrize(
    ("mode", "quantities"),
    [(MergeMode.SUM_QUANTITIES, [5, 1, 1]), (MergeMode.KEEP_LARGER, [3, 1, 1]), (MergeMode.REPLACE, [2, 1])],
)
def test_merge_modes(mode: MergeMode, quantities: list[int]) -> None:
    a, b, c, dollars = item("a"), item("b"), item("c"), item("d", None, usd=100)
    target = cart_with((a, 3, SHIP), (c, 1, SHIP), customer="member")
    source = cart_with((a, 2, SHIP), (b, 1, AT_S1), customer="guest")
    source.lines.append(cart_with((item("d"), 1, SHIP)).lines[0])
    outcome = merge(target, source, mode, {"items/a": a, "items/b": b, "items/d": dollars}, NOW, LIMITS)
    assert [ln.quantity for ln in target.lines] == quantities
    assert outcome.dropped_items == ["items/d"] and outcome.merged_line_count == 2
    assert not source.lines and not source.currency
    again = merge(target, source, mode, {}, NOW, LIMITS)
    assert not again.changed


def test_order_groups_and_state() -> None:
    cart = cart_with(
        (item("a"), 1, AT_S1),
        (item("b"), 1, SHIP),
        (item("c"), 1, Fulfillment(Method.PICKUP, "locations/s2")),
        (item("d"), 1, AT_S1),
    )
    groups = plan_groups(cart.lines)
    assert [(g.pickup_store, [ln.item for ln in lines]) for g, lines in groups] == [
        ("", ["items/b"]),
        ("locations/s1", ["items/a", "items/d"]),
        ("locations/s2", ["items/c"]),
    ]
    order = r.Order(fulfillment_groups=[r.FulfillmentGroup(state=s) for s in (1, 1)])
    assert derive_state(order) == r.ORDER_STATE_PLACED
    order.fulfillment_groups[0].state = r.FULFILLMENT_GROUP_STATE_READY_FOR_PICKUP
    assert derive_state(order) == r.ORDER_STATE_READY_FOR_PICKUP
    order.fulfillment_groups[0].state = r.FULFILLMENT_GROUP_STATE_COLLECTED
    assert derive_state(order) == r.ORDER_STATE_PARTIALLY_FULFILLED
    order.fulfillment_groups[1].state = r.FULFILLMENT_GROUP_STATE_CANCELLED
    assert derive_state(order) == r.ORDER_STATE_COMPLETED
    order.fulfillment_groups[0].state = r.FULFILLMENT_GROUP_STATE_CANCELLED
    assert derive_state(order) == r.ORDER_STATE_CANCELLED


def updated(cart: str, version: int) -> ev.CartUpdatedEvent:
    return ev.CartUpdatedEvent(
        cart=cart,
        etag=str(version),
        kind=r.CART_CHANGE_KIND_LINE_ADDED,
        snapshot=r.Cart(name=cart, etag=str(version)),
    )


async def test_a_slow_watcher_gets_the_newest_snapshot_instead_of_a_backlog() -> None:
    hub = WatchHub(None, queue_size=2, max_age=5)

    async def read() -> r.Cart:
        return r.Cart(name="customers/c1/cart", etag="1")

    stream = hub.stream("customers/c1/cart", "", read)
    first = await anext(stream)
    assert (first.kind, first.etag) == (r.CART_CHANGE_KIND_SNAPSHOT, "1")
    for version in range(2, 12):
        hub.deliver(updated("customers/c1/cart", version))
    hub.deliver(updated("customers/other/cart", 99))
    caught_up = await anext(stream)
    assert (caught_up.kind, caught_up.etag) == (r.CART_CHANGE_KIND_SNAPSHOT, "11")
    hub.deliver(updated("customers/c1/cart", 11))  # a duplicate (local + NATS) is dropped
    hub.deliver(updated("customers/c1/cart", 12))
    nxt = await anext(stream)
    assert (nxt.kind, nxt.etag) == (r.CART_CHANGE_KIND_LINE_ADDED, "12")
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1)
    assert hub.watcher_count == 0
