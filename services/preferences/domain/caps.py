"""Frequency caps on marketing: at most ``max_count`` contacts in any sliding window of ``period``.

A cap applies to a contact when its channel is the cap's (or the cap has none) and its topic is
the cap's (or the cap has none). A new contact at ``t`` is allowed when fewer than ``max_count``
counted contacts fall within one period of ``t``. Contacts reserved for a later send (a
scheduled DecideContact) count on both sides of ``t``, which is conservative: a cap is never
exceeded, at the price of occasionally holding a message that would just have fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Cap:
    max_count: int
    period: timedelta
    channel: int = 0  # 0: all channels together
    topic: str = ""  # "": all topics together

    def applies_to(self, channel: int, topic: str) -> bool:
        return self.channel in (0, channel) and self.topic in ("", topic)


@dataclass(frozen=True, slots=True)
class Contact:
    channel: int
    topic: str
    time: datetime


def longest_period(caps: Iterable[Cap]) -> timedelta:
    return max((c.period for c in caps), default=timedelta(0))


def blocked_until(
    caps: Sequence[Cap], contacts: Sequence[Contact], channel: int, topic: str, at: datetime
) -> datetime | None:
    """None when a contact at ``at`` fits every cap; otherwise the earliest time one could."""
    latest: datetime | None = None
    for cap in caps:
        if not cap.applies_to(channel, topic):
            continue
        times = sorted(
            c.time
            for c in contacts
            if cap.applies_to(c.channel, c.topic) and at - cap.period < c.time < at + cap.period
        )
        if len(times) < cap.max_count:
            continue
        past = [t for t in times if t <= at]
        # The cap frees up when enough of the counted contacts have left the window; a cap full
        # of reserved future contacts frees up a period after the last of them.
        if len(past) >= cap.max_count and len(times) == len(past):
            free = past[len(past) - cap.max_count] + cap.period
        else:
            free = times[-1] + cap.period
        if latest is None or free > latest:
            latest = free
    return latest
