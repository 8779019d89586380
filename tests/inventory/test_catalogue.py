"""Items and locations over gRPC: happy paths, bad input, etags, paging, filters, roles."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from google.type import timeofday_pb2

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni.type.v1 import address_pb2, money_pb2
from tests.inventory.conftest import Api, details, reason, rid, rpc_error, uid, violations

# --- items -----------------------------------------------------------------------------------


async def test_create_get_and_update_an_item(api: Api) -> None:
    sku = uid("MUG")
    created = await api.CreateItem(
        svc.CreateItemRequest(
            item_id=sku,
            item=res.Item(
                title="Blue mug",
                description="Stoneware",
                attributes={"colour": "blue", "gtin": "5901234123457"},
                prices=[
                    money_pb2.Money(currency_code="EUR", minor_units=1250),
                    money_pb2.Money(currency_code="RON", minor_units=6200),
                ],
            ),
        )
    )
    assert created.name == f"items/{sku}"
    assert created.active is False  # new items are inactive unless created active
    assert created.etag
    assert await api.GetItem(svc.GetItemRequest(name=created.name)) == created

    updated = await api.UpdateItem(
        svc.UpdateItemRequest(
            item=res.Item(name=created.name, title="Big blue mug", active=True, etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["title", "active"]),
        )
    )
    assert (updated.title, updated.active, updated.description) == ("Big blue mug", True, "Stoneware")
    assert updated.etag != created.etag

    stale = await rpc_error(
        api.UpdateItem(
            svc.UpdateItemRequest(
                item=res.Item(name=created.name, title="Mug", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED
    info = details(stale)["ErrorInfo"]
    assert (info.reason, info.domain, info.metadata["current_etag"]) == (
        "CONCURRENT_MODIFICATION",
        "omni.inventory",
        updated.etag,
    )

    # An empty mask updates the fields that are set.
    partial = await api.UpdateItem(
        svc.UpdateItemRequest(item=res.Item(name=created.name, description="Porcelain"))
    )
    assert (partial.title, partial.description) == ("Big blue mug", "Porcelain")


async def test_batch_get_answers_in_the_order_asked_or_not_found_for_the_first_missing(api: Api) -> None:
    first, second = await api.item(), await api.item()
    got = await api.BatchGetItems(svc.BatchGetItemsRequest(names=[second.name, first.name, second.name]))
    assert [i.name for i in got.items] == [second.name, first.name, second.name]
    assert got.items[1] == await api.GetItem(svc.GetItemRequest(name=first.name))
    missing = await rpc_error(
        api.BatchGetItems(svc.BatchGetItemsRequest(names=[first.name, "items/NOPE-2", "items/NOPE-3"]))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert details(missing)["ErrorInfo"].metadata["resource"] == "items/NOPE-2"
    bad = await rpc_error(api.BatchGetItems(svc.BatchGetItemsRequest(names=[first.name, "skus/1"])))
    assert violations(bad) == {"names[1]"}
    assert violations(await rpc_error(api.BatchGetItems(svc.BatchGetItemsRequest()))) == {"names"}


async def test_item_errors(api: Api) -> None:
    item = await api.item()
    dup = await rpc_error(
        api.CreateItem(svc.CreateItemRequest(item_id=item.name[6:], item=res.Item(title="x")))
    )
    assert dup.code() is grpc.StatusCode.ALREADY_EXISTS
    missing = await rpc_error(api.GetItem(svc.GetItemRequest(name="items/NOPE-1")))
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert details(missing)["ErrorInfo"].metadata["resource"] == "items/NOPE-1"
    assert violations(await rpc_error(api.GetItem(svc.GetItemRequest(name="skus/1")))) == {"name"}
    bad = await rpc_error(
        api.CreateItem(
            svc.CreateItemRequest(
                item_id="bad sku!",
                item=res.Item(
                    title="",
                    attributes={"Colour": "red"},
                    prices=[
                        money_pb2.Money(currency_code="eur", minor_units=1),
                        money_pb2.Money(currency_code="USD", minor_units=-1),
                        money_pb2.Money(currency_code="USD", minor_units=1),
                    ],
                ),
                request_id="not-a-uuid",
            )
        )
    )
    assert violations(bad) == {
        "item_id",
        "item.title",
        "item.attributes['Colour']",
        "item.prices[0].currency_code",
        "item.prices[1].minor_units",
        "item.prices[2].currency_code",
        "request_id",
    }
    mask = await rpc_error(
        api.UpdateItem(
            svc.UpdateItemRequest(
                item=res.Item(name=item.name),
                update_mask=field_mask_pb2.FieldMask(paths=["create_time", "colour"]),
            )
        )
    )
    assert violations(mask) == {"update_mask.paths[0]", "update_mask.paths[1]"}
    gone = await rpc_error(
        api.UpdateItem(svc.UpdateItemRequest(item=res.Item(name="items/NOPE-2", title="x")))
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND


async def test_create_item_is_idempotent_by_request_id(api: Api) -> None:
    request = svc.CreateItemRequest(item_id=uid("IDEM"), item=res.Item(title="Once"), request_id=rid())
    first = await api.CreateItem(request)
    assert await api.CreateItem(request) == first


async def test_batch_upsert_is_all_or_nothing(api: Api) -> None:
    existing = await api.item(title="Old title")
    new_sku = uid("NEW")
    response = await api.BatchUpsertItems(
        svc.BatchUpsertItemsRequest(
            items=[
                res.Item(name=f"items/{new_sku}", title="New one", active=True),
                res.Item(name=existing.name, title="New title", etag=existing.etag),
            ],
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            request_id=rid(),
        )
    )
    assert [i.name for i in response.items] == [f"items/{new_sku}", existing.name]
    assert response.items[0].active is True  # created with every field given
    assert (response.items[1].title, response.items[1].active) == ("New title", existing.active)

    # One stale etag aborts the whole batch: the other item is not created.
    other = uid("NEVER")
    stale = await rpc_error(
        api.BatchUpsertItems(
            svc.BatchUpsertItemsRequest(
                items=[
                    res.Item(name=f"items/{other}", title="x"),
                    res.Item(name=existing.name, title="y", etag=existing.etag),
                ]
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED
    assert details(stale)["ErrorInfo"].metadata["current_etag"] == response.items[1].etag
    assert (
        await rpc_error(api.GetItem(svc.GetItemRequest(name=f"items/{other}")))
    ).code() is grpc.StatusCode.NOT_FOUND

    bad = await rpc_error(
        api.BatchUpsertItems(
            svc.BatchUpsertItemsRequest(
                items=[
                    res.Item(name="items/OK-1", title="fine"),
                    res.Item(name="items/OK-1", title="again"),
                    res.Item(name="nope", title=""),
                ]
            )
        )
    )
    assert violations(bad) == {"items[1].name", "items[2].name", "items[2].title"}
    # A new item is created with every field, so it needs a title even if the mask omits it.
    untitled = await rpc_error(
        api.BatchUpsertItems(
            svc.BatchUpsertItemsRequest(
                items=[res.Item(name=existing.name), res.Item(name=f"items/{uid('NT')}", active=True)],
                update_mask=field_mask_pb2.FieldMask(paths=["active"]),
            )
        )
    )
    assert violations(untitled) == {"items[1].title"}
    assert violations(await rpc_error(api.BatchUpsertItems(svc.BatchUpsertItemsRequest()))) == {"items"}


async def test_list_items_filters_orders_and_pages(api: Api) -> None:
    brand = uid("brand").replace("-", "_")
    names = []
    for i, title in enumerate(["Cup", "Bowl", "Plate", "Saucer", "Jug"]):
        item = await api.item(uid(f"L{i}"), title=title, active=i != 2, attributes={"brand": brand})
        names.append(item.name)
    query = f'attributes.brand = "{brand}" AND active = true'
    page1 = await api.ListItems(svc.ListItemsRequest(filter=query, order_by="title desc", page_size=2))
    assert [i.title for i in page1.items] == ["Saucer", "Jug"]
    assert page1.total_size == 4
    page2 = await api.ListItems(
        svc.ListItemsRequest(
            filter=query, order_by="title desc", page_size=2, page_token=page1.next_page_token
        )
    )
    assert [i.title for i in page2.items] == ["Cup", "Bowl"]
    assert page2.next_page_token == ""

    # The token belongs to its query, and an edited token is refused.
    other = await rpc_error(
        api.ListItems(svc.ListItemsRequest(filter=query, order_by="title", page_token=page1.next_page_token))
    )
    assert violations(other) == {"page_token"}
    forged = await rpc_error(
        api.ListItems(
            svc.ListItemsRequest(
                filter=query, order_by="title desc", page_token="AAAA" + page1.next_page_token
            )
        )
    )
    assert violations(forged) == {"page_token"}
    assert violations(await rpc_error(api.ListItems(svc.ListItemsRequest(filter="price < 3")))) == {"filter"}
    assert violations(await rpc_error(api.ListItems(svc.ListItemsRequest(order_by="price")))) == {"order_by"}
    assert violations(await rpc_error(api.ListItems(svc.ListItemsRequest(page_size=-1)))) == {"page_size"}


async def test_only_staff_with_the_right_role_write_the_catalogue(as_role, api: Api) -> None:  # type: ignore[no-untyped-def]
    customer = as_role("customers/c1", "customer")
    item = await api.item()
    assert (await customer.GetItem(svc.GetItemRequest(name=item.name))).name == item.name
    denied = await rpc_error(
        customer.CreateItem(svc.CreateItemRequest(item_id=uid("C"), item=res.Item(title="x")))
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    marketer = as_role("staffMembers/m1", "marketer")
    assert (await marketer.item()).name.startswith("items/")
    anonymous = Api(api.stub, ())
    assert (
        await rpc_error(anonymous.GetItem(svc.GetItemRequest(name=item.name)))
    ).code() is grpc.StatusCode.UNAUTHENTICATED


# --- locations -------------------------------------------------------------------------------


def _period(day: int, open_: int, close: int) -> res.OpeningPeriod:
    return res.OpeningPeriod(
        day=day,  # type: ignore[arg-type]
        open_time=timeofday_pb2.TimeOfDay(hours=open_),
        close_time=timeofday_pb2.TimeOfDay(hours=close),
    )


async def test_create_get_list_and_update_locations(api: Api) -> None:
    hours = res.OpeningHours(time_zone="Europe/Bucharest", periods=[_period(d, 0, 24) for d in range(1, 8)])
    store = await api.store(uid("cluj"), opening_hours=hours, display_name="Cluj Centre", priority=5)
    assert store.opening_hours.time_zone == "Europe/Bucharest"
    assert store.coordinates.latitude == 46.77
    assert await api.GetLocation(svc.GetLocationRequest(name=store.name)) == store
    assigned = await api.warehouse()
    assert assigned.type == res.LOCATION_TYPE_WAREHOUSE

    moved = await api.UpdateLocation(
        svc.UpdateLocationRequest(
            location=res.Location(
                name=store.name,
                display_name="Cluj Mall",
                coordinates=address_pb2.GeoPoint(latitude=46.75, longitude=23.55),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "coordinates"]),
        )
    )
    assert (moved.display_name, moved.coordinates.latitude, moved.allocation_priority) == (
        "Cluj Mall",
        46.75,
        5,
    )
    assert moved.opening_hours == hours
    cleared = await api.UpdateLocation(
        svc.UpdateLocationRequest(
            location=res.Location(name=store.name, etag=moved.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["opening_hours"]),
        )
    )
    assert not cleared.HasField("opening_hours")

    # The merged result must still be valid: a warehouse cannot offer pickup.
    invalid = await rpc_error(
        api.UpdateLocation(
            svc.UpdateLocationRequest(
                location=res.Location(name=store.name, type=res.LOCATION_TYPE_WAREHOUSE),
                update_mask=field_mask_pb2.FieldMask(paths=["type"]),
            )
        )
    )
    assert violations(invalid) == {"location.pickup_enabled"}
    stale = await rpc_error(
        api.UpdateLocation(
            svc.UpdateLocationRequest(
                location=res.Location(name=store.name, display_name="x", etag=moved.etag)
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED

    listed = await api.ListLocations(
        svc.ListLocationsRequest(filter='type = LOCATION_TYPE_STORE AND display_name = "Cluj Mall"')
    )
    assert [loc.name for loc in listed.locations] == [store.name]
    by_region = await api.ListLocations(
        svc.ListLocationsRequest(
            filter='address.region_code = "RO" AND pickup_enabled = true', order_by="allocation_priority desc"
        )
    )
    assert store.name in [loc.name for loc in by_region.locations]
    assert violations(
        await rpc_error(api.ListLocations(svc.ListLocationsRequest(filter="type = STORE")))
    ) == {"filter"}


async def test_location_errors(api: Api) -> None:
    taken = await api.store()
    dup = await rpc_error(api.store(taken.name.split("/")[1]))
    assert dup.code() is grpc.StatusCode.ALREADY_EXISTS
    assert (
        await rpc_error(api.GetLocation(svc.GetLocationRequest(name="locations/none")))
    ).code() is grpc.StatusCode.NOT_FOUND
    bad = await rpc_error(
        api.CreateLocation(
            svc.CreateLocationRequest(
                location_id="bad id",
                location=res.Location(
                    type=res.LOCATION_TYPE_WAREHOUSE,
                    display_name="",
                    pickup_enabled=True,
                    coordinates=address_pb2.GeoPoint(latitude=91, longitude=0),
                    opening_hours=res.OpeningHours(periods=[_period(1, 9, 18)]),
                ),
            )
        )
    )
    assert violations(bad) == {
        "location_id",
        "location.display_name",
        "location.pickup_enabled",
        "location.coordinates",
        "location.opening_hours.time_zone",
    }
    store_without_address = await rpc_error(
        api.CreateLocation(
            svc.CreateLocationRequest(location=res.Location(type=res.LOCATION_TYPE_STORE, display_name="S"))
        )
    )
    assert violations(store_without_address) == {"location.address"}
    assert violations(await rpc_error(api.CreateLocation(svc.CreateLocationRequest()))) == {"location"}
    assert reason(dup) == "ALREADY_EXISTS"
