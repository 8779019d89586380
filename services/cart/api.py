"""The CartService servicer: validates requests and turns protobuf into use-case calls and back.

Rules live in domain/, orchestration in carts.py, checkout.py, orders.py and promotion_admin.py;
this module only checks that each request is well-formed (every bad field reported at once)
and knows which use case answers which RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import cart_service_pb2_grpc as svc_grpc
from omni.cart.v1 import resources_pb2 as r
from omni_runtime.auth.permissions import Scope, current_scope
from omni_runtime.auth.tokens import TokenVerifier
from omni_runtime.context import current_principal
from omni_runtime.errors import OmniError, PermissionDenied
from omni_runtime.server import Runtime
from omni_runtime.validation import Checker
from services.cart.carts import CartOps, require_guest_proof
from services.cart.checkout import Checkout
from services.cart.convert import from_ts, fulfillment_from_proto
from services.cart.domain.merge import MergeMode
from services.cart.domain.model import MAX_LINE_QUANTITY, Fulfillment
from services.cart.orders import ORDER_PATTERN, ORDERS, OrderOps
from services.cart.promotion_admin import PROMOTION_PATTERN, PROMOTIONS, PromotionAdmin, update_paths
from services.cart.watch import WatchHub

CART_PATTERN = "customers/{customer}/cart"
CUSTOMER_PATTERN = "customers/{customer}"
ITEM_PATTERN = "items/{item}"
LOCATION_PATTERN = "locations/{location}"
LINE_FIELDS = ("quantity", "fulfillment")


def _cart(check: Checker, field: str, name: str) -> str:
    return check.name(field, name, CART_PATTERN).get("customer", "")


def _order(check: Checker, name: str) -> tuple[str, str]:
    found = check.name("name", name, ORDER_PATTERN)
    return found.get("customer", ""), found.get("order", "")


def _quantity(check: Checker, field: str, value: int) -> None:
    if not 1 <= value <= MAX_LINE_QUANTITY:
        check.fail(field, f"must be between 1 and {MAX_LINE_QUANTITY}", "OUT_OF_RANGE")


def _fulfillment(check: Checker, field: str, value: r.LineFulfillment) -> Fulfillment:
    if value.method == r.FULFILLMENT_METHOD_PICKUP:
        if check.require(f"{field}.pickup_store", value.pickup_store):
            check.name(f"{field}.pickup_store", value.pickup_store, LOCATION_PATTERN)
    elif value.method not in (r.FULFILLMENT_METHOD_SHIP, r.FULFILLMENT_METHOD_UNSPECIFIED):
        check.fail(f"{field}.method", "must be SHIP or PICKUP", "INVALID_ENUM")
    elif value.pickup_store:
        check.fail(f"{field}.pickup_store", "must be empty unless the method is PICKUP", "INVALID_FIELD")
    return fulfillment_from_proto(value)


def _store(check: Checker, field: str, value: str) -> None:
    if value:
        check.name(field, value, LOCATION_PATTERN)


def _code_change(request: svc.ApplyPromotionCodeRequest | svc.RemovePromotionCodeRequest) -> str:
    """Validate a request that applies or removes a promotion code; the cart's customer."""
    check = Checker()
    customer = _cart(check, "name", request.name)
    if check.require("code", request.code.strip()):
        _short(check, "code", request.code, 64)
    check.request_id("request_id", request.request_id)
    check.raise_if_invalid()
    return customer


def _pickup_change(request: svc.MarkOrderReadyForPickupRequest | svc.CollectOrderRequest) -> tuple[str, str]:
    """Validate a request about an order's pickup at a store; the customer and the order id."""
    check = Checker()
    customer, order = _order(check, request.name)
    _store(check, "pickup_store", request.pickup_store)
    check.request_id("request_id", request.request_id)
    check.raise_if_invalid()
    return customer, order


def _short(check: Checker, field: str, value: str, max_len: int) -> None:
    if len(value) > max_len:
        check.fail(field, f"must be at most {max_len} characters", "INVALID_LENGTH")


class CartServicer(svc_grpc.CartServiceServicer):
    def __init__(
        self,
        runtime: Runtime,
        carts: CartOps,
        checkout: Checkout,
        orders: OrderOps,
        promotions: PromotionAdmin,
        hub: WatchHub,
    ) -> None:
        self.runtime = runtime
        self.carts = carts
        self.checkout = checkout
        self.orders = orders
        self.promotions = promotions
        self.hub = hub
        self._verifier = TokenVerifier(runtime.key_source) if runtime.key_source is not None else None

    # ---------------------------------------------------------------------------------------
    # Cart
    # ---------------------------------------------------------------------------------------

    async def GetCart(self, request: svc.GetCartRequest, context: grpc.aio.ServicerContext) -> r.Cart:
        check = Checker()
        customer = _cart(check, "name", request.name)
        check.raise_if_invalid()
        return self.carts.to_proto(await self.carts.read(customer))

    async def AddCartLine(self, request: svc.AddCartLineRequest, context: grpc.aio.ServicerContext) -> r.Cart:
        check = Checker()
        customer = _cart(check, "name", request.name)
        line = request.line
        if check.require("line.item", line.item):
            check.name("line.item", line.item, ITEM_PATTERN)
        _quantity(check, "line.quantity", line.quantity)
        fulfillment = _fulfillment(check, "line.fulfillment", line.fulfillment)
        if request.currency_code:
            check.currency("currency_code", request.currency_code)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.carts.add_line(
            request,
            customer=customer,
            item=line.item,
            quantity=line.quantity,
            fulfillment=fulfillment,
            currency=request.currency_code,
        )

    async def UpdateCartLine(
        self, request: svc.UpdateCartLineRequest, context: grpc.aio.ServicerContext
    ) -> r.Cart:
        check = Checker()
        customer = _cart(check, "name", request.name)
        check.require("line_id", request.line_id)
        line = request.line
        if request.update_mask.paths:
            paths = set()
            for i, path in enumerate(request.update_mask.paths):
                top = path.split(".", 1)[0]
                if top not in LINE_FIELDS:
                    check.fail(
                        f"update_mask.paths[{i}]",
                        "only quantity and fulfillment can change",
                        "IMMUTABLE_FIELD",
                    )
                paths.add(top)
        else:
            paths = {"quantity"} if line.quantity else set()
            if line.HasField("fulfillment"):
                paths.add("fulfillment")
            if not paths:
                check.fail(
                    "update_mask", "nothing to update: set line.quantity or line.fulfillment", "REQUIRED"
                )
        quantity: int | None = None
        fulfillment: Fulfillment | None = None
        if "quantity" in paths:
            _quantity(check, "line.quantity", line.quantity)
            quantity = line.quantity
        if "fulfillment" in paths:
            fulfillment = _fulfillment(check, "line.fulfillment", line.fulfillment)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.carts.update_line(
            request, customer=customer, quantity=quantity, fulfillment=fulfillment
        )

    async def RemoveCartLine(
        self, request: svc.RemoveCartLineRequest, context: grpc.aio.ServicerContext
    ) -> r.Cart:
        check = Checker()
        customer = _cart(check, "name", request.name)
        check.require("line_id", request.line_id)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.carts.remove_line(request, customer=customer)

    async def ClearCart(self, request: svc.ClearCartRequest, context: grpc.aio.ServicerContext) -> r.Cart:
        check = Checker()
        customer = _cart(check, "name", request.name)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.carts.clear(request, customer=customer)

    async def ApplyPromotionCode(
        self, request: svc.ApplyPromotionCodeRequest, context: grpc.aio.ServicerContext
    ) -> r.Cart:
        return await self.carts.apply_code(request, customer=_code_change(request))

    async def RemovePromotionCode(
        self, request: svc.RemovePromotionCodeRequest, context: grpc.aio.ServicerContext
    ) -> r.Cart:
        return await self.carts.remove_code(request, customer=_code_change(request))

    async def MergeCarts(self, request: svc.MergeCartsRequest, context: grpc.aio.ServicerContext) -> r.Cart:
        check = Checker()
        target = _cart(check, "name", request.name)
        source = _cart(check, "source_cart", request.source_cart)
        if target and source and target == source:
            check.fail("source_cart", "must differ from name", "SAME_CART")
        if request.mode not in (r.MERGE_MODE_SUM_QUANTITIES, r.MERGE_MODE_KEEP_LARGER, r.MERGE_MODE_REPLACE):
            check.fail("mode", "must be SUM_QUANTITIES, KEEP_LARGER or REPLACE", "REQUIRED")
        own_data_only = current_scope.get() is Scope.SELF
        if own_data_only:
            check.require("source_guest_token", request.source_guest_token)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        if request.source_guest_token:
            await self._verify_guest(request.source_guest_token, f"customers/{source}")
        return await self.carts.merge_rpc(
            request,
            target_customer=target,
            source_customer=source,
            mode=MergeMode(request.mode),
            etag=request.etag,
            request_id=request.request_id,
        )

    async def _verify_guest(self, token: str, source: str) -> None:
        """The caller proves it held the guest's session by presenting the guest's token."""
        if self._verifier is None:
            raise PermissionDenied("guest tokens cannot be verified here", reason="GUEST_PROOF_INVALID")
        try:
            guest = await self._verifier.verify(token)
        except OmniError:
            raise PermissionDenied(
                "source_guest_token is not a valid access token",
                reason="GUEST_PROOF_INVALID",
                domain="omni.cart",
            ) from None
        require_guest_proof(current_principal.get().subject, guest.subject, guest.roles, source)

    async def WatchCart(
        self, request: svc.WatchCartRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[svc.CartChange]:
        check = Checker()
        customer = _cart(check, "name", request.name)
        check.raise_if_invalid()

        async def read() -> r.Cart:
            return self.carts.to_proto(await self.carts.read(customer))

        async for change in self.hub.stream(request.name, request.since_etag, read):
            yield change

    async def Checkout(self, request: svc.CheckoutRequest, context: grpc.aio.ServicerContext) -> r.Order:
        check = Checker()
        customer = _cart(check, "name", request.name)
        check.require("etag", request.etag)
        check.request_id("request_id", request.request_id, required=True)
        _short(check, "payment_reference", request.payment_reference, 200)
        if request.HasField("shipping_address"):
            address = request.shipping_address
            check.require("shipping_address.region_code", address.region_code)
            if not address.address_lines:
                check.fail("shipping_address.address_lines", "is required", "REQUIRED")
        check.raise_if_invalid()
        return await self.checkout.checkout(
            request,
            customer=customer,
            etag=request.etag,
            request_id=request.request_id,
            shipping_address=request.shipping_address if request.HasField("shipping_address") else None,
            payment_reference=request.payment_reference,
        )

    # ---------------------------------------------------------------------------------------
    # Orders
    # ---------------------------------------------------------------------------------------

    async def GetOrder(self, request: svc.GetOrderRequest, context: grpc.aio.ServicerContext) -> r.Order:
        check = Checker()
        customer, order = _order(check, request.name)
        check.raise_if_invalid()
        return await self.orders.get(customer, order)

    async def ListOrders(
        self, request: svc.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListOrdersResponse:
        check = Checker()
        parent = check.name("parent", request.parent, CUSTOMER_PATTERN, allow_wildcard=True)
        check.raise_if_invalid()
        # A token is valid for the same parent and the same caller's store (STORE scope narrows).
        query = ORDERS.parse(request, scope=(request.parent, current_principal.get().store))
        customer = parent["customer"]
        found, token, total = await self.orders.list(None if customer == "-" else customer, query)
        return svc.ListOrdersResponse(orders=found, next_page_token=token, total_size=total)

    async def CancelOrder(
        self, request: svc.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> r.Order:
        check = Checker()
        customer, order = _order(check, request.name)
        _short(check, "reason", request.reason, 500)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.orders.cancel(request, customer=customer, order_id=order)

    async def MarkOrderReadyForPickup(
        self, request: svc.MarkOrderReadyForPickupRequest, context: grpc.aio.ServicerContext
    ) -> r.Order:
        customer, order = _pickup_change(request)
        return await self.orders.mark_ready(
            request,
            customer=customer,
            order_id=order,
            deadline=from_ts(request.pickup_deadline) if request.HasField("pickup_deadline") else None,
        )

    async def CollectOrder(
        self, request: svc.CollectOrderRequest, context: grpc.aio.ServicerContext
    ) -> r.Order:
        customer, order = _pickup_change(request)
        return await self.orders.collect(request, customer=customer, order_id=order)

    async def MarkOrderShipped(
        self, request: svc.MarkOrderShippedRequest, context: grpc.aio.ServicerContext
    ) -> r.Order:
        check = Checker()
        customer, order = _order(check, request.name)
        _short(check, "tracking_reference", request.tracking_reference, 200)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.orders.ship(request, customer=customer, order_id=order)

    # ---------------------------------------------------------------------------------------
    # Promotions
    # ---------------------------------------------------------------------------------------

    async def CreatePromotion(
        self, request: svc.CreatePromotionRequest, context: grpc.aio.ServicerContext
    ) -> r.Promotion:
        return await self.promotions.create(request)

    async def GetPromotion(
        self, request: svc.GetPromotionRequest, context: grpc.aio.ServicerContext
    ) -> r.Promotion:
        check = Checker()
        check.name("name", request.name, PROMOTION_PATTERN)
        check.raise_if_invalid()
        return await self.promotions.get(request.name)

    async def ListPromotions(
        self, request: svc.ListPromotionsRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListPromotionsResponse:
        found, token, total = await self.promotions.list(PROMOTIONS.parse(request))
        return svc.ListPromotionsResponse(promotions=found, next_page_token=token, total_size=total)

    async def UpdatePromotion(
        self, request: svc.UpdatePromotionRequest, context: grpc.aio.ServicerContext
    ) -> r.Promotion:
        check = Checker()
        check.name("promotion.name", request.promotion.name, PROMOTION_PATTERN)
        paths = update_paths(check, request.update_mask, request.promotion)
        if not paths:
            check.fail("update_mask", "nothing to update", "REQUIRED")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.promotions.update(request, paths)
