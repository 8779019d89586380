"""The one interface every provider implements, so the delivery schedule never knows which
provider (or protocol) carries a channel.

A provider sends one message and either returns the provider's message id or raises
``ProviderError`` saying whether the failure is transient (try again later: 429, 5xx, network)
or permanent (this destination will never work: invalid number, unregistered device, rejected).
``idempotent`` says whether the provider honours the idempotency key, i.e. whether a re-send
after a crash between "provider accepted" and "we recorded it" is dropped by the provider (no
duplicate) or delivered again (at most one duplicate); see the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from services.messaging.domain.contacts import Destination

# Error codes on attempts (DeliveryAttempt.error_code), shared by every provider.
INVALID_DESTINATION = "INVALID_DESTINATION"
DEVICE_UNREGISTERED = "DEVICE_UNREGISTERED"
REJECTED = "REJECTED"
BOUNCED = "BOUNCED"
PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
RATE_LIMITED = "RATE_LIMITED"
NO_CONTACT_POINT = "NO_CONTACT_POINT"
MISCONFIGURED = "PROVIDER_MISCONFIGURED"
PREFERENCES_REFUSED = "PREFERENCES_REFUSED"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to send: rendered content, where it goes, and the key that identifies it."""

    channel: int
    destination: Destination
    subject: str
    body: str
    html_body: str = ""
    # Stable across re-sends of the same attempt (``<notification>.<channel>.<try>``).
    idempotency_key: str = ""
    # The notification (or, later, conversation message) it carries, for the provider's metadata.
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider accepted the message."""

    provider_message_id: str
    # True when acceptance is delivery (in-app: the inbox is the destination).
    delivered: bool = False


class ProviderError(Exception):
    """A send failed; ``transient`` decides between a retry and the next channel."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        transient: bool,
        retry_after: timedelta | None = None,
        provider_code: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after
        self.provider_code = provider_code


class Provider(Protocol):
    """A provider of one or more channels."""

    @property
    def name(self) -> str: ...

    @property
    def idempotent(self) -> bool: ...

    def accepts(self, destination: Destination) -> bool:
        """Whether this provider can reach this kind of destination."""
        ...

    async def send(self, message: Outbound) -> Sent: ...

    async def close(self) -> None: ...
