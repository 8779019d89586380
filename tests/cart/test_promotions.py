"""Promotion codes: one set of rules on every channel, counted when an order is placed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import resources_pb2 as r
from omni.type.v1 import money_pb2
from tests.cart.conftest import ADDRESS, Caller, Catalogue, add, details, eur, reason, rid, uid


async def fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def code() -> str:
    return uid("SAVE").upper()


@pytest.fixture
def marketer(staff) -> Caller:  # type: ignore[no-untyped-def]
    return staff("marketer")


async def create(marketer: Caller, **fields) -> r.Promotion:  # type: ignore[no-untyped-def]
    fields.setdefault("code", code())
    fields.setdefault("display_name", "A deal")
    fields.setdefault("active", True)
    return await marketer.CreatePromotion(
        svc.CreatePromotionRequest(promotion=r.Promotion(**fields), request_id=rid())
    )


async def test_marketers_create_read_list_and_update_promotions(marketer: Caller, customer) -> None:
    created = await create(
        marketer, code="summer-" + uid("x")[2:], percent_off_basis_points=1000, minimum_subtotals=[eur(5000)]
    )
    assert (
        created.name.startswith("promotions/")
        and created.code == created.code.upper()
        and created.etag == "1"
    )
    assert await marketer.GetPromotion(svc.GetPromotionRequest(name=created.name)) == created
    error = await fails(
        create(marketer, code=created.code.lower(), percent_off_basis_points=500),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert details(error)["ErrorInfo"].metadata["field"] == "code"
    error = await fails(
        create(
            marketer,
            code="x",
            display_name="",
            percent_off_basis_points=0,
            minimum_subtotals=[eur(-1)],
            items=["bad"],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {v.field for v in details(error)["BadRequest"].field_violations} == {
        "promotion.code",
        "promotion.display_name",
        "promotion.percent_off_basis_points",
        "promotion.minimum_subtotals[0].minor_units",
        "promotion.items[0]",
    }
    listed = await marketer.ListPromotions(svc.ListPromotionsRequest(filter=f'code = "{created.code}"'))
    assert [p.name for p in listed.promotions] == [created.name] and listed.total_size == 1
    updated = await marketer.UpdatePromotion(
        svc.UpdatePromotionRequest(
            promotion=r.Promotion(name=created.name, display_name="Summer", etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            request_id=rid(),
        )
    )
    assert (
        updated.display_name == "Summer" and updated.etag == "2" and updated.percent_off_basis_points == 1000
    )
    error = await fails(
        marketer.UpdatePromotion(
            svc.UpdatePromotionRequest(
                promotion=r.Promotion(name=created.name, active=False, etag="1"),
                update_mask=field_mask_pb2.FieldMask(paths=["active"]),
            )
        ),
        grpc.StatusCode.ABORTED,
    )
    assert details(error)["ErrorInfo"].metadata["current_etag"] == "2"
    _, shopper = customer()
    await fails(create(shopper, percent_off_basis_points=100), grpc.StatusCode.PERMISSION_DENIED)


async def test_codes_apply_by_the_same_rules_on_every_channel(
    catalogue: Catalogue, customer, marketer: Caller
) -> None:
    shoe, sock = await catalogue.item(3333), await catalogue.item(500)
    ten_percent_on_shoes = await create(
        marketer, percent_off_basis_points=1000, items=[shoe], minimum_subtotals=[eur(5000)]
    )
    five_off = await create(marketer, amount_off=r.AmountOff(amounts=[eur(500)]))
    name, web = customer("web")
    till = Caller(web.stub, web.metadata[0][1].removeprefix("Bearer "), "store_pos")
    cart_name = f"{name}/cart"
    await web.AddCartLine(add(cart_name, shoe, 1, request_id=rid()))
    cart = await web.ApplyPromotionCode(
        svc.ApplyPromotionCodeRequest(
            name=cart_name, code=ten_percent_on_shoes.code.lower(), request_id=rid()
        )
    )
    applied = cart.promotions[0]
    assert (applied.code, applied.applicable) == (ten_percent_on_shoes.code, False)
    assert applied.ineligibility_reason == r.INELIGIBILITY_REASON_MINIMUM_SUBTOTAL_NOT_MET
    # Socks do not count towards a shoes-only minimum; a second pair of shoes does.
    cart = await till.AddCartLine(add(cart_name, sock, 4, request_id=rid()))
    assert not cart.promotions[0].applicable
    cart = await till.AddCartLine(add(cart_name, shoe, 1, request_id=rid()))
    assert (
        cart.promotions[0].applicable and cart.promotions[0].discount.minor_units == 667
    )  # 10% of 66.66, half up
    cart = await till.ApplyPromotionCode(
        svc.ApplyPromotionCodeRequest(name=cart_name, code=five_off.code, request_id=rid())
    )
    assert [p.discount.minor_units for p in cart.promotions] == [667, 500]
    assert (cart.subtotal.minor_units, cart.discount.minor_units, cart.total.minor_units) == (
        8666,
        1167,
        7499,
    )
    same = await web.GetCart(svc.GetCartRequest(name=cart_name))
    assert same.total == cart.total and same.promotions == cart.promotions
    # Applying a code already on the cart changes nothing.
    again = await web.ApplyPromotionCode(
        svc.ApplyPromotionCodeRequest(name=cart_name, code=five_off.code, request_id=rid())
    )
    assert again.etag == cart.etag
    removed = await web.RemovePromotionCode(
        svc.RemovePromotionCodeRequest(name=cart_name, code=five_off.code.lower(), request_id=rid())
    )
    assert [p.code for p in removed.promotions] == [
        ten_percent_on_shoes.code
    ] and removed.total.minor_units == 7999

    order = await web.Checkout(
        svc.CheckoutRequest(name=cart_name, etag=removed.etag, request_id=rid(), shipping_address=ADDRESS)
    )
    assert order.discount.minor_units == 667 and [p.code for p in order.promotions] == [
        ten_percent_on_shoes.code
    ]
    counted = await marketer.GetPromotion(svc.GetPromotionRequest(name=ten_percent_on_shoes.name))
    assert counted.usage_count == 1


async def test_codes_that_cannot_be_used(catalogue: Catalogue, customer, marketer: Caller) -> None:
    item = await catalogue.item(1000)
    name, api = customer()
    cart_name = f"{name}/cart"
    await api.AddCartLine(add(cart_name, item, 1, request_id=rid()))
    error = await fails(
        api.ApplyPromotionCode(svc.ApplyPromotionCodeRequest(name=cart_name, code="NO-SUCH-CODE")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert reason(error) == "PROMOTION_CODE_NOT_FOUND"
    now = datetime.now(UTC)
    cases = {
        "INELIGIBILITY_REASON_INACTIVE": await create(marketer, percent_off_basis_points=100, active=False),
        "INELIGIBILITY_REASON_NOT_STARTED": await create(
            marketer, percent_off_basis_points=100, start_time=stamp(now + timedelta(days=1))
        ),
        "INELIGIBILITY_REASON_ENDED": await create(
            marketer,
            percent_off_basis_points=100,
            start_time=stamp(now - timedelta(days=2)),
            end_time=stamp(now - timedelta(days=1)),
        ),
    }
    for why, promotion in cases.items():
        error = await fails(
            api.ApplyPromotionCode(svc.ApplyPromotionCodeRequest(name=cart_name, code=promotion.code)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        info = details(error)["ErrorInfo"]
        assert (info.reason, info.metadata["ineligibility_reason"]) == ("PROMOTION_NOT_USABLE", why)
    dollars = await create(
        marketer,
        amount_off=r.AmountOff(amounts=[money_pb2.Money(currency_code="USD", minor_units=100)]),
    )
    cart = await api.ApplyPromotionCode(svc.ApplyPromotionCodeRequest(name=cart_name, code=dollars.code))
    assert cart.promotions[0].ineligibility_reason == r.INELIGIBILITY_REASON_CURRENCY_NOT_SUPPORTED


async def test_usage_limits_are_counted_when_orders_are_placed(
    catalogue: Catalogue, customer, marketer: Caller
) -> None:
    item = await catalogue.item(1000, stock=20)
    once = await create(marketer, percent_off_basis_points=500, usage_limit=1)
    per_customer = await create(
        marketer, amount_off=r.AmountOff(amounts=[eur(100)]), usage_limit_per_customer=1
    )
    first, api = customer()
    second, other = customer()
    for who, caller in ((first, api), (second, other)):
        await caller.AddCartLine(add(f"{who}/cart", item, 1, request_id=rid()))
    await other.ApplyPromotionCode(svc.ApplyPromotionCodeRequest(name=f"{second}/cart", code=once.code))
    await api.ApplyPromotionCode(svc.ApplyPromotionCodeRequest(name=f"{first}/cart", code=once.code))
    cart = await api.ApplyPromotionCode(
        svc.ApplyPromotionCodeRequest(name=f"{first}/cart", code=per_customer.code)
    )
    order = await api.Checkout(
        svc.CheckoutRequest(name=f"{first}/cart", etag=cart.etag, request_id=rid(), shipping_address=ADDRESS)
    )
    assert order.discount.minor_units == 50 + 100
    # The other customer's cart still shows the code until its next change; checkout sees it is gone.
    held = await other.GetCart(svc.GetCartRequest(name=f"{second}/cart"))
    error = await fails(
        other.Checkout(
            svc.CheckoutRequest(
                name=f"{second}/cart", etag=held.etag, request_id=rid(), shipping_address=ADDRESS
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "PRICE_CHANGED"
    now_shown = await other.GetCart(svc.GetCartRequest(name=f"{second}/cart"))
    assert now_shown.promotions[0].ineligibility_reason == r.INELIGIBILITY_REASON_USAGE_LIMIT_REACHED
    assert now_shown.total.minor_units == 1000
    # One use per customer: the first customer cannot apply it again.
    await api.AddCartLine(add(f"{first}/cart", item, 1, request_id=rid()))
    error = await fails(
        api.ApplyPromotionCode(svc.ApplyPromotionCodeRequest(name=f"{first}/cart", code=per_customer.code)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert (
        details(error)["ErrorInfo"].metadata["ineligibility_reason"]
        == "INELIGIBILITY_REASON_CUSTOMER_LIMIT_REACHED"
    )


async def test_listing_promotions_by_item_pages_through_open_ended_ones(
    marketer: Caller, catalogue: Catalogue
) -> None:
    """``items:`` filters (it used to fail as INTERNAL), and a promotion without an end sorts last
    by ``end_time`` on every page (its NULL end is part of the page token's key)."""
    item = await catalogue.item(700)
    now = datetime.now(UTC)
    created = [
        await create(marketer, percent_off_basis_points=100, items=[item], end_time=stamp(end))
        if end is not None
        else await create(marketer, percent_off_basis_points=100, items=[item])
        for end in (None, now + timedelta(days=2), None, now + timedelta(days=1))
    ]
    expected = [created[3].name, created[1].name, *sorted([created[0].name, created[2].name])]
    seen: list[str] = []
    token = ""
    while True:
        page = await marketer.ListPromotions(
            svc.ListPromotionsRequest(
                filter=f'items:"{item}"', order_by="end_time", page_size=1, page_token=token
            )
        )
        assert page.total_size == 4
        seen += [p.name for p in page.promotions]
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    error = await fails(
        marketer.ListPromotions(svc.ListPromotionsRequest(filter=f'items = "{item}"')),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details(error)["BadRequest"].field_violations[0].field == "filter"
    assert details(error)["ErrorInfo"].domain == "omni.cart"
