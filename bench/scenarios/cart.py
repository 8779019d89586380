"""Cart: GetCart, AddCartLine and Checkout throughput and p99, each beside the no-op baseline.

The baseline is the probe service's Ping through the full runtime (every interceptor, the same
bearer token verified, the same channel header), measured in the same run at the same
concurrency, so ``throughput_ratio`` and ``p99_ratio`` say what the cart's own work costs.

- ``get_cart``: GetCart of 64 carts holding 3 lines each.
- ``add_item``: AddCartLine of 1 unit, every request with its own request id (thousands are
  pre-built, more than a level can send, so no call is an idempotent replay), spread over 200
  carts and 20 items, without etags (concurrent adds to one cart serialise on its row lock).
- ``checkout``: Checkout of carts prepared beforehand (2 shipped lines each, the etag the
  customer saw, a fresh request id): re-pricing from the catalogue, one reservation in the
  inventory service, the order, the emptied cart and two events, per call. ``orders_placed``
  counts the orders actually stored, which must equal the successful calls.

The cart, the inventory and the probe run in this process (one event loop, as the test harness
runs them); the load comes from a separate process, the Ping and the cart method taking turns
(``env.compare``). Checkout carts are copies of one real cart (made through the API), written
in one statement, so there are more of them than a level can check out and no call replays.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench.env import BenchEnv, grpc_arm, ratio
from bench.report import target
from omni.cart.v1 import cart_service_pb2 as pb
from omni.cart.v1 import cart_service_pb2_grpc
from omni.cart.v1 import resources_pb2 as cart_r
from omni.inventory.v1 import inventory_service_pb2 as inv
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as inv_r
from omni.type.v1 import address_pb2, money_pb2
from omni_runtime.testing.services import running_service
from services.cart.main import SERVICE as CART
from services.inventory.main import SERVICE as INVENTORY

CART_SERVICE = "/omni.cart.v1.CartService"
CONCURRENCIES = (1, 16)
DURATION = 1.5
ITEMS = 20
GET_CARTS = 64
ADD_CARTS = 200
ADD_REQUESTS = 6000
CHECKOUT_CARTS = 3000  # per level, more than a level can check out (each call a new order)
ROUNDS = 2
ADDRESS = address_pb2.PostalAddress(region_code="RO", locality="Cluj-Napoca", address_lines=["Str. 1"])


def _rid() -> str:
    return str(uuid.uuid4())


async def _seed_catalogue(stub: Any, md: tuple[tuple[str, str], ...]) -> list[str]:
    await stub.CreateLocation(
        inv.CreateLocationRequest(
            location_id="bench-w1",
            location=inv_r.Location(
                type=inv_r.LOCATION_TYPE_WAREHOUSE, display_name="Warehouse", ship_from=True
            ),
        ),
        metadata=md,
    )
    skus = [f"CART-{i:03d}" for i in range(ITEMS)]
    await stub.BatchUpsertItems(
        inv.BatchUpsertItemsRequest(
            items=[
                inv_r.Item(
                    name=f"items/{s}",
                    title=s,
                    active=True,
                    prices=[money_pb2.Money(currency_code="EUR", minor_units=1000 + 10 * i)],
                )
                for i, s in enumerate(skus)
            ]
        ),
        metadata=md,
    )
    for s in skus:
        await stub.AdjustStock(
            inv.AdjustStockRequest(
                name=f"locations/bench-w1/stockLevels/{s}",
                delta=1_000_000,
                reason=inv_r.ADJUSTMENT_REASON_RECEIPT,
                request_id=_rid(),
            ),
            metadata=md,
        )
    return [f"items/{s}" for s in skus]


def _add(cart: str, item: str) -> pb.AddCartLineRequest:
    return pb.AddCartLineRequest(name=cart, line=cart_r.CartLine(item=item, quantity=1), request_id=_rid())


async def _fill(
    stub: Any, md: tuple[tuple[str, str], ...], carts: list[str], items: list[str], per_cart: int
) -> dict[str, str]:
    """Give each cart ``per_cart`` lines; returns each cart's etag afterwards."""
    gate = asyncio.Semaphore(32)
    etags: dict[str, str] = {}

    async def fill(index: int, cart: str) -> None:
        async with gate:
            for k in range(per_cart):
                answer = await stub.AddCartLine(_add(cart, items[(index + k) % len(items)]), metadata=md)
            etags[cart] = answer.etag

    await asyncio.gather(*(fill(i, c) for i, c in enumerate(carts)))
    return etags


async def _clone_carts(database_url: str, template: str, customers: list[str]) -> None:
    """Copy one real cart (made through the API) to many customers in one statement: checkout
    levels need more distinct carts than the API could fill in the bench's time."""
    from sqlalchemy import text

    from omni_runtime.db.engine import Database

    db = Database(database_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO carts (customer, version, currency, lines, codes, last_channel, next_line,"
                    " item_count, create_time, update_time)"
                    " SELECT c, version, currency, lines, codes, last_channel, next_line, item_count,"
                    " create_time, update_time FROM carts, unnest(CAST(:customers AS text[])) AS c"
                    " WHERE customer = :template"
                ),
                {"customers": customers, "template": template},
            )
    finally:
        await db.close()


async def run(env: BenchEnv) -> dict[str, Any]:
    token = env.token("serviceClients/bench", roles=["service"])
    md = (("authorization", f"Bearer {token}"), ("x-omni-channel", "web"))
    out: dict[str, Any] = {"duration_s": DURATION, "items": ITEMS, "targets": []}
    inventory_settings = env.settings("inventory", env.new_database("cart_inventory"))
    ping = await env.ping_target()
    async with running_service(INVENTORY, inventory_settings, key_source=env.key_source) as inventory:
        cart_settings = env.settings(
            "cart", env.new_database("cart"), targets={"inventory": inventory.target}
        )
        async with running_service(CART, cart_settings, key_source=env.key_source) as cart:
            assert cart.host.runtime is not None
            service_token = env.token("serviceClients/omni-cart", roles=["service"])

            async def provider() -> str:
                return service_token

            cart.host.runtime.peers.token_provider = provider
            inv_stub = inventory_service_pb2_grpc.InventoryServiceStub(inventory.channel)
            stub = cart_service_pb2_grpc.CartServiceStub(cart.channel)
            started = time.perf_counter()
            items = await _seed_catalogue(inv_stub, md)
            run_id = uuid.uuid4().hex[:6]
            get_carts = [f"customers/bench-{run_id}-get-{i}/cart" for i in range(GET_CARTS)]
            await _fill(stub, md, get_carts, items, 3)
            add_carts = [f"customers/bench-{run_id}-add-{i}/cart" for i in range(ADD_CARTS)]
            template = f"bench-{run_id}-template"
            etag = (await _fill(stub, md, [f"customers/{template}/cart"], items, 2))[
                f"customers/{template}/cart"
            ]
            checkout_sets: dict[int, list[pb.CheckoutRequest]] = {}
            for c in CONCURRENCIES:
                customers = [f"bench-{run_id}-co{c}-{i}" for i in range(CHECKOUT_CARTS)]
                await _clone_carts(cart_settings.database_url, template, customers)
                checkout_sets[c] = [
                    pb.CheckoutRequest(
                        name=f"customers/{who}/cart", etag=etag, request_id=_rid(), shipping_address=ADDRESS
                    )
                    for who in customers
                ]
            out["seed_s"] = round(time.perf_counter() - started, 1)

            get_requests = [pb.GetCartRequest(name=name) for name in get_carts]
            sections: dict[str, list[dict[str, Any]]] = {"get_cart": [], "add_item": [], "checkout": []}
            ping_arm = env.ping_arm(ping, md)
            for c in CONCURRENCIES:
                level = f"c={c}"
                got = await _against_ping(
                    env,
                    ping_arm,
                    grpc_arm("cart", cart.target, f"{CART_SERVICE}/GetCart", get_requests, md),
                    c,
                )
                sections["get_cart"].append(got)
                out["targets"].append(target("GetCart vs Ping, rps", level, got["throughput_ratio"], 0.5))

                adds = [
                    _add(add_carts[k % ADD_CARTS], items[(k // ADD_CARTS) % ITEMS])
                    for k in range(ADD_REQUESTS)
                ]
                added = await _against_ping(
                    env, ping_arm, grpc_arm("cart", cart.target, f"{CART_SERVICE}/AddCartLine", adds, md), c
                )
                added["distinct_request_ids"] = added["cart"]["requests"] <= ADD_REQUESTS
                sections["add_item"].append(added)
                out["targets"].append(
                    target("AddCartLine vs Ping, rps", level, added["throughput_ratio"], 0.3)
                )
                out["targets"].append(
                    target("AddCartLine p99 / Ping p99", level, added["p99_ratio"], 4.0, at_most=True)
                )

                requests = checkout_sets[c]
                placed_before = await _orders(stub, md)
                done = await _against_ping(
                    env, ping_arm, grpc_arm("cart", cart.target, f"{CART_SERVICE}/Checkout", requests, md), c
                )
                placed = await _orders(stub, md) - placed_before
                done["orders_placed"] = placed
                done["prepared_carts"] = len(requests)
                # Every call a new order: no request ran out of prepared carts into a replay.
                done["all_distinct"] = placed == done["cart"]["requests"] <= len(requests)
                sections["checkout"].append(done)
                out["targets"].append(target("Checkout vs Ping, rps", level, done["throughput_ratio"], 0.1))
            out.update(sections)
    return out


async def _against_ping(
    env: BenchEnv, ping_arm: dict[str, Any], arm: dict[str, Any], concurrency: int
) -> dict[str, Any]:
    got = await env.compare([ping_arm, arm], concurrency=concurrency, duration=DURATION, rounds=ROUNDS)
    return {
        "concurrency": concurrency,
        "baseline_ping": got["ping"],
        "cart": got["cart"],
        "throughput_ratio": ratio(got["cart"], got["ping"]),
        "p99_ratio": ratio(got["cart"], got["ping"], "p99_ms"),
    }


async def _orders(stub: Any, md: tuple[tuple[str, str], ...]) -> int:
    answer = await stub.ListOrders(pb.ListOrdersRequest(parent="customers/-", page_size=1), metadata=md)
    return int(answer.total_size)
