"""Rules of a profile, without I/O: contact points, traits, merging two profiles and undoing it.

Profiles travel as their protobuf messages (``omni.profile.v1.Profile``); these functions take
and return plain values so they can be tested without a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omni.profile.v1 import resources_pb2 as r
from omni_runtime.validation import Checker

Kind = r.ContactPoint.Kind
MAX_TRAITS = 100
MAX_CONTACT_POINTS = 50
MAX_NAME = 200
TRAIT_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
# Kinds whose verified value identifies a person: two profiles holding different verified
# values of one of these are never merged automatically.
IDENTIFYING = (r.ContactPoint.KIND_EMAIL, r.ContactPoint.KIND_PHONE)
# The profile fields a merge fills on the target when the target's is empty.
SCALAR_FIELDS = ("given_name", "family_name", "display_name", "language_code")


def normalize(kind: int, value: str) -> str:
    value = value.strip()
    return value.lower() if kind == r.ContactPoint.KIND_EMAIL else value


def key(point: r.ContactPoint) -> tuple[int, str]:
    return point.kind, normalize(point.kind, point.value)


def check_contact_points(check: Checker, path: str, points: Iterable[r.ContactPoint]) -> None:
    seen: set[tuple[int, str]] = set()
    primaries: set[int] = set()
    points = list(points)
    if len(points) > MAX_CONTACT_POINTS:
        check.fail(path, f"at most {MAX_CONTACT_POINTS} contact points", "TOO_MANY")
    for i, point in enumerate(points):
        where = f"{path}[{i}]"
        if point.kind not in Kind.values() or point.kind == r.ContactPoint.KIND_UNSPECIFIED:
            check.fail(f"{where}.kind", "must be a contact point kind", "INVALID_ENUM")
            continue
        value = point.value.strip()
        if not value:
            check.fail(f"{where}.value", "is required", "REQUIRED")
            continue
        if len(value) > 320:
            check.fail(f"{where}.value", "must be at most 320 characters", "INVALID_LENGTH")
        if point.kind == r.ContactPoint.KIND_EMAIL and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            check.fail(f"{where}.value", "must be an e-mail address", "INVALID_EMAIL")
        if point.kind == r.ContactPoint.KIND_PHONE and not E164.fullmatch(value):
            check.fail(
                f"{where}.value", "must be an E.164 phone number such as +40712345678", "INVALID_PHONE"
            )
        if key(point) in seen:
            check.fail(f"{where}.value", "is listed twice", "DUPLICATE")
        seen.add(key(point))
        if point.primary:
            if point.kind in primaries:
                check.fail(
                    f"{where}.primary", "only one contact point of a kind may be primary", "TWO_PRIMARIES"
                )
            primaries.add(point.kind)
        check.length(f"{where}.label", point.label, max_len=64)


def check_traits(check: Checker, path: str, traits: Mapping[str, str]) -> None:
    if len(traits) > MAX_TRAITS:
        check.fail(path, f"at most {MAX_TRAITS} traits", "TOO_MANY")
    for name, value in traits.items():
        if not TRAIT_KEY.fullmatch(name):
            check.fail(f"{path}.{name}", "keys are lower_snake_case, at most 64 characters", "INVALID_KEY")
        elif len(value) > 1024:
            check.fail(f"{path}.{name}", "values are at most 1024 characters", "INVALID_LENGTH")


def with_verified(points: Iterable[r.ContactPoint], verified: set[tuple[int, str]]) -> list[r.ContactPoint]:
    """The points with ``verified`` set exactly on those identity verified (callers cannot set it)."""
    out = []
    for point in points:
        copy = r.ContactPoint()
        copy.CopyFrom(point)
        copy.value = point.value.strip()
        copy.verified = key(point) in verified
        out.append(copy)
    return ensure_primaries(out)


def ensure_primaries(points: list[r.ContactPoint]) -> list[r.ContactPoint]:
    """At most one primary per kind; a kind without one gets its first (verified first) point."""
    by_kind: dict[int, list[r.ContactPoint]] = {}
    for point in points:
        by_kind.setdefault(point.kind, []).append(point)
    for group in by_kind.values():
        primaries = [p for p in group if p.primary]
        for extra in primaries[1:]:
            extra.primary = False
        if not primaries:
            chosen = next((p for p in group if p.verified), group[0])
            chosen.primary = True
    return points


def primary_value(points: Iterable[r.ContactPoint], kind: int) -> str:
    return next((p.value for p in points if p.kind == kind and p.primary), "")


def conflicting_identifiers(target: Iterable[r.ContactPoint], source: Iterable[r.ContactPoint]) -> list[str]:
    """Kinds on which both profiles hold verified values and none is shared (merge protection)."""
    out = []
    for kind in IDENTIFYING:
        mine = {key(p) for p in target if p.kind == kind and p.verified}
        theirs = {key(p) for p in source if p.kind == kind and p.verified}
        if mine and theirs and not mine & theirs:
            out.append(Kind.Name(kind))
    return out


# --- merging and undoing it ---------------------------------------------------------------


@dataclass
class MergePlan:
    """What a merge changes on the target, and what it must remember to undo it."""

    filled: dict[str, Any] = field(default_factory=dict)  # field -> value taken from the source
    birthday: tuple[int, int, int] | None = None
    added_traits: dict[str, str] = field(default_factory=dict)
    added_points: list[r.ContactPoint] = field(default_factory=list)


def plan_merge(target: r.Profile, source: r.Profile) -> MergePlan:
    """Target values win; the source fills empty fields; traits and contact points are united
    (target wins on key conflicts)."""
    plan = MergePlan()
    for name in SCALAR_FIELDS:
        if not getattr(target, name) and getattr(source, name):
            plan.filled[name] = getattr(source, name)
    if not target.birthday.month and source.birthday.month:
        plan.birthday = (source.birthday.year, source.birthday.month, source.birthday.day)
    for name, value in source.traits.items():
        if name not in target.traits:
            plan.added_traits[name] = value
    have = {key(p) for p in target.contact_points}
    kinds_with_primary = {p.kind for p in target.contact_points if p.primary}
    for point in source.contact_points:
        if key(point) not in have:
            copy = r.ContactPoint()
            copy.CopyFrom(point)
            copy.primary = point.primary and point.kind not in kinds_with_primary
            plan.added_points.append(copy)
    return plan


def undo_fields(current: r.Profile, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Values to put back on the target at an unmerge: only what still is as the merge left it
    (a field the target's owner changed since is theirs now)."""
    out: dict[str, Any] = {}
    for name, value in plan.get("filled", {}).items():
        if getattr(current, name) == value:
            out[name] = ""
    return out
