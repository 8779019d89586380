"""What the cart service consumes: a guest who logged in (merge their cart into the customer's)
and an order's reservation that expired (the pickup was not collected in time).

What it publishes is built where the change happens (carts.py, checkout.py, orders.py,
sweeper.py) and always goes through the outbox in the same transaction as the change.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2 as identity_events
from omni.inventory.v1 import events_pb2 as inventory_events
from omni_runtime import names
from omni_runtime.context import ChannelInfo, current_channel
from omni_runtime.events.consumer import Event
from services.cart.carts import CartOps
from services.cart.config import CartConfig
from services.cart.orders import OrderOps

log = logging.getLogger("omni.cart.events")

GUEST_UPGRADED = "omni.identity.guest_upgraded"
RESERVATION_EXPIRED = "omni.inventory.reservation_expired"
CUSTOMER = "customers/{customer}"


class Handlers:
    def __init__(self, carts: CartOps, orders: OrderOps, config: CartConfig) -> None:
        self.carts = carts
        self.orders = orders
        self.config = config

    async def on_guest_upgraded(self, session: AsyncSession, event: Event) -> None:
        """A guest logged into an existing account: their cart moves into the customer's."""
        upgraded = event.decode(identity_events.GuestUpgradedEvent)
        if upgraded.outcome != identity_events.GuestUpgradedEvent.OUTCOME_MERGED:
            return  # upgraded in place: the cart already belongs to the customer
        guest = names.parse(CUSTOMER, upgraded.guest)
        customer = names.parse(CUSTOMER, upgraded.customer)
        if guest is None or customer is None or guest["customer"] == customer["customer"]:
            log.warning(
                "ignoring guest_upgraded %s with guest %r, customer %r",
                event.id,
                upgraded.guest,
                upgraded.customer,
            )
            return
        channel = upgraded.channel
        token = current_channel.set(ChannelInfo(channel.channel, channel.store, channel.device))
        try:
            await self.carts.merge_in(
                session,
                target_customer=customer["customer"],
                source_customer=guest["customer"],
                mode=self.config.guest_merge_mode,
            )
        finally:
            current_channel.reset(token)

    async def on_reservation_expired(self, session: AsyncSession, event: Event) -> None:
        expired = event.decode(inventory_events.ReservationExpiredEvent)
        await self.orders.reservation_expired(session, expired.reservation.name, expired.reservation.owner)
