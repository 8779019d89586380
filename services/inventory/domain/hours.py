"""Weekly opening hours: validation and "is this store open now".

Periods are turned into minute intervals of a week (Monday 00:00 = 0) in the store's own time
zone, so overnight periods (20:00–02:00) and the Sunday→Monday wrap are ordinary intervals.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.type import dayofweek_pb2

from omni.inventory.v1 import resources_pb2 as res

WEEK_MINUTES = 7 * 24 * 60
DAY_MINUTES = 24 * 60


def time_zone(name: str) -> ZoneInfo | None:
    """The IANA zone, or None when the name is unknown."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _minutes(hours: int, minutes: int) -> int:
    return hours * 60 + minutes


def intervals(hours: res.OpeningHours) -> list[tuple[int, int]]:
    """Week-minute intervals ``[start, end)`` of valid periods; ``end`` may exceed a week (wrap)."""
    out: list[tuple[int, int]] = []
    for period in hours.periods:
        day = period.day - dayofweek_pb2.MONDAY
        start = day * DAY_MINUTES + _minutes(period.open_time.hours, period.open_time.minutes)
        close = _minutes(period.close_time.hours, period.close_time.minutes)
        open_ = _minutes(period.open_time.hours, period.open_time.minutes)
        length = close - open_ if close > open_ else close + DAY_MINUTES - open_
        out.append((start, start + length))
    return out


def validate(hours: res.OpeningHours, field: str) -> list[tuple[str, str]]:
    """Violations ``(field path, description)`` of opening hours; empty when valid."""
    problems: list[tuple[str, str]] = []
    if not hours.periods:
        if hours.time_zone and time_zone(hours.time_zone) is None:
            problems.append((f"{field}.time_zone", "must be an IANA time zone such as Europe/Bucharest"))
        return problems
    if not hours.time_zone:
        problems.append((f"{field}.time_zone", "is required when periods are given"))
    elif time_zone(hours.time_zone) is None:
        problems.append((f"{field}.time_zone", "must be an IANA time zone such as Europe/Bucharest"))
    for i, period in enumerate(hours.periods):
        path = f"{field}.periods[{i}]"
        if not dayofweek_pb2.MONDAY <= period.day <= dayofweek_pb2.SUNDAY:
            problems.append((f"{path}.day", "must be a day of the week"))
        o, c = period.open_time, period.close_time
        if not (0 <= o.hours <= 23 and 0 <= o.minutes <= 59):
            problems.append((f"{path}.open_time", "must be a time of day between 00:00 and 23:59"))
        if not ((0 <= c.hours <= 23 and 0 <= c.minutes <= 59) or (c.hours == 24 and c.minutes == 0)):
            problems.append((f"{path}.close_time", "must be a time of day between 00:00 and 24:00"))
        if (o.hours, o.minutes) == (c.hours, c.minutes):
            problems.append((f"{path}.close_time", "must differ from open_time"))
    if problems:
        return problems
    spans = sorted(intervals(hours))
    overlapping = any(nxt[0] < cur[1] for cur, nxt in itertools.pairwise(spans))
    # The last period may run past Sunday midnight into the first one of the week.
    overlapping = overlapping or spans[-1][1] > spans[0][0] + WEEK_MINUTES
    if overlapping:
        problems.append((f"{field}.periods", "periods must not overlap"))
    return problems


def is_open(hours: res.OpeningHours, at: datetime) -> bool:
    """Whether the location is open at ``at`` (an aware datetime); False when hours are unknown."""
    if not hours.periods:
        return False
    zone = time_zone(hours.time_zone)
    if zone is None:
        return False
    local = at.astimezone(zone)
    minute = local.weekday() * DAY_MINUTES + local.hour * 60 + local.minute
    return any(start <= m < end for start, end in intervals(hours) for m in (minute, minute + WEEK_MINUTES))
