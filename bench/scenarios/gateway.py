"""GetCart through the gateway (HTTP/JSON) vs straight to the cart service (gRPC), same run.

The cart holds two priced lines (real inventory behind it). The same customer token reads it
at 1, 8 and 32 concurrent callers, closed-loop from a separate process (bench/load.py), over
gRPC and over HTTP/1.1 keep-alive, taking turns. The ratios are the
gateway's cost as a channel client sees it: routing, token check, transcoding to protobuf and
back to proto3 JSON, plus one more hop.

The gateway runs in this process with the cart and inventory services (one event loop), so at
high concurrency its CPU competes with the service's on this 2-core machine, as two pods on one
node would; the ratio is therefore an upper bound of what separate processes would show.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import uvicorn

from bench.env import BenchEnv, grpc_arm, http_arm, ratio
from bench.report import target
from omni.cart.v1 import cart_service_pb2, cart_service_pb2_grpc
from omni.cart.v1 import resources_pb2 as cart_resources
from omni.inventory.v1 import inventory_service_pb2 as inv
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as inv_resources
from omni.type.v1 import money_pb2
from omni_runtime.clients import make_channel
from omni_runtime.localinfra import free_port
from omni_runtime.testing.services import running_service

CONCURRENCIES = (1, 8, 32)
DURATION = 3.0
ROUNDS = 3
METHOD = "/omni.cart.v1.CartService/GetCart"
CUSTOMER = "customers/bench-gw-customer"


async def _seed(env: BenchEnv, inventory_channel: Any, cart_channel: Any) -> None:
    admin = (("authorization", f"Bearer {env.token('staffMembers/bench-admin', ['admin'])}"),)
    admin = (*admin, ("x-omni-channel", "backoffice"))
    stock = inventory_service_pb2_grpc.InventoryServiceStub(inventory_channel)
    await stock.CreateLocation(
        inv.CreateLocationRequest(
            location_id="bench-gw-warehouse",
            location=inv_resources.Location(
                type=inv_resources.LOCATION_TYPE_WAREHOUSE, display_name="Warehouse", ship_from=True
            ),
        ),
        metadata=admin,
    )
    for sku, price in (("BENCH-GW-1", 1999), ("BENCH-GW-2", 4500)):
        await stock.CreateItem(
            inv.CreateItemRequest(
                item_id=sku,
                item=inv_resources.Item(
                    title=sku, active=True, prices=[money_pb2.Money(currency_code="EUR", minor_units=price)]
                ),
            ),
            metadata=admin,
        )
    customer = (("authorization", f"Bearer {env.token(CUSTOMER)}"), ("x-omni-channel", "web"))
    carts = cart_service_pb2_grpc.CartServiceStub(cart_channel)
    for sku, quantity in (("BENCH-GW-1", 2), ("BENCH-GW-2", 1)):
        await carts.AddCartLine(
            cart_service_pb2.AddCartLineRequest(
                name=f"{CUSTOMER}/cart",
                line=cart_resources.CartLine(item=f"items/{sku}", quantity=quantity),
                currency_code="EUR",
                request_id=str(uuid.uuid4()),
            ),
            metadata=customer,
        )


async def run(env: BenchEnv) -> dict[str, Any]:
    from services.cart.main import SERVICE as CART
    from services.gateway.app import GatewayConfig, create_app
    from services.gateway.routes import Contracts
    from services.inventory.main import SERVICE as INVENTORY

    out: dict[str, Any] = {
        "method": METHOD,
        "route": "GET /v1/customers/{customer}/cart",
        "levels": [],
        "targets": [],
    }
    inventory_settings = env.settings("inventory", env.new_database("gw_inventory"))
    async with running_service(INVENTORY, inventory_settings, key_source=env.key_source) as inventory:
        cart_settings = env.settings(
            "cart", env.new_database("gw_cart"), targets={"inventory": inventory.target}
        )
        async with running_service(CART, cart_settings, key_source=env.key_source) as cart:
            assert cart.host.runtime is not None
            service_token = env.token("serviceClients/omni-cart", ["service"])

            async def provider() -> str:
                return service_token

            cart.host.runtime.peers.token_provider = provider
            await _seed(env, inventory.channel, cart.channel)

            channel = make_channel(cart.target)  # the gateway's pooled channel to the cart
            gateway_settings = env.settings("gateway", "")
            app = create_app(
                Contracts.load(),
                {"omni.cart.v1.CartService": channel},
                gateway_settings,
                key_source=env.key_source,
                config=GatewayConfig(rate_per_second=1e9, rate_burst=1e9),
            )
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
                )
            )
            serving = asyncio.create_task(server.serve())
            try:
                while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag
                    await asyncio.sleep(0.01)
                token = env.token(CUSTOMER)
                metadata = [("authorization", f"Bearer {token}"), ("x-omni-channel", "web")]
                headers = [("Authorization", f"Bearer {token}"), ("X-Omni-Channel", "web")]
                request = [cart_service_pb2.GetCartRequest(name=f"{CUSTOMER}/cart")]
                arms = [
                    grpc_arm("grpc", cart.target, METHOD, request, metadata),
                    http_arm("gateway", port, "GET", f"/v1/{CUSTOMER}/cart", headers),
                ]
                for concurrency in CONCURRENCIES:
                    got = await env.compare(arms, concurrency=concurrency, duration=DURATION, rounds=ROUNDS)
                    level = {
                        "concurrency": concurrency,
                        **got,
                        "throughput_ratio": ratio(got["gateway"], got["grpc"]),
                        "p50_ratio": ratio(got["gateway"], got["grpc"], "p50_ms"),
                        "p99_ratio": ratio(got["gateway"], got["grpc"], "p99_ms"),
                    }
                    out["levels"].append(level)
                    out["targets"].append(
                        target(
                            "HTTP via gateway vs gRPC, rps",
                            f"c={concurrency}",
                            level["throughput_ratio"],
                            0.8,
                        )
                    )
            finally:
                server.should_exit = True
                await serving
                await channel.close()
    return out
