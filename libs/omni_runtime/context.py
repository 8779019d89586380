"""Per-call context: who is calling, from which channel, under which trace.

Held in context variables set by the interceptors for the duration of one RPC, so domain code
and outgoing calls can read them without threading them through every signature.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from omni.type.v1 import channel_pb2

# Metadata keys carried by channel clients (lower case: gRPC metadata keys are case-insensitive).
CHANNEL_KEY = "x-omni-channel"
STORE_KEY = "x-omni-store"
DEVICE_KEY = "x-omni-device"
REQUEST_ID_KEY = "x-request-id"

_CHANNEL_NAMES = {
    value.name.removeprefix("CHANNEL_").lower(): value.number
    for value in channel_pb2.Channel.DESCRIPTOR.values
    if value.number != channel_pb2.CHANNEL_UNSPECIFIED
}


def channel_from_name(name: str) -> int | None:
    """``"mobile_app"`` → ``CHANNEL_MOBILE_APP``; None for an unknown name."""
    return _CHANNEL_NAMES.get(name.strip().lower())


def channel_name(channel: int) -> str:
    return channel_pb2.Channel.Name(channel).removeprefix("CHANNEL_").lower()  # type: ignore[arg-type]


def known_channel_names() -> list[str]:
    return sorted(_CHANNEL_NAMES)


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    channel: int = channel_pb2.CHANNEL_UNSPECIFIED
    store: str = ""
    device: str = ""

    def to_proto(self) -> channel_pb2.ChannelContext:
        return channel_pb2.ChannelContext(channel=self.channel, store=self.store, device=self.device)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller.

    ``subject`` is a resource name: ``customers/…``, ``staffMembers/…`` or ``serviceClients/…``.
    ``store`` scopes a store associate to one store (``locations/…``).
    """

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    store: str = ""
    session: str = ""
    token_channel: str = ""

    @property
    def customer(self) -> str | None:
        return self.subject if self.subject.startswith("customers/") else None

    def has_role(self, role: str) -> bool:
        return role in self.roles


ANONYMOUS = Principal(subject="", roles=frozenset({"anonymous"}))

current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "omni_principal",
    default=ANONYMOUS,
)
_NO_CHANNEL = ChannelInfo()
current_channel: contextvars.ContextVar[ChannelInfo] = contextvars.ContextVar(
    "omni_channel", default=_NO_CHANNEL
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("omni_request_id", default="")
