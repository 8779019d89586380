"""The first omnichannel journey, end to end, through the gateway only.

identity, inventory and cart run in-process on one embedded PostgreSQL/NATS (a database each);
identity signs with its real key ring, the others (and the gateway) verify with its JWKS; the
gateway is served by uvicorn on a loopback port and everything below is plain HTTP/JSON and SSE:

1. back office: an admin (identity's demo seed) creates a store with pickup, a warehouse, three
   items with EUR prices and stock;
2. web: a guest adds two items, then registers: the guest becomes the customer in place, and the
   cart it filled is the customer's cart;
3. mobile app, same customer token: sees the same cart, opens the live cart (SSE), and receives
   the change when the web adds a third item (and later resumes the stream from its last event);
4. the customer checks availability of an item at stores near them;
5. checks out with that item picked up at the store and the rest shipped;
6. a store associate of that store finds the order in the store's work list and hands it over:
   the pickup group is COLLECTED and the stock has left the store.
Every step asserts the data the client sees, not only the status code.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from omni_runtime.testing.plugin import Infra
from tests.gateway.platform import Platform, available, live, running_platform

SERVICES = ("identity", "inventory", "cart")
pytestmark = pytest.mark.skipif(
    available(SERVICES) != list(SERVICES),
    reason=f"the journey needs identity, inventory and cart; present: {available(SERVICES)}",
)
STORE = "locations/store-1"  # the demo store associate's store (identity's seed)
WAREHOUSE = "locations/e2e-warehouse"
STORE_POINT = {"latitude": 46.7712, "longitude": 23.6236}  # Cluj-Napoca centre
CUSTOMER_POINT = {"latitude": 46.7750, "longitude": 23.6000}  # ~1.9 km away


def web(token: str | None = None) -> dict[str, str]:
    return _headers("web", token, device="browser-1")


def mobile(token: str) -> dict[str, str]:
    return _headers("mobile_app", token, device="app-install-1")


def _headers(channel: str, token: str | None, **extra: str) -> dict[str, str]:
    headers = {"X-Omni-Channel": channel, "X-Request-Id": uuid.uuid4().hex}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if "device" in extra:
        headers["X-Omni-Device"] = extra["device"]
    if "store" in extra:
        headers["X-Omni-Store"] = extra["store"]
    return headers


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    assert response.headers["x-request-id"] == response.request.headers["x-request-id"]
    return response.json()


def eur(minor: int) -> dict[str, str]:
    return {"currencyCode": "EUR", "minorUnits": str(minor)}


@pytest.fixture(scope="module")
async def platform(omni_infra: Infra) -> AsyncIterator[Platform]:
    async with running_platform(omni_infra, SERVICES) as running:
        yield running


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Events of an SSE response as {"id", "event", "data"}; comments (heartbeats) skipped."""
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


async def test_web_guest_to_mobile_to_store_pickup(platform: Platform) -> None:
    from services.identity.seed import DEMO_PASSWORD, seed_demo

    identity_runtime = platform.services["identity"].host.runtime
    assert identity_runtime is not None
    await seed_demo(platform.database("identity"), settings=identity_runtime.settings)

    async with live(platform.app) as base, httpx.AsyncClient(base_url=base, timeout=20) as http:
        # -- 1. back office ------------------------------------------------------------------
        admin_login = await ok(
            await http.post(
                "/v1/staffMembers:login",
                headers=_headers("backoffice", None),
                json={"email": "admin@omni.local", "password": DEMO_PASSWORD},
            )
        )
        admin = _headers("backoffice", admin_login["accessToken"])
        store = await ok(
            await http.post(
                "/v1/locations",
                params={"locationId": "store-1"},
                headers=admin,
                json={
                    "type": "LOCATION_TYPE_STORE",
                    "displayName": "Omni Cluj Centre",
                    "address": {
                        "regionCode": "RO",
                        "locality": "Cluj-Napoca",
                        "addressLines": ["Piata Unirii 1"],
                    },
                    "coordinates": STORE_POINT,
                    "pickupEnabled": True,
                },
            )
        )
        assert (store["name"], store["pickupEnabled"]) == (STORE, True)
        warehouse = await ok(
            await http.post(
                "/v1/locations",
                params={"locationId": WAREHOUSE.removeprefix("locations/")},
                headers=admin,
                json={
                    "type": "LOCATION_TYPE_WAREHOUSE",
                    "displayName": "Central warehouse",
                    "shipFrom": True,
                },
            )
        )
        assert warehouse["name"] == WAREHOUSE and warehouse["shipFrom"] is True
        prices = {"SKU-BOOTS": 12900, "SKU-SOCKS": 999, "SKU-SCARF": 2450}
        for sku, price in prices.items():
            item = await ok(
                await http.post(
                    "/v1/items",
                    params={"itemId": sku},
                    headers=admin,
                    json={"title": sku.title(), "prices": [eur(price)], "active": True},
                )
            )
            assert item["name"] == f"items/{sku}" and item["prices"] == [eur(price)]
            for location, quantity in ((WAREHOUSE, 20), (STORE, 5)):
                adjusted = await ok(
                    await http.post(
                        f"/v1/{location}/stockLevels/{sku}:adjust",
                        headers=admin,
                        json={
                            "delta": quantity,
                            "reason": "ADJUSTMENT_REASON_RECEIPT",
                            "requestId": str(uuid.uuid4()),
                        },
                    )
                )
                assert adjusted["stockLevel"]["onHand"] == quantity

        # -- 2. web guest fills a cart, then registers ----------------------------------------
        guest = await ok(
            await http.post("/v1/customers:createGuest", headers=web(), json={"deviceId": "browser-1"})
        )
        guest_name = guest["customer"]["name"]
        guest_token = guest["token"]["accessToken"]
        assert guest["created"] is True and guest["token"]["guest"] is True
        cart_path = f"/v1/{guest_name}/cart"
        for sku, quantity in (("SKU-BOOTS", 1), ("SKU-SOCKS", 2)):
            cart = await ok(
                await http.post(
                    f"{cart_path}:addLine",
                    headers=web(guest_token),
                    json={"line": {"item": f"items/{sku}", "quantity": quantity}, "currencyCode": "EUR"},
                )
            )
        assert [(line["item"], line["quantity"]) for line in cart["lines"]] == [
            ("items/SKU-BOOTS", 1),
            ("items/SKU-SOCKS", 2),
        ]
        assert cart["subtotal"] == eur(12900 + 2 * 999)

        registered = await ok(
            await http.post(
                "/v1/customers:register",
                headers=web(),
                json={
                    "identifier": {"kind": "IDENTIFIER_KIND_EMAIL", "value": "ana@example.com"},
                    "password": "a long enough passphrase",
                    "displayName": "Ana",
                    "guestToken": guest_token,
                },
            )
        )
        customer = registered["customer"]["name"]
        token = registered["token"]["accessToken"]
        assert customer == guest_name  # upgraded in place: the guest's cart is the customer's
        assert registered["customer"]["state"] == "STATE_ACTIVE"
        assert registered["token"]["guest"] is False and registered["token"]["principal"] == customer
        web_cart = await ok(await http.get(f"/v1/{customer}/cart", headers=web(token)))
        assert [(line["item"], line["quantity"]) for line in web_cart["lines"]] == [
            ("items/SKU-BOOTS", 1),
            ("items/SKU-SOCKS", 2),
        ]

        # -- 3. the mobile app, same customer token ---------------------------------------------
        app_cart = await ok(await http.get(f"/v1/{customer}/cart", headers=mobile(token)))
        assert app_cart["lines"] == web_cart["lines"]
        assert (app_cart["etag"], app_cart["total"]) == (web_cart["etag"], web_cart["total"])

        async with http.stream("GET", f"/v1/{customer}/cart:watch", headers=mobile(token)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
            snapshot = await anext(events)
            first = json.loads(snapshot["data"])
            assert first["kind"] == "CART_CHANGE_KIND_SNAPSHOT"
            assert snapshot["id"] == first["etag"] == app_cart["etag"]
            assert first["cart"]["lines"] == app_cart["lines"]

            added = await ok(
                await http.post(
                    f"/v1/{customer}/cart:addLine",
                    headers=web(token),
                    json={"line": {"item": "items/SKU-SCARF", "quantity": 1}},
                )
            )
            async with asyncio.timeout(10):
                update = await anext(events)
            change = json.loads(update["data"])
            assert change["kind"] == "CART_CHANGE_KIND_LINE_ADDED"
            assert update["id"] == change["etag"] == added["etag"]
            assert change["channel"]["channel"] == "CHANNEL_WEB"
            assert [line["item"] for line in change["cart"]["lines"]] == [
                "items/SKU-BOOTS",
                "items/SKU-SOCKS",
                "items/SKU-SCARF",
            ]
            assert change["cart"]["subtotal"] == eur(12900 + 2 * 999 + 2450)

        # -- 4. availability at a nearby store --------------------------------------------------
        availability = await ok(
            await http.post(
                "/v1/items:checkAvailability",
                headers=mobile(token),
                json={
                    "items": ["items/SKU-BOOTS"],
                    "near": {"point": CUSTOMER_POINT, "radiusMeters": 10000},
                    "pickupOnly": True,
                },
            )
        )
        [boots] = availability["items"]
        at_store = next(a for a in boots["locations"] if a["location"]["location"] == STORE)
        assert at_store["available"] == 5
        assert at_store["location"]["pickupEnabled"] is True
        assert 0 < at_store["location"]["distanceMeters"] < 10000

        # -- 5. checkout with the boots picked up at the store ----------------------------------
        boots_line = next(line for line in change["cart"]["lines"] if line["item"] == "items/SKU-BOOTS")
        # The app comes back with the last event id it saw: no snapshot, the stream resumes there.
        resume = {**mobile(token), "Last-Event-ID": update["id"]}
        async with http.stream("GET", f"/v1/{customer}/cart:watch", headers=resume) as stream:
            events = sse_events(stream)
            updated = await ok(
                await http.post(
                    f"/v1/{customer}/cart:updateLine",
                    headers=mobile(token),
                    json={
                        "lineId": boots_line["lineId"],
                        "line": {
                            "fulfillment": {"method": "FULFILLMENT_METHOD_PICKUP", "pickupStore": STORE}
                        },
                        "updateMask": "fulfillment",
                    },
                )
            )
            async with asyncio.timeout(10):
                resumed = await anext(events)
        resumed_change = json.loads(resumed["data"])
        assert resumed_change["kind"] == "CART_CHANGE_KIND_LINE_UPDATED"
        assert resumed["id"] == updated["etag"]
        assert resumed_change["channel"]["channel"] == "CHANNEL_MOBILE_APP"
        pickup_line = next(line for line in updated["lines"] if line["lineId"] == boots_line["lineId"])
        assert pickup_line["fulfillment"]["method"] == "FULFILLMENT_METHOD_PICKUP"
        assert pickup_line["fulfillment"]["pickupStore"] == STORE

        order = await ok(
            await http.post(
                f"/v1/{customer}/cart:checkout",
                headers=mobile(token),
                json={
                    "etag": updated["etag"],
                    "requestId": str(uuid.uuid4()),
                    "shippingAddress": {
                        "regionCode": "RO",
                        "locality": "Cluj-Napoca",
                        "addressLines": ["Str. Lunga 5"],
                    },
                },
            )
        )
        assert order["name"].startswith(f"{customer}/orders/")
        assert order["state"] == "ORDER_STATE_PLACED"
        assert order["pickupStores"] == [STORE]
        assert order["total"] == eur(12900 + 2 * 999 + 2450)
        groups = {g["fulfillment"]["method"]: g for g in order["fulfillmentGroups"]}
        assert groups["FULFILLMENT_METHOD_PICKUP"]["lineIds"] == [boots_line["lineId"]]
        assert groups["FULFILLMENT_METHOD_PICKUP"]["state"] == "FULFILLMENT_GROUP_STATE_OPEN"
        assert len(groups["FULFILLMENT_METHOD_SHIP"]["lineIds"]) == 2
        emptied = await ok(await http.get(f"/v1/{customer}/cart", headers=web(token)))
        assert emptied["lines"] == []

        # -- 6. the store associate hands it over ------------------------------------------------
        associate_login = await ok(
            await http.post(
                "/v1/staffMembers:login",
                headers=_headers("store_associate", None, store=STORE),
                json={"email": "associate@omni.local", "password": DEMO_PASSWORD},
            )
        )
        assert associate_login["store"] == STORE
        associate = _headers(
            "store_associate", associate_login["accessToken"], store=STORE, device="tablet-3"
        )
        work_list = await ok(
            await http.get(
                "/v1/customers/-/orders", headers=associate, params={"filter": f'pickup_stores:"{STORE}"'}
            )
        )
        assert [o["name"] for o in work_list["orders"]] == [order["name"]]
        assert work_list["orders"][0]["orderNumber"] == order["orderNumber"]

        collected = await ok(
            await http.post(
                f"/v1/{order['name']}:collect",
                headers=associate,
                json={"pickupStore": STORE, "requestId": str(uuid.uuid4())},
            )
        )
        groups = {g["fulfillment"]["method"]: g for g in collected["fulfillmentGroups"]}
        assert groups["FULFILLMENT_METHOD_PICKUP"]["state"] == "FULFILLMENT_GROUP_STATE_COLLECTED"
        assert groups["FULFILLMENT_METHOD_PICKUP"]["fulfilledBy"] == associate_login["principal"]
        assert groups["FULFILLMENT_METHOD_SHIP"]["state"] == "FULFILLMENT_GROUP_STATE_OPEN"
        assert collected["state"] == "ORDER_STATE_PARTIALLY_FULFILLED"

        # The customer sees it too, and the store's stock has gone with the boots.
        seen = await ok(await http.get(f"/v1/{order['name']}", headers=mobile(token)))
        assert seen["state"] == "ORDER_STATE_PARTIALLY_FULFILLED"
        level = await ok(await http.get(f"/v1/{STORE}/stockLevels/SKU-BOOTS", headers=admin))
        assert level["onHand"] == 4
