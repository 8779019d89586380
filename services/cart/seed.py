"""Cart's demo data for the local platform (``omni_runtime.demo`` runs ``DEMO``): one promotion.

``WELCOME10`` takes 10 % off a cart of at least 20.00 EUR (100.00 RON), once per customer, on
every channel, which is what "same promotions on the web and at the till" needs to show. Created
through CartService as the demo admin under a fixed id, so an interrupted load is finished by the
next start without a second promotion.
"""

from __future__ import annotations

import grpc

from omni.cart.v1 import cart_service_pb2 as pb
from omni.cart.v1 import cart_service_pb2_grpc, resources_pb2
from omni.type.v1 import money_pb2
from omni_runtime.demo import DemoContext, DemoResult, DemoSeed

PROMOTION_ID = "welcome10"
CODE = "WELCOME10"


def _stub(demo: DemoContext) -> cart_service_pb2_grpc.CartServiceStub:
    return cart_service_pb2_grpc.CartServiceStub(demo.channel("cart"))


async def is_empty(demo: DemoContext) -> bool:
    return not (await _stub(demo).ListPromotions(pb.ListPromotionsRequest(page_size=1))).promotions


async def load(demo: DemoContext) -> DemoResult:
    promotion = resources_pb2.Promotion(
        code=CODE,
        display_name="10% off your first order",
        percent_off_basis_points=1000,
        minimum_subtotals=[
            money_pb2.Money(currency_code="EUR", minor_units=2000),
            money_pb2.Money(currency_code="RON", minor_units=10000),
        ],
        usage_limit_per_customer=1,
        active=True,
    )
    try:
        await _stub(demo).CreatePromotion(
            pb.CreatePromotionRequest(
                promotion=promotion, promotion_id=PROMOTION_ID, request_id=demo.request_id("promotion")
            )
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # created by an interrupted load
            raise
    return DemoResult(
        lines=[f"promotion         {CODE}: 10% off from 20.00 EUR / 100.00 RON, once per customer"],
        facts={"code": CODE, "promotion": f"promotions/{PROMOTION_ID}"},
    )


DEMO = DemoSeed(is_empty=is_empty, load=load)
