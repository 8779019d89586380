"""What the cart service consumes: a guest who logged in (merge their cart into the customer's),
two customers profile found to be one person (merge the carts the same way) and an order's
reservation that expired (the pickup was not collected in time).

An unmerge (profile's ProfilesUnmergedEvent) is deliberately not followed: the merged basket
stays with the target, whose customer may have changed it since, and splitting it back would
guess at whose lines are whose; orders never moved. The restored source starts an empty cart.

What it publishes is built where the change happens (carts.py, checkout.py, orders.py,
sweeper.py) and always goes through the outbox in the same transaction as the change.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2 as identity_events
from omni.inventory.v1 import events_pb2 as inventory_events
from omni.profile.v1 import events_pb2 as profile_events
from omni.profile.v1 import resources_pb2 as profile_resources
from omni_runtime import names
from omni_runtime.context import ChannelInfo, current_channel
from omni_runtime.events.consumer import Event
from services.cart.carts import CartOps
from services.cart.config import CartConfig
from services.cart.orders import OrderOps

log = logging.getLogger("omni.cart.events")

GUEST_UPGRADED = "omni.identity.guest_upgraded"
PROFILES_MERGED = "omni.profile.profiles_merged"
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

    async def on_profiles_merged(self, session: AsyncSession, event: Event) -> None:
        """Profile merged two customers (reason DUPLICATE): the source's cart moves into the
        target's with the guest merge mode. GUEST_LOGIN merges come as guest_upgraded already."""
        merged = event.decode(profile_events.ProfilesMergedEvent)
        if merged.reason == profile_resources.MERGE_REASON_GUEST_LOGIN:
            return
        source = names.parse(CUSTOMER, merged.source_customer)
        target = names.parse(CUSTOMER, merged.target_customer)
        if source is None or target is None or source["customer"] == target["customer"]:
            log.warning("ignoring profiles_merged %s without two distinct customers", event.id)
            return
        await self.carts.merge_in(
            session,
            target_customer=target["customer"],
            source_customer=source["customer"],
            mode=self.config.guest_merge_mode,
        )

    async def on_reservation_expired(self, session: AsyncSession, event: Event) -> None:
        expired = event.decode(inventory_events.ReservationExpiredEvent)
        await self.orders.reservation_expired(session, expired.reservation.name, expired.reservation.owner)
