"""The InventoryService servicer: validates requests, applies store scopes, calls the use cases.

Every request is validated completely before any work (one INVALID_ARGUMENT listing every bad
field). Authentication and role checks already ran in the runtime's interceptors; what is left
here is the STORE scope of store associates, which needs the location a request is about.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.auth.permissions import Scope, current_scope, require_store
from omni_runtime.context import current_principal
from omni_runtime.errors import InvalidArgument, PermissionDenied
from omni_runtime.validation import Checker
from services.inventory import catalogue, ledger, reservations, subscriptions
from services.inventory.coalesced import Coalescer
from services.inventory.convert import (
    CUSTOMER,
    ITEM,
    LOCATION,
    MOVEMENT,
    RESERVATION,
    STOCK_LEVEL,
    SUBSCRIPTION,
    location_name,
)
from services.inventory.domain import DOMAIN, allocation, geo
from services.inventory.domain.resources import ITEM_FIELDS, LOCATION_FIELDS, check_item, check_location
from services.inventory.domain.stock import ADJUSTMENTS
from services.inventory.txn import Unit

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

MAX_BATCH_ITEMS = 1000
MAX_RESERVATION_LINES = 100
MAX_AVAILABILITY_ITEMS = 100
MAX_AVAILABILITY_LOCATIONS = 50
MAX_NEARBY_RADIUS_M = 200_000
MAX_NEARBY_LOCATIONS = 50
LEVEL_SETTINGS = ("safety_stock", "low_stock_threshold")


def _raise_if_invalid(check: Checker) -> None:
    if check.violations:
        raise InvalidArgument(check.violations, domain=DOMAIN)


def _timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _duration(value: duration_pb2.Duration) -> timedelta:
    return value.ToTimedelta()


def _authorize_reservation(reservation: res.Reservation) -> None:
    """A store associate acts only on reservations held entirely at their store."""
    for line in reservation.lines:
        for part in line.allocations:
            require_store(part.location)


class InventoryServicer(inventory_service_pb2_grpc.InventoryServiceServicer):
    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        # Reservations, commits and releases on one stock level are served in groups.
        self.coalescer = Coalescer(unit)

    # --- items ---------------------------------------------------------------------------------

    async def GetItem(self, request: svc.GetItemRequest, context: Context) -> res.Item:
        check = Checker()
        ids = check.name("name", request.name, ITEM)
        _raise_if_invalid(check)
        return await catalogue.get_item(self.unit, ids["item"])

    async def BatchGetItems(
        self, request: svc.BatchGetItemsRequest, context: Context
    ) -> svc.BatchGetItemsResponse:
        check = Checker()
        if check.require("names", list(request.names)) and len(request.names) > MAX_BATCH_ITEMS:
            check.fail("names", f"must have at most {MAX_BATCH_ITEMS} entries", "TOO_MANY")
        skus = [check.name(f"names[{i}]", name, ITEM).get("item", "") for i, name in enumerate(request.names)]
        _raise_if_invalid(check)
        return svc.BatchGetItemsResponse(items=await catalogue.get_items(self.unit, skus))

    async def ListItems(self, request: svc.ListItemsRequest, context: Context) -> svc.ListItemsResponse:
        check = Checker()
        query = catalogue.ITEMS.parse(request, check, scope=("items",))
        _raise_if_invalid(check)
        return await catalogue.list_items(self.unit, query)

    async def CreateItem(self, request: svc.CreateItemRequest, context: Context) -> res.Item:
        check = Checker()
        if check.require("item_id", request.item_id):
            check.name("item_id", f"items/{request.item_id}", ITEM)
        if not request.HasField("item"):
            check.fail("item", "is required", "REQUIRED")
        else:
            check_item(check, request.item, "item")
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await catalogue.create_item(self.unit, request)

    async def UpdateItem(self, request: svc.UpdateItemRequest, context: Context) -> res.Item:
        check = Checker()
        ids = check.name("item.name", request.item.name, ITEM)
        if request.update_mask.paths:
            fields = check.update_mask("update_mask", request.update_mask, ITEM_FIELDS, res.Item())
        else:
            fields = catalogue.set_item_fields(request.item)
        check_item(check, request.item, "item", fields)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await catalogue.update_item(self.unit, request, ids["item"], fields)

    async def BatchUpsertItems(
        self, request: svc.BatchUpsertItemsRequest, context: Context
    ) -> svc.BatchUpsertItemsResponse:
        check = Checker()
        fields = check.update_mask("update_mask", request.update_mask, ITEM_FIELDS, res.Item())
        if check.require("items", list(request.items)) and len(request.items) > MAX_BATCH_ITEMS:
            check.fail("items", f"must have at most {MAX_BATCH_ITEMS} entries", "TOO_MANY")
        seen: dict[str, int] = {}
        for i, item in enumerate(request.items):
            ids = check.name(f"items[{i}].name", item.name, ITEM)
            if ids and ids["item"] in seen:
                check.fail(f"items[{i}].name", f"repeats items[{seen[ids['item']]}]", "DUPLICATE")
            elif ids:
                seen[ids["item"]] = i
            # Only the mask's fields are written to existing items; items that turn out to be new
            # are created with every field and validated in full once that is known.
            check_item(check, item, f"items[{i}]", fields)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await catalogue.batch_upsert_items(self.unit, request, fields)

    # --- locations -----------------------------------------------------------------------------

    async def GetLocation(self, request: svc.GetLocationRequest, context: Context) -> res.Location:
        check = Checker()
        ids = check.name("name", request.name, LOCATION)
        _raise_if_invalid(check)
        return await catalogue.get_location(self.unit, ids["location"])

    async def ListLocations(
        self, request: svc.ListLocationsRequest, context: Context
    ) -> svc.ListLocationsResponse:
        check = Checker()
        query = catalogue.LOCATIONS.parse(request, check, scope=("locations",))
        _raise_if_invalid(check)
        return await catalogue.list_locations(self.unit, query)

    async def CreateLocation(self, request: svc.CreateLocationRequest, context: Context) -> res.Location:
        check = Checker()
        if request.location_id:
            check.name("location_id", f"locations/{request.location_id}", LOCATION)
        if not request.HasField("location"):
            check.fail("location", "is required", "REQUIRED")
        else:
            check_location(check, request.location, "location")
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await catalogue.create_location(self.unit, request)

    async def UpdateLocation(self, request: svc.UpdateLocationRequest, context: Context) -> res.Location:
        check = Checker()
        ids = check.name("location.name", request.location.name, LOCATION)
        if request.update_mask.paths:
            paths = check.update_mask("update_mask", request.update_mask, LOCATION_FIELDS, res.Location())
            fields = sorted({p.split(".", 1)[0] for p in paths})
        else:
            fields = catalogue.set_location_fields(request.location)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await catalogue.update_location(self.unit, request, ids["location"], fields)

    # --- stock levels and movements ------------------------------------------------------------

    async def GetStockLevel(self, request: svc.GetStockLevelRequest, context: Context) -> res.StockLevel:
        check = Checker()
        ids = check.name("name", request.name, STOCK_LEVEL)
        _raise_if_invalid(check)
        return await ledger.get_stock_level(self.unit, ids["location"], ids["item"])

    async def ListStockLevels(
        self, request: svc.ListStockLevelsRequest, context: Context
    ) -> svc.ListStockLevelsResponse:
        check = Checker()
        ids = check.name("parent", request.parent, LOCATION, allow_wildcard=True)
        query = ledger.LEVELS.parse(request, check, scope=("stockLevels", request.parent))
        _raise_if_invalid(check)
        return await ledger.list_stock_levels(self.unit, ids["location"], query)

    async def UpdateStockLevel(
        self, request: svc.UpdateStockLevelRequest, context: Context
    ) -> res.StockLevel:
        check = Checker()
        ids = check.name("stock_level.name", request.stock_level.name, STOCK_LEVEL)
        fields = check.update_mask("update_mask", request.update_mask, LEVEL_SETTINGS, res.StockLevel())
        for f in fields:
            if getattr(request.stock_level, f) < 0:
                check.fail(f"stock_level.{f}", "must not be negative", "OUT_OF_RANGE")
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        require_store(location_name(ids["location"]))
        return await ledger.update_stock_level(self.unit, request, ids["location"], ids["item"], fields)

    async def AdjustStock(self, request: svc.AdjustStockRequest, context: Context) -> svc.AdjustStockResponse:
        check = Checker()
        ids = check.name("name", request.name, STOCK_LEVEL)
        rule = ADJUSTMENTS.get(request.reason)
        if rule is None:
            check.fail(
                "reason",
                "is required: RECEIPT, SALE, RETURN, CORRECTION, DAMAGE, TRANSFER_IN or TRANSFER_OUT",
                "REQUIRED",
            )
        change = request.WhichOneof("change")
        if change is None:
            check.fail("delta", "exactly one of delta and on_hand_count is required", "REQUIRED")
        elif change == "on_hand_count":
            if request.on_hand_count < 0:
                check.fail("on_hand_count", "must not be negative", "OUT_OF_RANGE")
            if rule is not None and not rule.accepts_count:
                check.fail(
                    "on_hand_count", "is accepted only with reason CORRECTION", "COUNT_NEEDS_CORRECTION"
                )
        elif request.delta == 0:
            check.fail("delta", "must not be 0", "OUT_OF_RANGE")
        elif rule is not None and rule.sign and (request.delta > 0) != (rule.sign > 0):
            sign = "positive" if rule.sign > 0 else "negative"
            check.fail(
                "delta", f"must be {sign} for {res.AdjustmentReason.Name(request.reason)}", "WRONG_SIGN"
            )
        check.length("reason_text", request.reason_text, max_len=500)
        check.length("reference", request.reference, max_len=200)
        check.request_id("request_id", request.request_id, required=True)
        _raise_if_invalid(check)
        require_store(location_name(ids["location"]))
        return await ledger.adjust_stock(
            self.unit, request, ids["location"], ids["item"], ADJUSTMENTS[request.reason]
        )

    async def GetStockMovement(
        self, request: svc.GetStockMovementRequest, context: Context
    ) -> res.StockMovement:
        check = Checker()
        ids = check.name("name", request.name, MOVEMENT)
        _raise_if_invalid(check)
        require_store(location_name(ids["location"]))
        return await ledger.get_stock_movement(self.unit, ids["location"], ids["item"], ids["movement"])

    async def ListStockMovements(
        self, request: svc.ListStockMovementsRequest, context: Context
    ) -> svc.ListStockMovementsResponse:
        check = Checker()
        ids = check.name("parent", request.parent, STOCK_LEVEL, allow_wildcard=True)
        query = ledger.MOVEMENTS.parse(request, check, scope=("stockMovements", request.parent))
        _raise_if_invalid(check)
        require_store(location_name(ids["location"]))
        return await ledger.list_stock_movements(self.unit, ids["location"], ids["item"], query)

    # --- availability --------------------------------------------------------------------------

    async def CheckAvailability(
        self, request: svc.CheckAvailabilityRequest, context: Context
    ) -> svc.CheckAvailabilityResponse:
        check = Checker()
        skus: list[str] = []
        if check.require("items", list(request.items)) and len(request.items) > MAX_AVAILABILITY_ITEMS:
            check.fail("items", f"must have at most {MAX_AVAILABILITY_ITEMS} entries", "TOO_MANY")
        for i, name in enumerate(request.items):
            ids = check.name(f"items[{i}]", name, ITEM)
            if ids and ids["item"] in skus:
                check.fail(f"items[{i}]", "is repeated", "DUPLICATE")
            elif ids:
                skus.append(ids["item"])
        location_ids: list[str] = []
        scope = request.WhichOneof("scope")
        if scope is None:
            check.fail("locations", "exactly one of locations, near and ship_from is required", "REQUIRED")
        elif scope == "locations":
            names = list(request.locations.locations)
            if check.require("locations.locations", names) and len(names) > MAX_AVAILABILITY_LOCATIONS:
                check.fail(
                    "locations.locations",
                    f"must have at most {MAX_AVAILABILITY_LOCATIONS} entries",
                    "TOO_MANY",
                )
            for i, name in enumerate(names):
                ids = check.name(f"locations.locations[{i}]", name, LOCATION)
                if ids and ids["location"] in location_ids:
                    check.fail(f"locations.locations[{i}]", "is repeated", "DUPLICATE")
                elif ids:
                    location_ids.append(ids["location"])
        elif scope == "near":
            near = request.near
            if not near.HasField("point"):
                check.fail("near.point", "is required", "REQUIRED")
            elif not geo.valid_point(near.point.latitude, near.point.longitude):
                check.fail(
                    "near.point",
                    "latitude must be within [-90, 90], longitude within [-180, 180]",
                    "OUT_OF_RANGE",
                )
            check.range("near.radius_meters", near.radius_meters, low=1, high=MAX_NEARBY_RADIUS_M)
            check.range("near.max_locations", near.max_locations, low=0, high=MAX_NEARBY_LOCATIONS)
        elif not request.ship_from:
            check.fail("ship_from", "must be true when given", "INVALID_FIELD")
        _raise_if_invalid(check)
        return await ledger.check_availability(self.unit, request, skus, location_ids)

    # --- reservations --------------------------------------------------------------------------

    def _new_reservation(self, check: Checker, r: res.Reservation) -> reservations.NewReservation:
        lines: list[allocation.Line] = []
        if check.require("reservation.lines", list(r.lines)) and len(r.lines) > MAX_RESERVATION_LINES:
            check.fail("reservation.lines", f"must have at most {MAX_RESERVATION_LINES} entries", "TOO_MANY")
        pairs: dict[tuple[str, str], int] = {}
        store_scope = current_scope.get() is Scope.STORE
        for i, line in enumerate(r.lines):
            path = f"reservation.lines[{i}]"
            item = check.name(f"{path}.item", line.item, ITEM).get("item", "")
            location = check.optional_name(f"{path}.location", line.location, LOCATION).get("location", "")
            if line.quantity <= 0:
                check.fail(f"{path}.quantity", "must be greater than 0", "OUT_OF_RANGE")
            if line.allocations:
                check.fail(f"{path}.allocations", "is output only", "OUTPUT_ONLY")
            if item and (item, location) in pairs:
                check.fail(
                    f"{path}",
                    f"repeats the item and location of lines[{pairs[(item, location)]}]",
                    "DUPLICATE",
                )
            pairs.setdefault((item, location), i)
            if store_scope and not line.location:
                check.fail(
                    f"{path}.location", "a store associate must reserve at their own store", "REQUIRED"
                )
            lines.append(allocation.Line(i, item, line.quantity, location))
        if r.strategy not in res.AllocationStrategy.values():
            check.fail("reservation.strategy", "is not a known allocation strategy", "INVALID_ENUM")
        strategy = allocation.effective_strategy(r.strategy, lines)
        if strategy == allocation.FIXED and any(not line.location for line in lines):
            check.fail(
                "reservation.lines", "FIXED_LOCATION needs a location on every line", "LOCATION_REQUIRED"
            )
        near: tuple[float, float] | None = None
        if r.HasField("near"):
            if geo.valid_point(r.near.latitude, r.near.longitude):
                near = (r.near.latitude, r.near.longitude)
            else:
                check.fail(
                    "reservation.near",
                    "latitude must be within [-90, 90], longitude within [-180, 180]",
                    "OUT_OF_RANGE",
                )
        elif strategy == allocation.NEAREST:
            check.fail("reservation.near", "is required with ALLOCATION_STRATEGY_NEAREST", "REQUIRED")
        now = datetime.now(UTC)
        expiration = r.WhichOneof("expiration")
        expire_time: datetime | None = None
        ttl = reservations.DEFAULT_TTL
        if expiration == "expire_time":
            expire_time = _timestamp(r.expire_time)
            if expire_time <= now:
                check.fail("reservation.expire_time", "must be in the future", "OUT_OF_RANGE")
            elif expire_time > now + reservations.MAX_TTL:
                check.fail("reservation.expire_time", "must be at most 14 days ahead", "OUT_OF_RANGE")
        elif expiration == "ttl":
            ttl = _duration(r.ttl)
            if not timedelta(0) < ttl <= reservations.MAX_TTL:
                check.fail("reservation.ttl", "must be positive and at most 14 days", "OUT_OF_RANGE")
        check.length("reservation.owner", r.owner, max_len=500)
        return reservations.NewReservation(
            lines=lines,
            strategy=strategy,
            near=near,
            allow_split=r.allow_split,
            pickup=r.pickup,
            expire_time=expire_time,
            ttl=ttl,
            owner=r.owner,
        )

    async def CreateReservation(
        self, request: svc.CreateReservationRequest, context: Context
    ) -> res.Reservation:
        check = Checker()
        if not request.HasField("reservation"):
            check.fail("reservation", "is required", "REQUIRED")
        spec = self._new_reservation(check, request.reservation)
        check.request_id("request_id", request.request_id, required=True)
        _raise_if_invalid(check)
        for line in spec.lines:
            if line.location:
                require_store(location_name(line.location))
        return await self.coalescer.create(request, spec)

    async def GetReservation(self, request: svc.GetReservationRequest, context: Context) -> res.Reservation:
        check = Checker()
        ids = check.name("name", request.name, RESERVATION)
        _raise_if_invalid(check)
        reservation = await reservations.get_reservation(self.unit, ids["reservation"])
        _authorize_reservation(reservation)
        return reservation

    async def ListReservations(
        self, request: svc.ListReservationsRequest, context: Context
    ) -> svc.ListReservationsResponse:
        check = Checker()
        query = reservations.RESERVATIONS.parse(request, check, scope=("reservations",))
        _raise_if_invalid(check)
        at_location = None
        if current_scope.get() is Scope.STORE:
            store = current_principal.get().store
            if not store:
                raise PermissionDenied(
                    "this store associate has no store", reason="STORE_SCOPE", domain=DOMAIN
                )
            at_location = store.removeprefix("locations/")
        return await reservations.list_reservations(self.unit, query, at_location=at_location)

    async def ExtendReservation(
        self, request: svc.ExtendReservationRequest, context: Context
    ) -> res.Reservation:
        check = Checker()
        ids = check.name("name", request.name, RESERVATION)
        expiration = request.WhichOneof("expiration")
        if expiration is None:
            check.fail("expire_time", "exactly one of expire_time and ttl is required", "REQUIRED")
        elif expiration == "ttl" and not timedelta(0) < _duration(request.ttl) <= reservations.MAX_TTL:
            check.fail("ttl", "must be positive and at most 14 days", "OUT_OF_RANGE")
        elif expiration == "expire_time" and _timestamp(request.expire_time) <= datetime.now(UTC):
            check.fail("expire_time", "must be in the future", "OUT_OF_RANGE")
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)

        def new_expiry(now: datetime) -> datetime:
            if expiration == "ttl":
                return now + _duration(request.ttl)
            return _timestamp(request.expire_time)

        return await reservations.extend_reservation(
            self.unit, request, ids["reservation"], new_expiry, _authorize_reservation
        )

    async def CommitReservation(
        self, request: svc.CommitReservationRequest, context: Context
    ) -> res.Reservation:
        check = Checker()
        ids = check.name("name", request.name, RESERVATION)
        check.length("reference", request.reference, max_len=200)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await self.coalescer.commit(request, ids["reservation"], _authorize_reservation)

    async def ReleaseReservation(
        self, request: svc.ReleaseReservationRequest, context: Context
    ) -> res.Reservation:
        check = Checker()
        ids = check.name("name", request.name, RESERVATION)
        check.length("reason", request.reason, max_len=500)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await self.coalescer.release(request, ids["reservation"], _authorize_reservation)

    # --- back-in-stock subscriptions -----------------------------------------------------------

    async def CreateStockSubscription(
        self, request: svc.CreateStockSubscriptionRequest, context: Context
    ) -> res.StockSubscription:
        check = Checker()
        sub = request.stock_subscription
        check.name("stock_subscription.customer", sub.customer, CUSTOMER)
        item = check.name("stock_subscription.item", sub.item, ITEM).get("item", "")
        location = check.optional_name("stock_subscription.location", sub.location, LOCATION).get(
            "location", ""
        )
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await subscriptions.create(self.unit, request, item, location)

    async def GetStockSubscription(
        self, request: svc.GetStockSubscriptionRequest, context: Context
    ) -> res.StockSubscription:
        check = Checker()
        ids = check.name("name", request.name, SUBSCRIPTION)
        check.optional_name("customer", request.customer, CUSTOMER)
        _raise_if_invalid(check)
        return await subscriptions.get(self.unit, ids["stock_subscription"], request.customer)

    async def ListStockSubscriptions(
        self, request: svc.ListStockSubscriptionsRequest, context: Context
    ) -> svc.ListStockSubscriptionsResponse:
        check = Checker()
        check.optional_name("customer", request.customer, CUSTOMER)
        query = subscriptions.SUBSCRIPTIONS.parse(
            request, check, scope=("stockSubscriptions", request.customer)
        )
        _raise_if_invalid(check)
        return await subscriptions.list_(self.unit, request.customer, query)

    async def DeleteStockSubscription(
        self, request: svc.DeleteStockSubscriptionRequest, context: Context
    ) -> res.StockSubscription:
        check = Checker()
        ids = check.name("name", request.name, SUBSCRIPTION)
        check.optional_name("customer", request.customer, CUSTOMER)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await subscriptions.cancel(self.unit, request, ids["stock_subscription"])
