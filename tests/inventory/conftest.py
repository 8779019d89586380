"""Fixtures of the inventory tests: the real service on a real socket, real tokens, seed helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as res
from omni.type.v1 import address_pb2, money_pb2
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.errors import status_of, unpack_details
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.services import RunningService, running_service
from services.inventory.main import SERVICE

SWEEP_INTERVAL = "0.2"


def rid() -> str:
    return str(uuid.uuid4())


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def inventory(
    service_settings: Callable[..., Settings], key_source: StaticKeySource
) -> AsyncIterator[RunningService]:
    settings = service_settings("inventory", extra={"OMNI_INVENTORY_SWEEP_INTERVAL_SECONDS": SWEEP_INTERVAL})
    async with running_service(SERVICE, settings, key_source=key_source) as svc_:
        yield svc_


@pytest.fixture(scope="module")
async def db(database_url: str, inventory: RunningService) -> AsyncIterator[Database]:
    """Direct access to the service's database, to check the ledger's books (read-only use)."""
    database = Database(database_url, pool_size=2, max_overflow=2)
    yield database
    await database.close()


@dataclass
class Api:
    """A caller of the inventory service with a given token, plus seeding helpers."""

    stub: inventory_service_pb2_grpc.InventoryServiceStub
    metadata: tuple[tuple[str, str], ...]

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self.stub, method)

        def invoke(request: Any, **kw: Any) -> Any:
            extra = kw.pop("metadata", ())
            return call(request, metadata=(*self.metadata, *extra), timeout=kw.pop("timeout", 20), **kw)

        return invoke

    async def item(
        self, sku: str | None = None, *, active: bool = True, title: str = "Thing", **kw: Any
    ) -> res.Item:
        sku = sku or uid("SKU")
        item = res.Item(
            title=title,
            active=active,
            prices=[money_pb2.Money(currency_code="EUR", minor_units=1999)],
            **kw,
        )
        return await self.CreateItem(svc.CreateItemRequest(item_id=sku, item=item))

    async def store(
        self,
        location_id: str | None = None,
        *,
        lat: float | None = 46.77,
        lng: float | None = 23.59,
        pickup: bool = True,
        ship_from: bool = False,
        priority: int = 0,
        **kw: Any,
    ) -> res.Location:
        loc = res.Location(
            type=res.LOCATION_TYPE_STORE,
            display_name=kw.pop("display_name", "Store"),
            address=address_pb2.PostalAddress(region_code="RO", locality="Cluj", address_lines=["Str. 1"]),
            pickup_enabled=pickup,
            ship_from=ship_from,
            allocation_priority=priority,
            **kw,
        )
        if lat is not None and lng is not None:
            loc.coordinates.CopyFrom(address_pb2.GeoPoint(latitude=lat, longitude=lng))
        return await self.CreateLocation(
            svc.CreateLocationRequest(location_id=location_id or uid("s"), location=loc)
        )

    async def warehouse(self, location_id: str | None = None, *, priority: int = 0) -> res.Location:
        loc = res.Location(
            type=res.LOCATION_TYPE_WAREHOUSE,
            display_name="Warehouse",
            ship_from=True,
            allocation_priority=priority,
        )
        return await self.CreateLocation(
            svc.CreateLocationRequest(location_id=location_id or uid("w"), location=loc)
        )

    async def receive(self, location: str, item: str, quantity: int) -> svc.AdjustStockResponse:
        return await self.AdjustStock(
            svc.AdjustStockRequest(
                name=f"{location}/stockLevels/{item.removeprefix('items/')}",
                delta=quantity,
                reason=res.ADJUSTMENT_REASON_RECEIPT,
                request_id=rid(),
            )
        )

    async def level(self, location: str, item: str) -> res.StockLevel:
        return await self.GetStockLevel(
            svc.GetStockLevelRequest(name=f"{location}/stockLevels/{item.removeprefix('items/')}")
        )

    async def reserve(
        self, *lines: tuple[str, int, str], request_id: str | None = None, **kw: Any
    ) -> res.Reservation:
        reservation = res.Reservation(
            lines=[res.ReservationLine(item=i, quantity=q, location=loc) for i, q, loc in lines], **kw
        )
        return await self.CreateReservation(
            svc.CreateReservationRequest(reservation=reservation, request_id=request_id or rid())
        )

    async def settings(self, location: str, item: str, **values: int) -> res.StockLevel:
        level = res.StockLevel(name=f"{location}/stockLevels/{item.removeprefix('items/')}", **values)
        return await self.UpdateStockLevel(
            svc.UpdateStockLevelRequest(
                stock_level=level, update_mask=field_mask_pb2.FieldMask(paths=list(values))
            )
        )


@pytest.fixture(scope="module")
def stub(inventory: RunningService) -> inventory_service_pb2_grpc.InventoryServiceStub:
    return inventory_service_pb2_grpc.InventoryServiceStub(inventory.channel)


@pytest.fixture(scope="module")
def as_role(
    stub: inventory_service_pb2_grpc.InventoryServiceStub, make_token: Callable[..., str]
) -> Callable[..., Api]:
    """``as_role("customers/c1", "customer")`` → an Api calling with that principal's token."""

    def make(subject: str, *roles: str, store: str = "") -> Api:
        token = make_token(subject, roles=list(roles), store=store, ttl_seconds=3600)
        return Api(stub, bearer(token))

    return make


@pytest.fixture(scope="module")
def api(as_role: Callable[..., Api]) -> Api:
    """A channel backend (role ``service``): may do everything."""
    return as_role("serviceClients/web-backend", "service")


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = status_of(error)
    assert status is not None, "the error carries no google.rpc.Status"
    return unpack_details(status)


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    """Field paths of a BadRequest (INVALID_ARGUMENT)."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return {v.field for v in details(error)["BadRequest"].field_violations}


def reason(error: grpc.aio.AioRpcError) -> str:
    return str(details(error)["ErrorInfo"].reason)


async def ledger_books(db: Database, location_id: str, sku: str) -> dict[str, int]:
    """The level of a (location, item) and the sums of its movements: they must agree."""
    async with db.transaction() as session:
        level = (
            await session.execute(
                text("SELECT on_hand, reserved FROM stock_levels WHERE location_id = :l AND item_sku = :i"),
                {"l": location_id, "i": sku},
            )
        ).one()
        sums = (
            await session.execute(
                text(
                    "SELECT coalesce(sum(on_hand_delta), 0), coalesce(sum(reserved_delta), 0),"
                    " count(*) FILTER (WHERE on_hand_after < 0 OR reserved_after < 0)"
                    " FROM stock_movements WHERE location_id = :l AND item_sku = :i"
                ),
                {"l": location_id, "i": sku},
            )
        ).one()
    return {
        "on_hand": level[0],
        "reserved": level[1],
        "moved_on_hand": int(sums[0]),
        "moved_reserved": int(sums[1]),
        "negative_movements": int(sums[2]),
    }


async def outbox_events(db: Database, event_type: str) -> list[bytes]:
    async with db.transaction() as session:
        rows = await session.execute(
            text("SELECT payload FROM omni_outbox WHERE event_type = :t ORDER BY seq"), {"t": event_type}
        )
        return [r[0] for r in rows]


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)
