"""In-app messages (CHANNEL_MOBILE_APP, CHANNEL_WEB): the customer's notification list is the
destination. The app shows what ListNotifications returns for the customer (filter
``chosen_channel = CHANNEL_MOBILE_APP``), so a notification is delivered once it is stored;
nothing leaves the service, and there is no address to resolve."""

from __future__ import annotations

from services.messaging.adapters.base import Outbound, Sent
from services.messaging.domain.contacts import INAPP, Destination


class InAppProvider:
    name = "inapp"
    idempotent = True

    def accepts(self, destination: Destination) -> bool:
        return destination.kind == INAPP

    async def send(self, message: Outbound) -> Sent:
        return Sent(provider_message_id=message.idempotency_key, delivered=True)

    async def close(self) -> None:
        return None
