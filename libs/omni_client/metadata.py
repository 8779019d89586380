"""Who is calling, from where: the channel, store and device metadata every Omni call carries.

Services read ``x-omni-channel`` (``web``, ``mobile_app``, ``store_pos``, ``call_center`` …),
``x-omni-store`` (``locations/{location}``, for store channels) and ``x-omni-device`` (an app
installation, a till) into the channel context they record on carts, orders, stock movements
and the customer's timeline. ``x-request-id`` correlates one logical call across every
service's logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omni.type.v1 import channel_pb2

CHANNEL_KEY = "x-omni-channel"
STORE_KEY = "x-omni-store"
DEVICE_KEY = "x-omni-device"
REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"

_STORE = re.compile(r"locations/[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")
CHANNELS: tuple[str, ...] = tuple(
    sorted(
        v.name.removeprefix("CHANNEL_").lower()
        for v in channel_pb2.Channel.DESCRIPTOR.values
        if v.number != channel_pb2.CHANNEL_UNSPECIFIED
    )
)


@dataclass(frozen=True, slots=True)
class CallContext:
    """The channel context of a backend's calls: ``CallContext("store_pos", store=…, device=…)``."""

    channel: str = ""
    store: str = ""
    device: str = ""

    def __post_init__(self) -> None:
        if self.channel and self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}; one of: {', '.join(CHANNELS)}")
        if self.store and not _STORE.fullmatch(self.store):
            raise ValueError(f"store must be a location name like locations/store-1, got {self.store!r}")
        if len(self.device) > 256:
            raise ValueError("device must be at most 256 characters")

    def metadata(self) -> list[tuple[str, str]]:
        out = []
        if self.channel:
            out.append((CHANNEL_KEY, self.channel))
        if self.store:
            out.append((STORE_KEY, self.store))
        if self.device:
            out.append((DEVICE_KEY, self.device))
        return out


def bearer(token: str) -> tuple[str, str]:
    return (AUTHORIZATION_KEY, f"Bearer {token}")
