"""Contact points: which address reaches a customer on which channel, and how it is shown masked.

Kinds follow profile's ContactPoint and identity's identifiers: e-mail → EMAIL, phone → SMS,
push token → PUSH, WhatsApp/Facebook/Instagram ids → SOCIAL. In-app channels (MOBILE_APP, WEB)
need no address: the customer's own inbox is the destination.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from omni.type.v1 import channel_pb2

EMAIL, PHONE, PUSH_TOKEN = "email", "phone", "push_token"
WHATSAPP, FACEBOOK, INSTAGRAM = "whatsapp", "facebook", "instagram"
INAPP = "inapp"
KINDS_BY_CHANNEL: dict[int, tuple[str, ...]] = {
    channel_pb2.CHANNEL_EMAIL: (EMAIL,),
    channel_pb2.CHANNEL_SMS: (PHONE,),
    channel_pb2.CHANNEL_PUSH: (PUSH_TOKEN,),
    channel_pb2.CHANNEL_SOCIAL: (WHATSAPP, FACEBOOK, INSTAGRAM),
    channel_pb2.CHANNEL_MOBILE_APP: (),
    channel_pb2.CHANNEL_WEB: (),
}


@dataclass(frozen=True, slots=True)
class ContactPoint:
    kind: str
    value: str
    primary: bool = False
    verified: bool = False
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one attempt goes: a kind and an address (the customer's name for in-app)."""

    kind: str
    value: str

    @property
    def masked(self) -> str:
        return mask(self.kind, self.value)


def needs_address(channel: int) -> bool:
    return bool(KINDS_BY_CHANNEL.get(channel, ()))


def choose(points: Iterable[ContactPoint], channel: int) -> ContactPoint | None:
    """The best point for ``channel``: its kinds in order, then primary, verified, most recent."""
    kinds = KINDS_BY_CHANNEL.get(channel, ())
    candidates = [p for p in points if p.kind in kinds]
    if not candidates:
        return None

    def rank(p: ContactPoint) -> tuple[int, bool, bool, float]:
        stamp = p.update_time.timestamp() if p.update_time is not None else 0.0
        return (-kinds.index(p.kind), p.primary, p.verified, stamp)

    return max(candidates, key=rank)


def mask(kind: str, value: str) -> str:
    """``j***@example.com``, ``+40 7** *** 123``, ``…a1b2`` — enough to recognise, not to use."""
    if kind == EMAIL and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind in (PHONE, WHATSAPP):
        digits = value.lstrip("+")
        if len(digits) <= 5:
            return "*" * len(value)
        return f"+{digits[:2]} {digits[2]}** *** {digits[-3:]}"
    if kind == INAPP:
        return value
    return f"…{value[-4:]}" if len(value) > 4 else "…"
