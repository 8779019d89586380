"""Calls to the services whose data completes a customer view or an export, through
``runtime.peers`` (deadline, trace context, channel headers and the service token carried)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from omni.cart.v1 import cart_service_pb2 as cart
from omni.cart.v1 import cart_service_pb2_grpc as cart_grpc
from omni.identity.v1 import identity_service_pb2 as identity
from omni.identity.v1 import identity_service_pb2_grpc as identity_grpc
from omni.inventory.v1 import inventory_service_pb2 as inventory
from omni.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from omni.messaging.v1 import messaging_service_pb2 as messaging
from omni.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc
from omni.preferences.v1 import preferences_service_pb2 as preferences
from omni.preferences.v1 import preferences_service_pb2_grpc as preferences_grpc
from omni_runtime.clients import PeerChannels

MAX_EXPORT_PAGES = 50


async def _all(call: Callable[[str], Awaitable[Any]], field: str) -> list[Message]:
    """Every page of a List call (bounded: an export is one customer's data)."""
    out: list[Message] = []
    token = ""
    for _ in range(MAX_EXPORT_PAGES):
        reply = await call(token)
        out.extend(getattr(reply, field))
        token = reply.next_page_token
        if not token:
            break
    return out


class Peers:
    def __init__(self, channels: PeerChannels, timeout: float | None = None) -> None:
        self.channels = channels
        self.timeout = timeout

    def cart(self) -> cart_grpc.CartServiceStub:
        return cart_grpc.CartServiceStub(self.channels.channel("cart"))

    def messaging(self) -> messaging_grpc.MessagingServiceStub:
        return messaging_grpc.MessagingServiceStub(self.channels.channel("messaging"))

    def preferences(self) -> preferences_grpc.PreferencesServiceStub:
        return preferences_grpc.PreferencesServiceStub(self.channels.channel("preferences"))

    # -- the view's parts -------------------------------------------------------------------

    async def active_cart(self, customer: str, timeout: float) -> Message:
        found: Message = await self.cart().GetCart(
            cart.GetCartRequest(name=f"{customer}/cart"), timeout=timeout
        )
        return found

    async def recent_orders(self, customer: str, count: int, timeout: float) -> list[Message]:
        reply = await self.cart().ListOrders(
            cart.ListOrdersRequest(parent=customer, page_size=count), timeout=timeout
        )
        return list(reply.orders)

    async def open_conversation(self, customer: str, timeout: float) -> Message | None:
        reply = await self.messaging().ListConversations(
            messaging.ListConversationsRequest(
                customer=customer, page_size=1, filter="state != CONVERSATION_STATE_RESOLVED"
            ),
            timeout=timeout,
        )
        return reply.conversations[0] if reply.conversations else None

    async def consents(self, customer: str, timeout: float) -> list[Message]:
        reply = await self.preferences().ListConsents(
            preferences.ListConsentsRequest(parent=customer, page_size=200), timeout=timeout
        )
        return list(reply.consents)

    # -- export: every service's part ---------------------------------------------------------

    async def export(self, service: str, customer: str) -> list[Message]:
        if service == "identity":
            stub = identity_grpc.IdentityServiceStub(self.channels.channel("identity"))
            records: list[Message] = [await stub.GetCustomer(identity.GetCustomerRequest(name=customer))]
            records += await _all(
                lambda t: stub.ListIdentifiers(
                    identity.ListIdentifiersRequest(parent=customer, page_token=t)
                ),
                "identifiers",
            )
            records += await _all(
                lambda t: stub.ListSessions(identity.ListSessionsRequest(parent=customer, page_token=t)),
                "sessions",
            )
            return records
        if service == "cart":
            c = self.cart()
            return [await c.GetCart(cart.GetCartRequest(name=f"{customer}/cart"))] + await _all(
                lambda t: c.ListOrders(cart.ListOrdersRequest(parent=customer, page_size=200, page_token=t)),
                "orders",
            )
        if service == "inventory":
            inv = inventory_grpc.InventoryServiceStub(self.channels.channel("inventory"))
            return await _all(
                lambda t: inv.ListStockSubscriptions(
                    inventory.ListStockSubscriptionsRequest(customer=customer, page_token=t)
                ),
                "stock_subscriptions",
            )
        if service == "preferences":
            p = self.preferences()
            records = [
                await p.GetPreferences(preferences.GetPreferencesRequest(name=f"{customer}/preferences"))
            ]
            records += await _all(
                lambda t: p.ListConsents(preferences.ListConsentsRequest(parent=customer, page_token=t)),
                "consents",
            )
            records += await _all(
                lambda t: p.ListConsentEvents(
                    preferences.ListConsentEventsRequest(parent=f"{customer}/consents/-", page_token=t)
                ),
                "consent_events",
            )
            return records
        if service == "messaging":
            m = self.messaging()
            records = await _all(
                lambda t: m.ListNotifications(
                    messaging.ListNotificationsRequest(customer=customer, page_token=t)
                ),
                "notifications",
            )
            records += await _all(
                lambda t: m.ListConversations(
                    messaging.ListConversationsRequest(customer=customer, page_token=t)
                ),
                "conversations",
            )
            return records
        raise ValueError(f"no export for {service}")
