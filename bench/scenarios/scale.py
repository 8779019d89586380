"""Costs that stay flat as data grows: each hot read at 1x and at 100x data, in the same run.

| read | 1x | 100x |
|---|---|---|
| GetCart (3 lines) | 1,000 carts | 100,000 carts |
| ListOrders: first page of 10, newest first, total_size | 10 orders of a customer | 100,000 orders |
| CheckAvailability of 20 SKUs within 10 km of a point | 40 stores | 4,000 stores |
| ResolveIdentity of a loyalty card | 1,000 customers | 100,000 customers |

Each 100x set is the 1x set's world grown a hundredfold the way a retailer grows: more carts,
orders, customers; the 4,000 stores cover a region 10x as wide and as high as the 40 (a country
instead of a city), so about as many stores as before lie near the point. The 1x and 100x
services run side by side (carts, inventories and identities in databases of their own; both
order histories in one cart database) and the two arms take turns in one load process.
``cost_ratio`` = requests/s at 1x ÷ requests/s at 100x: what a read costs more with 100x the
data. Target: <= 1.5.

Seeding makes one real object of each kind through the API and copies its rows in SQL
(bench/seed.py), then ANALYZEs: 100,000 rows take seconds. ``plan_100x`` is PostgreSQL's
``EXPLAIN (ANALYZE, BUFFERS)`` of each read's statement on the 100x data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bench.env import BenchEnv, grpc_arm
from bench.report import target
from bench.seed import clone, explain
from omni.cart.v1 import cart_service_pb2 as cart_pb
from omni.cart.v1 import cart_service_pb2_grpc
from omni.cart.v1 import resources_pb2 as cart_r
from omni.identity.v1 import identity_service_pb2 as id_pb
from omni.identity.v1 import identity_service_pb2_grpc, resources_pb2
from omni.inventory.v1 import inventory_service_pb2 as inv
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as inv_r
from omni.type.v1 import address_pb2, money_pb2
from omni_runtime.auth.tokens import issue_token
from omni_runtime.testing.services import RunningService, running_service

CONCURRENCY = 4
DURATION = 1.5
ROUNDS = 2
SMALL, LARGE = 1_000, 100_000
CENTRE = (46.7700, 23.5900)
ITEMS = 20
Metadata = tuple[tuple[str, str], ...]


def _rid() -> str:
    return str(uuid.uuid4())


async def run(env: BenchEnv) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": CONCURRENCY, "targets": []}
    md = (
        ("authorization", f"Bearer {env.token('serviceClients/bench', roles=['service'])}"),
        ("x-omni-channel", "web"),
    )
    async with AsyncExitStack() as stack:
        small_inv = await stack.enter_async_context(_inventory(env, "1x"))
        large_inv = await stack.enter_async_context(_inventory(env, "100x"))
        small_cart = await stack.enter_async_context(_cart(env, "1x", small_inv.target))
        large_cart = await stack.enter_async_context(_cart(env, "100x", small_inv.target))
        items = await _catalogue(inventory_service_pb2_grpc.InventoryServiceStub(small_inv.channel), md)

        reads = {
            "get_cart": await _carts(env, small_cart, large_cart, items, md),
            "list_orders": await _orders(env, large_cart, small_inv, items, md),
            "availability_near": await _availability(env, small_inv, large_inv, md),
        }
        small_id = await stack.enter_async_context(_identity(env, "1x"))
        large_id = await stack.enter_async_context(_identity(env, "100x"))
        reads["resolve_identity"] = await _identities(env, small_id, large_id)

        for name, (small_arm, large_arm, plan) in reads.items():
            got = await env.compare(
                [small_arm, large_arm], concurrency=CONCURRENCY, duration=DURATION, rounds=ROUNDS
            )
            one, hundred = got["1x"], got["100x"]
            ratio = round(one["rps"] / hundred["rps"], 3) if hundred["rps"] else None
            out[name] = {"1x": one, "100x": hundred, "cost_ratio": ratio, "plan_100x": plan}
            out["targets"].append(
                target(f"{name}: cost at 100x ÷ at 1x", f"c={CONCURRENCY}", ratio, 1.5, at_most=True)
            )
    return out


# --- services -------------------------------------------------------------------------------


@asynccontextmanager
async def _inventory(env: BenchEnv, tag: str) -> AsyncIterator[RunningService]:
    from services.inventory.main import SERVICE

    settings = env.settings("inventory", env.new_database(f"scale_inv_{tag}"))
    async with running_service(SERVICE, settings, key_source=env.key_source) as svc:
        yield svc


@asynccontextmanager
async def _cart(env: BenchEnv, tag: str, inventory: str) -> AsyncIterator[RunningService]:
    from services.cart.main import SERVICE

    settings = env.settings("cart", env.new_database(f"scale_cart_{tag}"), targets={"inventory": inventory})
    async with running_service(SERVICE, settings, key_source=env.key_source) as svc:
        assert svc.host.runtime is not None
        token = env.token("serviceClients/omni-cart", roles=["service"])

        async def provider() -> str:
            return token

        svc.host.runtime.peers.token_provider = provider
        yield svc


@asynccontextmanager
async def _identity(env: BenchEnv, tag: str) -> AsyncIterator[RunningService]:
    from services.identity.main import SERVICE

    settings = env.settings("identity", env.new_database(f"scale_id_{tag}"))
    async with running_service(SERVICE, settings) as svc:
        yield svc


# --- data and arms --------------------------------------------------------------------------


async def _catalogue(stub: Any, md: Metadata) -> list[str]:
    skus = [f"SCALE-{i:03d}" for i in range(ITEMS)]
    await stub.BatchUpsertItems(
        inv.BatchUpsertItemsRequest(
            items=[
                inv_r.Item(
                    name=f"items/{s}",
                    title=s,
                    active=True,
                    prices=[money_pb2.Money(currency_code="EUR", minor_units=1000 + i)],
                )
                for i, s in enumerate(skus)
            ]
        ),
        metadata=md,
    )
    await stub.CreateLocation(
        inv.CreateLocationRequest(
            location_id="scale-w",
            location=inv_r.Location(type=inv_r.LOCATION_TYPE_WAREHOUSE, display_name="W", ship_from=True),
        ),
        metadata=md,
    )
    for s in skus[:2]:
        await stub.AdjustStock(
            inv.AdjustStockRequest(
                name=f"locations/scale-w/stockLevels/{s}",
                delta=1_000_000,
                reason=inv_r.ADJUSTMENT_REASON_RECEIPT,
                request_id=_rid(),
            ),
            metadata=md,
        )
    return [f"items/{s}" for s in skus]


async def _carts(
    env: BenchEnv, small: RunningService, large: RunningService, items: list[str], md: Metadata
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    from services.cart.store import carts

    for svc, count in ((small, SMALL), (large, LARGE)):
        stub = cart_service_pb2_grpc.CartServiceStub(svc.channel)
        for item in items[:3]:
            await stub.AddCartLine(
                cart_pb.AddCartLineRequest(
                    name="customers/scale-template/cart",
                    line=cart_r.CartLine(item=item, quantity=1),
                    request_id=_rid(),
                ),
                metadata=md,
            )
        url = svc.host.settings.database_url
        await clone(url, carts, "t.customer = 'scale-template'", count, {"customer": "'scale-' || g"})

    def arm(name: str, svc: RunningService, count: int) -> dict[str, Any]:
        names = [f"customers/scale-{1 + (i * 7919) % count}/cart" for i in range(64)]
        return grpc_arm(
            name,
            svc.target,
            "/omni.cart.v1.CartService/GetCart",
            [cart_pb.GetCartRequest(name=n) for n in names],
            md,
        )

    plan = await explain(
        large.host.settings.database_url,
        "SELECT * FROM carts WHERE customer = :c",
        {"c": f"scale-{LARGE // 2}"},
    )
    return arm("1x", small, SMALL), arm("100x", large, LARGE), plan


async def _orders(
    env: BenchEnv, cart: RunningService, inventory: RunningService, items: list[str], md: Metadata
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    from services.cart.store import order_counts, orders

    stub = cart_service_pb2_grpc.CartServiceStub(cart.channel)
    name = "customers/scale-buyer/cart"
    added = await stub.AddCartLine(
        cart_pb.AddCartLineRequest(
            name=name, line=cart_r.CartLine(item=items[0], quantity=1), request_id=_rid()
        ),
        metadata=md,
    )
    placed = await stub.Checkout(
        cart_pb.CheckoutRequest(
            name=name,
            etag=added.etag,
            request_id=_rid(),
            shipping_address=address_pb2.PostalAddress(
                region_code="RO", locality="Cluj", address_lines=["1"]
            ),
        ),
        metadata=md,
    )
    template = placed.name.rsplit("/", 1)[-1]
    url = cart.host.settings.database_url
    # The few orders are older than the many (another customer's newer orders come first in
    # time): a plan that walked orders by time rather than by customer would show it.
    for who, count, back in (("scale-few", 10, LARGE * 2), ("scale-many", LARGE, 0)):
        await clone(
            url,
            orders,
            "t.id = :template",
            count,
            {
                "id": f"md5('{who}' || g)",
                "customer": f"'{who}'",
                "order_number": f"'{who}-' || g",
                "create_time": f"t.create_time - ({back} + g) * interval '1 second'",
            },
            {"template": template},
        )
        await clone(
            url, order_counts, "t.customer = 'scale-buyer'", 1, {"customer": f"'{who}'", "orders": str(count)}
        )

    def arm(arm_name: str, who: str) -> dict[str, Any]:
        request = cart_pb.ListOrdersRequest(parent=f"customers/{who}", page_size=10)
        return grpc_arm(arm_name, cart.target, "/omni.cart.v1.CartService/ListOrders", [request], md)

    plan = await explain(
        url,
        "SELECT doc, create_time, id, (SELECT orders FROM order_counts WHERE customer = :c) FROM orders"
        " WHERE customer = :c ORDER BY create_time DESC, id DESC LIMIT 11",
        {"c": "scale-many"},
    )
    return arm("1x", "scale-few"), arm("100x", "scale-many"), plan


async def _availability(
    env: BenchEnv, small: RunningService, large: RunningService, md: Metadata
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    from services.inventory.store import locations, stock_levels

    skus = [f"NEAR-{i:03d}" for i in range(ITEMS)]
    for svc, stores, spread in ((small, 40, 1.0), (large, 4_000, 10.0)):
        stub = inventory_service_pb2_grpc.InventoryServiceStub(svc.channel)
        await stub.BatchUpsertItems(
            inv.BatchUpsertItemsRequest(
                items=[inv_r.Item(name=f"items/{s}", title=s, active=True) for s in skus]
            ),
            metadata=md,
        )
        await stub.CreateLocation(
            inv.CreateLocationRequest(
                location_id="near-template",
                location=inv_r.Location(
                    type=inv_r.LOCATION_TYPE_STORE,
                    display_name="Store",
                    address=address_pb2.PostalAddress(region_code="RO", locality="Cluj", address_lines=["1"]),
                    coordinates=address_pb2.GeoPoint(latitude=0.0, longitude=0.0),
                    pickup_enabled=True,
                ),
            ),
            metadata=md,
        )
        await asyncio.gather(
            *(
                stub.AdjustStock(
                    inv.AdjustStockRequest(
                        name=f"locations/near-template/stockLevels/{s}",
                        delta=10,
                        reason=inv_r.ADJUSTMENT_REASON_RECEIPT,
                        request_id=_rid(),
                    ),
                    metadata=md,
                )
                for s in skus
            )
        )
        url = svc.host.settings.database_url
        # Stores scattered over a square around the centre, 0.44 x 0.64 degrees (about 49 km)
        # at 1x and ten times as wide and high at 100x: the same density near the point.
        await clone(
            url,
            locations,
            "t.id = 'near-template'",
            stores,
            {
                "id": "'near-' || g",
                "latitude": f"{CENTRE[0]} + (random() - 0.5) * 0.44 * {spread}",
                "longitude": f"{CENTRE[1]} + (random() - 0.5) * 0.64 * {spread}",
            },
        )
        await clone(
            url,
            stock_levels,
            "t.location_id = 'near-template'",
            stores,
            {"location_id": "'near-' || g"},
        )
    request = inv.CheckAvailabilityRequest(
        items=[f"items/{s}" for s in skus],
        near=inv.NearbyArea(
            point=address_pb2.GeoPoint(latitude=CENTRE[0], longitude=CENTRE[1]),
            radius_meters=10_000,
            max_locations=10,
        ),
        pickup_only=True,
    )
    method = "/omni.inventory.v1.InventoryService/CheckAvailability"
    plan = await explain(
        large.host.settings.database_url,
        "SELECT * FROM locations WHERE type = 2 AND point(longitude, latitude) <@"
        " box(point(:w, :s), point(:e, :n))",
        {"w": CENTRE[1] - 0.131, "s": CENTRE[0] - 0.09, "e": CENTRE[1] + 0.131, "n": CENTRE[0] + 0.09},
    )
    return (
        grpc_arm("1x", small.target, method, [request], md),
        grpc_arm("100x", large.target, method, [request], md),
        plan,
    )


async def _identities(
    env: BenchEnv, small: RunningService, large: RunningService
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    from services.identity.keys import KeyRing
    from services.identity.store import customers, identifiers

    arms = []
    for svc, count, tag in ((small, SMALL, "1x"), (large, LARGE, "100x")):
        stub = identity_service_pb2_grpc.IdentityServiceStub(svc.channel)
        assert svc.host.runtime is not None and isinstance(svc.host.runtime.key_source, KeyRing)
        ring = svc.host.runtime.key_source
        service_md = (
            (
                "authorization",
                f"Bearer {issue_token(ring.current(), subject='serviceClients/bench', roles=['service'])}",
            ),
        )
        agent_md = (
            (
                "authorization",
                "Bearer "
                + issue_token(
                    ring.current(), subject="staffMembers/bench-agent", roles=["agent"], ttl_seconds=3600
                ),
            ),
        )
        made = await stub.RegisterCustomer(
            id_pb.RegisterCustomerRequest(
                identifier=resources_pb2.IdentifierKey(
                    kind=resources_pb2.IDENTIFIER_KIND_EMAIL, value="scale-template@example.com"
                ),
                password="bench password 1234",
            )
        )
        await stub.LinkIdentifier(
            id_pb.LinkIdentifierRequest(
                parent=made.customer.name,
                identifier=resources_pb2.IdentifierKey(
                    kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value="SCALE0"
                ),
                attested=True,
            ),
            metadata=service_md,
        )
        template = made.customer.name.removeprefix("customers/")
        url = svc.host.settings.database_url
        await clone(
            url, customers, "t.id = :template", count, {"id": "'scale-c' || g"}, {"template": template}
        )
        await clone(
            url,
            identifiers,
            "t.customer_id = :template",
            count,
            {
                "id": "t.id || '-' || g",
                "customer_id": "'scale-c' || g",
                "value": "CASE WHEN t.kind = 1 THEN 'scale-' || g || '@example.com' ELSE 'SCALE' || g END",
            },
            {"template": template},
        )
        requests = [
            id_pb.ResolveIdentityRequest(
                identifier=resources_pb2.IdentifierKey(
                    kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value=f"SCALE{1 + (i * 7919) % count}"
                )
            )
            for i in range(64)
        ]
        arms.append(
            grpc_arm(tag, svc.target, "/omni.identity.v1.IdentityService/ResolveIdentity", requests, agent_md)
        )
    plan = await explain(
        large.host.settings.database_url,
        "SELECT i.*, c.* FROM identity_identifiers i JOIN identity_customers c ON c.id = i.customer_id"
        " WHERE i.kind = 3 AND i.value = :v",
        {"v": f"SCALE{LARGE // 2}"},
    )
    return arms[0], arms[1], plan
