"""Wiring of the cart service into the shared runtime (nothing else lives here)."""

from __future__ import annotations

import grpc

from omni.cart.v1 import cart_service_pb2_grpc, events_pb2
from omni_runtime.events.erasure import consume_erasures
from omni_runtime.server import Runtime, ServiceDefinition
from services.cart.api import CartServicer
from services.cart.carts import CartOps
from services.cart.checkout import Checkout
from services.cart.config import CartConfig
from services.cart.erasure import erase_customer
from services.cart.events import GUEST_UPGRADED, PROFILES_MERGED, RESERVATION_EXPIRED, Handlers
from services.cart.inventory_client import InventoryClient
from services.cart.orders import OrderOps
from services.cart.promotion_admin import PromotionAdmin
from services.cart.sweeper import Sweeper
from services.cart.watch import WatchHub


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
    runtime.consume("profile-merges", [PROFILES_MERGED], handlers.on_profiles_merged)
    runtime.consume("reservation-expiries", [RESERVATION_EXPIRED], handlers.on_reservation_expired)
    consume_erasures(runtime, erase_customer, events_pb2.CustomerErasureProcessedEvent)
    sweeper = Sweeper(
        runtime.db, runtime.outbox, config, checkout, attempt_timeout=runtime.settings.max_deadline_seconds
    )
    runtime.background.append(hub.run)
    runtime.background.append(sweeper.run)
    # WatchCart streams never finish on their own: end them (with OK; clients resume with
    # since_etag) before the drain, or it would wait out the whole grace period. After the
    # drain, releases of interrupted checkouts get to finish before peer channels close;
    # whatever does not is left to the sweeper of any replica (the checkout journal).
    runtime.before_drain.append(hub.close)
    runtime.after_drain.append(checkout.drain)


SERVICE = ServiceDefinition(name="cart", grpc_services=["omni.cart.v1.CartService"], register=_register)
