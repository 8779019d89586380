"""What preferences' DecideContact answer means for a notification: send, hold or suppress.

Preferences decides (consent and its legal basis, quiet hours, caps, preferred channels, contact
points); this module only translates its verdict into the notification's next step, so the rules
live in one service. A hold that would outlast the notification's ``expire_time`` (or the longest
hold the service allows) is a suppression now rather than a surprise later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref

CONSENT_REASONS = frozenset(
    {
        pref.DECISION_REASON_NO_CONSENT,
        pref.DECISION_REASON_CONSENT_DENIED,
        pref.DECISION_REASON_CONSENT_WITHDRAWN,
        pref.DECISION_REASON_PENDING_CONFIRMATION,
    }
)
TIMING_REASONS = frozenset({pref.DECISION_REASON_QUIET_HOURS, pref.DECISION_REASON_FREQUENCY_CAP})


@dataclass(frozen=True, slots=True)
class Evaluation:
    channel: int
    allowed: bool
    reasons: frozenset[int]
    next_allowed_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """DecideContact's answer, reduced to what a notification needs."""

    allowed: bool
    channel: int
    reasons: frozenset[int]
    next_allowed_time: datetime | None
    fallback_channels: tuple[int, ...]
    evaluations: tuple[Evaluation, ...]
    language_code: str
    reserved: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    channels: tuple[int, ...]
    language: str
    reserved_channel: int = 0


@dataclass(frozen=True, slots=True)
class Hold:
    until: datetime
    language: str


@dataclass(frozen=True, slots=True)
class Suppress:
    reason: int


Plan = Send | Hold | Suppress


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a notification may be held waiting for quiet hours or a cap to free up."""

    max_hold: timedelta = timedelta(days=7)


def _suppression(decision: Decision, requested: int) -> int:
    if pref.DECISION_REASON_CUSTOMER_NOT_CONTACTABLE in decision.reasons:
        return res.SUPPRESSION_REASON_CUSTOMER_NOT_CONTACTABLE
    if requested:
        if decision.reasons and decision.reasons <= {pref.DECISION_REASON_NO_CONTACT_POINT}:
            return res.SUPPRESSION_REASON_NO_CONTACT_POINT
        return res.SUPPRESSION_REASON_CHANNEL_NOT_ALLOWED
    considered = decision.evaluations or (
        Evaluation(decision.channel, False, decision.reasons, decision.next_allowed_time),
    )
    reasons = [e.reasons for e in considered if not e.allowed]
    if any(r & CONSENT_REASONS for r in reasons):
        return res.SUPPRESSION_REASON_NO_CONSENT
    if reasons and all(pref.DECISION_REASON_NO_CONTACT_POINT in r for r in reasons):
        return res.SUPPRESSION_REASON_NO_CONTACT_POINT
    return res.SUPPRESSION_REASON_CHANNEL_NOT_ALLOWED


def _hold_until(decision: Decision) -> datetime | None:
    """The earliest time a timing-only obstacle (quiet hours, a cap) frees a channel."""
    if decision.next_allowed_time is not None and decision.reasons <= TIMING_REASONS:
        return decision.next_allowed_time
    times = [
        e.next_allowed_time
        for e in decision.evaluations
        if not e.allowed and e.next_allowed_time is not None and e.reasons <= TIMING_REASONS
    ]
    return min(times) if times else None


def plan(
    decision: Decision,
    *,
    requested: int,
    deliverable: Sequence[int],
    now: datetime,
    expire_time: datetime | None,
    limits: Limits,
) -> Plan:
    """The next step for a notification given preferences' decision.

    ``deliverable`` are the channels the template has content for and the service has a
    provider for, in no particular order; the send order is preferences' (chosen channel, then
    its fallbacks).
    """
    if decision.allowed:
        order = [decision.channel] if requested else [decision.channel, *decision.fallback_channels]
        channels = tuple(dict.fromkeys(c for c in order if c in deliverable))
        if channels:
            reserved = decision.channel if decision.reserved else 0
            return Send(channels, decision.language_code, reserved)
        return Suppress(res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
    until = _hold_until(decision)
    if until is not None:
        capped = pref.DECISION_REASON_FREQUENCY_CAP in decision.reasons or any(
            pref.DECISION_REASON_FREQUENCY_CAP in e.reasons for e in decision.evaluations
        )
        too_late = expire_time is not None and until >= expire_time
        if too_late or until > now + limits.max_hold:
            return Suppress(
                res.SUPPRESSION_REASON_FREQUENCY_CAP if capped else res.SUPPRESSION_REASON_EXPIRED
            )
        return Hold(max(until, now), decision.language_code)
    return Suppress(_suppression(decision, requested))
