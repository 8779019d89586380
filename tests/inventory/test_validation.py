"""Malformed requests are refused before any work, with every bad field named (one round trip)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from tests.inventory.conftest import Api, details, rpc_error, violations

CASES: list[tuple[str, Any, set[str]]] = [
    ("GetLocation", svc.GetLocationRequest(name="stores/1"), {"name"}),
    (
        "UpdateLocation",
        svc.UpdateLocationRequest(location=res.Location(name="x"), request_id="1"),
        {"location.name", "request_id"},
    ),
    ("GetStockMovement", svc.GetStockMovementRequest(name="locations/a/stockLevels/b"), {"name"}),
    (
        "ListStockMovements",
        svc.ListStockMovementsRequest(parent="locations/a", order_by="kind", page_size=-5),
        {"parent", "order_by", "page_size"},
    ),
    (
        "ListStockMovements",
        svc.ListStockMovementsRequest(parent="locations/-/stockLevels/-", filter='create_time > "soon"'),
        {"filter"},
    ),
    ("GetReservation", svc.GetReservationRequest(name="orders/1"), {"name"}),
    (
        "CommitReservation",
        svc.CommitReservationRequest(name="reservations/r", reference="x" * 201, request_id="nope"),
        {"reference", "request_id"},
    ),
    ("ReleaseReservation", svc.ReleaseReservationRequest(name="r", reason="x" * 501), {"name", "reason"}),
    (
        "DeleteStockSubscription",
        svc.DeleteStockSubscriptionRequest(name="subs/1", customer="c1"),
        {"name", "customer"},
    ),
    (
        "ListStockSubscriptions",
        svc.ListStockSubscriptionsRequest(order_by="item", page_token="zz"),
        {"order_by", "page_token"},
    ),
    ("ListLocations", svc.ListLocationsRequest(order_by="type"), {"order_by"}),
    (
        "UpdateStockLevel",
        svc.UpdateStockLevelRequest(stock_level=res.StockLevel(name="levels/1")),
        {"stock_level.name"},
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "fields"), CASES, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(CASES)]
)
async def test_malformed_requests_name_every_bad_field(
    api: Api, method: str, request_: Any, fields: set[str]
) -> None:
    err = await rpc_error(getattr(api, method)(request_))
    assert violations(err) == fields
    info = details(err)["ErrorInfo"]
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "omni.inventory")


async def test_unknown_resources_are_not_found(api: Api) -> None:
    item, store = await api.item(), await api.store()
    for call in (
        api.GetStockMovement(
            svc.GetStockMovementRequest(name=f"{store.name}/stockLevels/{item.name[6:]}/movements/m1")
        ),
        api.ListStockMovements(
            svc.ListStockMovementsRequest(parent=f"locations/nowhere/stockLevels/{item.name[6:]}")
        ),
        api.UpdateStockLevel(
            svc.UpdateStockLevelRequest(stock_level=res.StockLevel(name=f"{store.name}/stockLevels/NOPE"))
        ),
        api.UpdateLocation(
            svc.UpdateLocationRequest(location=res.Location(name="locations/nowhere", display_name="x"))
        ),
        api.ExtendReservation(svc.ExtendReservationRequest(name="reservations/none", expire_time=_future())),
    ):
        err = await rpc_error(call)
        assert err.code() is grpc.StatusCode.NOT_FOUND, err.details()


def _future() -> Any:
    from datetime import UTC, datetime, timedelta

    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp
