"""Inventory's demo data for the local platform (``omni_runtime.demo`` runs ``DEMO``).

A small outdoor-gear catalogue with EUR and RON prices, two warehouses that ship, and three stores
with coordinates, opening hours and pickup: two in Cluj-Napoca (``locations/store-1`` is the demo
store associate's store, see services/identity/seed.py) and one in Bucharest. Stock arrives as
goods receipts (so the movement history is real), a few store shelves are low and one is empty,
which is what "reserve for pickup" and "tell me when it is back" need to show anything.
Everything goes through InventoryService as the demo admin; ids and request ids are fixed, so a
load that was interrupted is finished by the next start without counting stock twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import field_mask_pb2
from google.type import dayofweek_pb2, timeofday_pb2

from omni.inventory.v1 import inventory_service_pb2 as pb
from omni.inventory.v1 import inventory_service_pb2_grpc, resources_pb2
from omni.type.v1 import address_pb2, money_pb2
from omni_runtime.demo import DemoContext, DemoResult, DemoSeed

STORE_ASSOCIATE_STORE = "locations/store-1"
CUSTOMER_PLACE = "Cluj-Napoca"
CUSTOMER_POINT = {"latitude": 46.7712, "longitude": 23.6236}  # Cluj-Napoca centre


@dataclass(frozen=True)
class DemoItem:
    sku: str
    title: str
    eur_cents: int
    ron_bani: int
    attributes: tuple[tuple[str, str], ...]


ITEMS = (
    DemoItem(
        "TRAIL-SHOE-42", "Trail running shoe, size 42", 12900, 64200, (("colour", "blue"), ("size", "42"))
    ),
    DemoItem(
        "TRAIL-SHOE-44", "Trail running shoe, size 44", 12900, 64200, (("colour", "blue"), ("size", "44"))
    ),
    DemoItem("RAIN-JACKET-M", "Packable rain jacket, M", 8900, 44300, (("colour", "red"), ("size", "M"))),
    DemoItem("MERINO-SOCKS", "Merino hiking socks", 1490, 7400, (("colour", "grey"),)),
    DemoItem("WOOL-BEANIE", "Wool beanie", 1990, 9900, (("colour", "green"),)),
    DemoItem("BOTTLE-750", "Insulated bottle 0.75 l", 2490, 12400, (("colour", "steel"),)),
    DemoItem("HEADLAMP-300", "Headlamp 300 lm", 3990, 19900, ()),
    DemoItem("DAYPACK-20", "Daypack 20 l", 6990, 34800, (("colour", "black"),)),
)
FEATURED = ITEMS[0]  # the item the printed examples use: in stock at both Cluj stores


def _hours(days: range, open_h: int, close_h: int) -> list[resources_pb2.OpeningPeriod]:
    return [
        resources_pb2.OpeningPeriod(
            day=day,  # type: ignore[arg-type]
            open_time=timeofday_pb2.TimeOfDay(hours=open_h),
            close_time=timeofday_pb2.TimeOfDay(hours=close_h),
        )
        for day in days
    ]


MON_FRI = range(dayofweek_pb2.MONDAY, dayofweek_pb2.FRIDAY + 1)
MON_SAT = range(dayofweek_pb2.MONDAY, dayofweek_pb2.SATURDAY + 1)
EVERY_DAY = range(dayofweek_pb2.MONDAY, dayofweek_pb2.SUNDAY + 1)
SATURDAY, SUNDAY = range(dayofweek_pb2.SATURDAY, dayofweek_pb2.SATURDAY + 1), range(dayofweek_pb2.SUNDAY, 8)
TZ = "Europe/Bucharest"


def _location(
    kind: int,
    name: str,
    locality: str,
    street: str,
    postal_code: str,
    point: tuple[float, float],
    **fields: object,
) -> resources_pb2.Location:
    return resources_pb2.Location(
        type=kind,  # type: ignore[arg-type]
        display_name=name,
        address=address_pb2.PostalAddress(
            region_code="RO", locality=locality, postal_code=postal_code, address_lines=[street]
        ),
        coordinates=address_pb2.GeoPoint(latitude=point[0], longitude=point[1]),
        **fields,  # type: ignore[arg-type]
    )


WAREHOUSE, STORE = resources_pb2.LOCATION_TYPE_WAREHOUSE, resources_pb2.LOCATION_TYPE_STORE
LOCATIONS: dict[str, resources_pb2.Location] = {
    "warehouse-cluj": _location(
        WAREHOUSE,
        "Cluj distribution centre",
        "Cluj-Napoca",
        "Strada Tăietura Turcului 47",
        "400221",
        (46.7640, 23.6480),
        ship_from=True,
        allocation_priority=10,
    ),
    "warehouse-bucharest": _location(
        WAREHOUSE,
        "Bucharest warehouse",
        "București",
        "Bulevardul Theodor Pallady 51",
        "032258",
        (44.4140, 26.1660),
        ship_from=True,
        allocation_priority=20,
    ),
    "store-1": _location(
        STORE,
        "Omni Cluj Centre",
        "Cluj-Napoca",
        "Piața Unirii 1",
        "400098",
        (46.7699, 23.5899),
        pickup_enabled=True,
        allocation_priority=30,
        opening_hours=resources_pb2.OpeningHours(
            time_zone=TZ, periods=[*_hours(MON_SAT, 9, 21), *_hours(SUNDAY, 10, 18)]
        ),
    ),
    "store-2": _location(
        STORE,
        "Omni Cluj Iulius Mall",
        "Cluj-Napoca",
        "Strada Alexandru Vaida Voevod 53B",
        "400436",
        (46.7713, 23.6266),
        pickup_enabled=True,
        allocation_priority=40,
        opening_hours=resources_pb2.OpeningHours(time_zone=TZ, periods=_hours(EVERY_DAY, 10, 22)),
    ),
    "store-3": _location(
        STORE,
        "Omni București Victoriei",
        "București",
        "Calea Victoriei 12",
        "030026",
        (44.4319, 26.0979),
        pickup_enabled=True,
        allocation_priority=50,
        opening_hours=resources_pb2.OpeningHours(
            time_zone=TZ, periods=[*_hours(MON_FRI, 9, 20), *_hours(SATURDAY, 10, 18)]
        ),
    ),
}
# Units received per location and SKU; store shelves are small, one is empty on purpose.
STOCK: dict[str, dict[str, int]] = {
    "warehouse-cluj": {item.sku: 120 for item in ITEMS},
    "warehouse-bucharest": {item.sku: 80 for item in ITEMS},
    "store-1": {
        "TRAIL-SHOE-42": 6,
        "TRAIL-SHOE-44": 2,
        "RAIN-JACKET-M": 4,
        "MERINO-SOCKS": 30,
        "BOTTLE-750": 12,
    },
    "store-2": {
        "TRAIL-SHOE-42": 3,
        "RAIN-JACKET-M": 1,
        "MERINO-SOCKS": 20,
        "WOOL-BEANIE": 8,
        "HEADLAMP-300": 5,
    },
    "store-3": {"TRAIL-SHOE-44": 4, "DAYPACK-20": 6, "WOOL-BEANIE": 10, "HEADLAMP-300": 0},
}
STORE_LOW_STOCK_THRESHOLD = 2  # store levels at or below this are LOW_STOCK (and publish it)


def _stub(demo: DemoContext) -> inventory_service_pb2_grpc.InventoryServiceStub:
    return inventory_service_pb2_grpc.InventoryServiceStub(demo.channel("inventory"))


async def is_empty(demo: DemoContext) -> bool:
    stub = _stub(demo)
    items = await stub.ListItems(pb.ListItemsRequest(page_size=1))
    locations = await stub.ListLocations(pb.ListLocationsRequest(page_size=1))
    return not items.items and not locations.locations


async def load(demo: DemoContext) -> DemoResult:
    stub = _stub(demo)
    await stub.BatchUpsertItems(
        pb.BatchUpsertItemsRequest(
            items=[
                resources_pb2.Item(
                    name=f"items/{item.sku}",
                    title=item.title,
                    attributes={"brand": "Omni Outdoor", **dict(item.attributes)},
                    prices=[
                        money_pb2.Money(currency_code="EUR", minor_units=item.eur_cents),
                        money_pb2.Money(currency_code="RON", minor_units=item.ron_bani),
                    ],
                    active=True,
                )
                for item in ITEMS
            ],
            request_id=demo.request_id("catalogue"),
        )
    )
    for location_id, location in LOCATIONS.items():
        try:
            await stub.CreateLocation(
                pb.CreateLocationRequest(
                    location=location,
                    location_id=location_id,
                    request_id=demo.request_id(f"location:{location_id}"),
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # created by an interrupted load
                raise
    for location_id, levels in STOCK.items():
        for sku, quantity in levels.items():
            level = f"locations/{location_id}/stockLevels/{sku}"
            if quantity:
                await stub.AdjustStock(
                    pb.AdjustStockRequest(
                        name=level,
                        delta=quantity,
                        reason=resources_pb2.ADJUSTMENT_REASON_RECEIPT,
                        reason_text="opening stock (demo data)",
                        reference=f"DEMO-DELIVERY-{location_id.upper()}",
                        request_id=demo.request_id(f"receipt:{level}"),
                    )
                )
            if LOCATIONS[location_id].type == STORE:
                await stub.UpdateStockLevel(
                    pb.UpdateStockLevelRequest(
                        stock_level=resources_pb2.StockLevel(
                            name=level, low_stock_threshold=STORE_LOW_STOCK_THRESHOLD
                        ),
                        update_mask=field_mask_pb2.FieldMask(paths=["low_stock_threshold"]),
                        request_id=demo.request_id(f"threshold:{level}"),
                    )
                )
    stores = [f"locations/{n}" for n, loc in LOCATIONS.items() if loc.type == STORE]
    warehouses = [f"locations/{n}" for n, loc in LOCATIONS.items() if loc.type == WAREHOUSE]
    levels = sum(len(v) for v in STOCK.values())
    return DemoResult(
        lines=[
            f"catalogue         {len(ITEMS)} items with EUR and RON prices: items/{FEATURED.sku}, …",
            f"warehouses        {', '.join(warehouses)}",
            f"stores            {', '.join(stores)} (coordinates, opening hours, pickup)",
            f"stock             {levels} stock levels received as goods receipts; a few store shelves low",
        ],
        facts={
            "item": FEATURED.sku,
            "item_title": FEATURED.title.lower(),
            "place": CUSTOMER_PLACE,
            "point": CUSTOMER_POINT,
            "stores": stores,
            "warehouses": warehouses,
            "items": [f"items/{i.sku}" for i in ITEMS],
            "associate_store": STORE_ASSOCIATE_STORE,
        },
    )


DEMO = DemoSeed(is_empty=is_empty, load=load)
