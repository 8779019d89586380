"""DecideContact's rules: the verdict for one channel, and the choice of a channel.

Per purpose (ContactPurpose):
- MARKETING needs a GRANTED consent for the channel and topic (an exact topic wins over "*");
  a PENDING_CONFIRMATION consent does not count. Quiet hours and frequency caps apply, and a
  channel outside the customer's preferred channels (when they named any) is refused.
- TRANSACTIONAL needs no consent (its basis is the contract the contact is about), but a DENIED
  or WITHDRAWN consent for the channel and topic is honoured; quiet hours apply, caps do not; a
  channel outside the preferred ones is only a note.
- URGENT follows the transactional rules without quiet hours.
Every obstacle is reported, not only the first, so a caller sees all that stands in the way;
when the only obstacles are timing (quiet hours, caps) the verdict says when they end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from omni.preferences.v1 import resources_pb2 as res
from services.preferences.domain import channels
from services.preferences.domain.caps import Cap, Contact, blocked_until
from services.preferences.domain.quiet import Window, quiet_until

MARKETING = res.CONTACT_PURPOSE_MARKETING
TRANSACTIONAL = res.CONTACT_PURPOSE_TRANSACTIONAL
URGENT = res.CONTACT_PURPOSE_URGENT

GRANTED = res.CONSENT_STATE_GRANTED
DENIED = res.CONSENT_STATE_DENIED
WITHDRAWN = res.CONSENT_STATE_WITHDRAWN
PENDING = res.CONSENT_STATE_PENDING_CONFIRMATION

R = res.DecisionReason
TIMING = frozenset({res.DECISION_REASON_QUIET_HOURS, res.DECISION_REASON_FREQUENCY_CAP})
NOTES = frozenset({res.DECISION_REASON_CHANNEL_NOT_PREFERRED})


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent as the decision sees it."""

    name: str
    channel: int
    topic: str
    state: int
    legal_basis: int = res.LEGAL_BASIS_CONSENT


def effective(consents: Iterable[ConsentView], topic: str) -> dict[int, ConsentView]:
    """Per channel, the consent that governs ``topic``: the exact topic, else the channel's "*"."""
    out: dict[int, ConsentView] = {}
    for consent in consents:
        if consent.topic == topic or (consent.topic == "*" and consent.channel not in out):
            out[consent.channel] = consent
    return out


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything known about one customer that a decision depends on."""

    preferred: tuple[int, ...] = ()
    consents: Mapping[int, ConsentView] = field(default_factory=dict)  # effective, per channel
    contact_points: frozenset[int] = frozenset()
    windows: tuple[Window, ...] = ()  # the customer's and the business's together
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    caps: tuple[Cap, ...] = ()  # the customer's and the business's together
    contacts: tuple[Contact, ...] = ()
    contactable: bool = True  # False once the customer is erased or merged away


@dataclass(slots=True)
class Verdict:
    channel: int
    allowed: bool
    reasons: list[int]
    next_allowed_time: datetime | None = None
    consent: str = ""


def _consent_reasons(consent: ConsentView | None, purpose: int) -> list[int]:
    state = consent.state if consent is not None else 0
    if state == WITHDRAWN:
        return [res.DECISION_REASON_CONSENT_WITHDRAWN]
    if state == DENIED:
        return [res.DECISION_REASON_CONSENT_DENIED]
    if purpose != MARKETING or state == GRANTED:
        return []
    if state == PENDING:
        return [res.DECISION_REASON_PENDING_CONFIRMATION]
    return [res.DECISION_REASON_NO_CONSENT]


def _obstacles_at(s: Situation, channel: int, topic: str, purpose: int, at: datetime) -> list[datetime]:
    """The ends of the timing obstacles at ``at`` (quiet hours, caps); empty when there are none."""
    ends: list[datetime] = []
    if purpose != URGENT:
        quiet = quiet_until(s.windows, channel, at, s.zone)
        if quiet is not None:
            ends.append(quiet)
    if purpose == MARKETING:
        capped = blocked_until(s.caps, s.contacts, channel, topic, at)
        if capped is not None:
            ends.append(capped)
    return ends


def next_free(s: Situation, channel: int, topic: str, purpose: int, at: datetime) -> datetime:
    """The first moment from ``at`` at which no timing obstacle stands (quiet hours can end
    inside a capped period and the other way round, so both are re-checked at each step)."""
    moment = at
    for _ in range(64):
        ends = _obstacles_at(s, channel, topic, purpose, moment)
        if not ends:
            return moment
        moment = max(ends)
    return moment


def evaluate(s: Situation, channel: int, topic: str, purpose: int, at: datetime) -> Verdict:
    consent = s.consents.get(channel)
    verdict = Verdict(channel, False, [], consent=consent.name if consent is not None else "")
    if not s.contactable:
        verdict.reasons = [res.DECISION_REASON_CUSTOMER_NOT_CONTACTABLE]
        return verdict
    if channel not in channels.CONTACTABLE:
        verdict.reasons = [res.DECISION_REASON_CHANNEL_NOT_CONTACTABLE]
        return verdict
    reasons = _consent_reasons(consent, purpose)
    if s.preferred and channel not in s.preferred:
        reasons.append(res.DECISION_REASON_CHANNEL_NOT_PREFERRED)
    if channel in channels.NEEDS_CONTACT_POINT and channel not in s.contact_points:
        reasons.append(res.DECISION_REASON_NO_CONTACT_POINT)
    quiet = purpose != URGENT and quiet_until(s.windows, channel, at, s.zone) is not None
    if quiet:
        reasons.append(res.DECISION_REASON_QUIET_HOURS)
    capped = purpose == MARKETING and blocked_until(s.caps, s.contacts, channel, topic, at) is not None
    if capped:
        reasons.append(res.DECISION_REASON_FREQUENCY_CAP)
    blocking = [r for r in reasons if purpose == MARKETING or r not in NOTES]
    verdict.reasons = reasons
    verdict.allowed = not blocking
    if (quiet or capped) and all(r in TIMING for r in blocking):
        verdict.next_allowed_time = next_free(s, channel, topic, purpose, at)
    return verdict


def candidates(
    s: Situation, requested: int, eligible: Sequence[int], default_order: Sequence[int]
) -> list[int]:
    """The channels a decision considers, in order: the requested one first (if any), then the
    customer's preferred channels, then the business's default order; only eligible ones (empty:
    any), each once."""
    allowed = set(eligible)
    order: list[int] = []
    for c in (requested, *s.preferred, *default_order):
        if c and c not in order and (not allowed or c in allowed or c == requested):
            order.append(c)
    return order


@dataclass(slots=True)
class Decision:
    verdict: Verdict
    fallbacks: list[int]
    evaluations: list[Verdict]


def decide(
    s: Situation,
    topic: str,
    purpose: int,
    at: datetime,
    *,
    requested: int = 0,
    eligible: Sequence[int] = (),
    default_order: Sequence[int] = (),
) -> Decision:
    order = candidates(s, requested, eligible, default_order) or list(dict.fromkeys(eligible))
    verdicts = [evaluate(s, c, topic, purpose, at) for c in order]
    chosen = verdicts[0] if requested else next((v for v in verdicts if v.allowed), verdicts[0])
    fallbacks = [v.channel for v in verdicts if v.allowed and v is not chosen]
    return Decision(chosen, fallbacks, verdicts)
