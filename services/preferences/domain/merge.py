"""The consent-safe merge: when two customers turn out to be one person, what may the survivor
be contacted about?

Rule (Omni's; no standard defines it): per channel and topic, the survivor ends with the most
restrictive *decision* of the two people's records, where each side's decision for a topic is
its exact consent for the topic, else its "*" consent for the channel:

    WITHDRAWN  >  DENIED  >  GRANTED  >  (no decision)

so a withdrawal or refusal on either side is never overwritten by a grant, whatever their ages,
and a grant given on one side is kept when the other side never decided. A consent waiting for
double opt-in is a request, not a decision: it is not carried over and it does not override a
grant. The topics compared are every topic either side has on the channel, plus "*"; the result
is the same whichever customer survives. Only the survivor's records change, each change with
its own ledger entry; the absorbed customer's records stay as they were (it can no longer be
contacted), so an unmerge can give them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from omni.preferences.v1 import resources_pb2 as res

RANK: dict[int, int] = {
    res.CONSENT_STATE_GRANTED: 1,
    res.CONSENT_STATE_DENIED: 2,
    res.CONSENT_STATE_WITHDRAWN: 3,
}


@dataclass(frozen=True, slots=True)
class Record:
    channel: int
    topic: str
    state: int
    legal_basis: int
    consent_id: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """Set the survivor's consent for (channel, topic) to what ``winner`` (the other side's record) says."""

    channel: int
    topic: str
    winner: Record
    current: Record | None  # the survivor's own record for exactly this channel and topic


def _decision(records: dict[tuple[int, str], Record], channel: int, topic: str) -> Record | None:
    for key in ((channel, topic), (channel, "*")):
        found = records.get(key)
        if found is not None and found.state in RANK:
            return found
    return None


def merge(survivor: Iterable[Record], absorbed: Iterable[Record]) -> list[Change]:
    """The changes to make to the survivor's consents."""
    mine = {(r.channel, r.topic): r for r in survivor}
    theirs = {(r.channel, r.topic): r for r in absorbed}
    keys = sorted({*mine, *theirs} | {(c, "*") for c, _ in (*mine, *theirs)})
    changes: list[Change] = []
    for channel, topic in keys:
        own = _decision(mine, channel, topic)
        other = _decision(theirs, channel, topic)
        if other is None:
            continue
        if own is not None and RANK[own.state] >= RANK[other.state]:
            continue
        changes.append(Change(channel, topic, other, mine.get((channel, topic))))
    return changes
