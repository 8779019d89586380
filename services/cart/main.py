"""Wiring of the cart service into the shared runtime (nothing else lives here)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from omni.cart.v1 import cart_service_pb2_grpc
from omni_runtime.server import Runtime, ServiceDefinition

from services.cart.api import CartServicer
from services.cart.carts import CartOps
from services.cart.checkout import Checkout
from services.cart.config import CartConfig
from services.cart.events import GUEST_UPGRADED, RESERVATION_EXPIRED, Handlers
from services.cart.inventory_client import InventoryClient
from services.cart.orders import OrderOps
from services.cart.promotion_admin import PromotionAdmin
from services.cart.sweeper import Sweeper
from services.cart.watch import WatchHub


def _end_streams_before_drain(server: grpc.aio.Server, hub: WatchHub, checkout: Checkout) -> None:
    """WatchCart streams never finish on their own, so the server's drain would wait out the
    whole grace period for them and then cancel them. Ending them first (with OK: the contract
    lets the server end a stream at any time, and clients resume with ``since_etag``) keeps
    shutdown as quick as the unary calls in flight allow. After the drain, releases of
    interrupted checkouts still running get to finish before the peers' channels close."""
    original = server.stop

    async def stop(grace: float | None) -> None:
        hub.close()
        await original(grace)
        # Whatever does not finish in time is left to the sweeper of any replica (the journal).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(checkout.drain(), timeout=5.0)

    server.stop = stop  # type: ignore[method-assign]


async def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    if runtime.db is None or runtime.outbox is None:
        raise RuntimeError("the cart service needs its database and the event bus")
    config = CartConfig.from_settings(runtime.settings)
    inventory = InventoryClient(runtime.peers, cache_seconds=config.catalogue_cache_seconds)
    hub = WatchHub(runtime.bus, queue_size=config.watch_queue_size, max_age=config.watch_max_age)
    carts = CartOps(runtime, config, inventory, hub)
    checkout = Checkout(carts, inventory)
    orders = OrderOps(runtime, config, inventory)
    servicer = CartServicer(runtime, carts, checkout, orders, PromotionAdmin(runtime), hub)
    cart_service_pb2_grpc.add_CartServiceServicer_to_server(servicer, server)
    handlers = Handlers(carts, orders, config)
    runtime.consume("guest-upgrades", [GUEST_UPGRADED], handlers.on_guest_upgraded)
    runtime.consume("reservation-expiries", [RESERVATION_EXPIRED], handlers.on_reservation_expired)
    sweeper = Sweeper(
        runtime.db, runtime.outbox, config, checkout, attempt_timeout=runtime.settings.max_deadline_seconds
    )
    runtime.background.append(hub.run)
    runtime.background.append(sweeper.run)
    _end_streams_before_drain(server, hub, checkout)


SERVICE = ServiceDefinition(name="cart", grpc_services=["omni.cart.v1.CartService"], register=_register)
