"""Validation of what customers and callers send: topics, language tags, time zones, quiet
hours, frequency caps and preferred channels. Every check adds field violations to a Checker
so one INVALID_ARGUMENT lists every problem."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.type import timeofday_pb2

from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.validation import Checker
from services.preferences.domain import channels
from services.preferences.domain.caps import Cap
from services.preferences.domain.quiet import DAY, Window, overlapping

TOPIC = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
MAX_TOPIC = 64
# BCP-47 (RFC 5646) language tags: language, optional extlang, script, region, variants,
# extensions and private use; plus the private-use form "x-…". The 4–8 letter primary
# subtags the grammar reserves are refused: none is registered, so "english" is a typo.
_ALNUM = "[A-Za-z0-9]"
_LANGTAG = re.compile(
    r"[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    rf"(?:-(?:{_ALNUM}{{5,8}}|[0-9]{_ALNUM}{{3}}))*"
    rf"(?:-[0-9A-WY-Za-wy-z](?:-{_ALNUM}{{2,8}})+)*"
    rf"(?:-x(?:-{_ALNUM}{{1,8}})+)?"
    rf"|x(?:-{_ALNUM}{{1,8}})+"
)
MAX_QUIET_HOURS = 28
MAX_CAPS = 20
MAX_CAP_PERIOD = timedelta(days=366)
MAX_CAP_COUNT = 10_000
ISO_DAYS = range(1, 8)  # google.type.DayOfWeek MONDAY = 1 … SUNDAY = 7


def topic(check: Checker, field: str, value: str, *, wildcard: bool = True) -> None:
    if not check.require(field, value):
        return
    if value == "*" and wildcard:
        return
    if len(value) > MAX_TOPIC or not TOPIC.fullmatch(value):
        allowed = ' or "*"' if wildcard else ""
        check.fail(
            field, f"must be lower_snake_case (at most {MAX_TOPIC} characters){allowed}", "INVALID_TOPIC"
        )


def language(check: Checker, field: str, value: str) -> None:
    if value and (len(value) > 35 or not _LANGTAG.fullmatch(value)):
        check.fail(field, 'must be a BCP-47 language tag such as "ro-RO"', "INVALID_LANGUAGE_CODE")


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when there is no such zone."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def time_zone(check: Checker, field: str, value: str) -> None:
    if value and zone(value) is None:
        check.fail(field, f"unknown IANA time zone {value!r}", "INVALID_TIME_ZONE")


def contact_channel(check: Checker, field: str, value: int, *, required: bool = True) -> None:
    if value == ch.CHANNEL_UNSPECIFIED:
        if required:
            check.fail(field, "is required", "REQUIRED")
        return
    if value not in ch.Channel.values():
        check.fail(field, "is not a known channel", "INVALID_CHANNEL")


def _seconds(check: Checker, field: str, tod: timeofday_pb2.TimeOfDay, *, end: bool) -> int | None:
    hours, minutes, seconds, nanos = int(tod.hours), int(tod.minutes), int(tod.seconds), int(tod.nanos)
    if end and (hours, minutes, seconds, nanos) == (24, 0, 0, 0):
        return DAY
    if not (0 <= hours <= 23 and 0 <= minutes <= 59 and 0 <= seconds <= 59) or nanos:
        check.fail(field, "must be a time of day from 00:00 to 23:59:59 (24:00 as an end)", "INVALID_TIME")
        return None
    return hours * 3600 + minutes * 60 + seconds


def quiet_hours(check: Checker, field: str, values: Iterable[res.QuietHours]) -> list[Window]:
    """The windows of ``values`` (repeated QuietHours); bad, empty and overlapping ones fail."""
    items = list(values)
    if len(items) > MAX_QUIET_HOURS:
        check.fail(field, f"must have at most {MAX_QUIET_HOURS} windows", "TOO_MANY")
        return []
    windows: list[Window] = []
    positions: list[int] = []
    for i, q in enumerate(items):
        here = f"{field}[{i}]"
        start = _seconds(check, f"{here}.start_time", q.start_time, end=False)
        end = _seconds(check, f"{here}.end_time", q.end_time, end=True)
        days = set(q.days)
        if any(d not in ISO_DAYS for d in days):
            check.fail(f"{here}.days", "must be days of the week (MONDAY … SUNDAY)", "INVALID_DAY")
        if len(days) != len(q.days):
            check.fail(f"{here}.days", "must not repeat a day", "DUPLICATE")
        for j, c in enumerate(q.channels):
            contact_channel(check, f"{here}.channels[{j}]", c)
        if start is None or end is None:
            continue
        if start == end:
            check.fail(here, "is empty: start_time equals end_time", "EMPTY_WINDOW")
            continue
        windows.append(Window(start, end, frozenset(days) & frozenset(ISO_DAYS), frozenset(q.channels)))
        positions.append(i)
    for i, j in overlapping(windows):
        first, second = positions[i], positions[j]
        message = f"overlaps {field}[{first}]; join them into one window"
        check.fail(f"{field}[{second}]", message, "OVERLAPPING_WINDOWS")
    return windows


def frequency_caps(check: Checker, field: str, values: Iterable[res.FrequencyCap]) -> list[Cap]:
    items = list(values)
    if len(items) > MAX_CAPS:
        check.fail(field, f"must have at most {MAX_CAPS} caps", "TOO_MANY")
        return []
    caps: list[Cap] = []
    for i, c in enumerate(items):
        here = f"{field}[{i}]"
        contact_channel(check, f"{here}.channel", c.channel, required=False)
        if c.topic:
            topic(check, f"{here}.topic", c.topic, wildcard=False)
        if not 1 <= c.max_count <= MAX_CAP_COUNT:
            check.fail(f"{here}.max_count", f"must be between 1 and {MAX_CAP_COUNT}", "OUT_OF_RANGE")
        period = c.period.ToTimedelta()
        if period <= timedelta(0) or c.period.nanos:
            check.fail(f"{here}.period", "must be a positive whole number of seconds", "OUT_OF_RANGE")
        elif period > MAX_CAP_PERIOD:
            check.fail(f"{here}.period", "must be at most 366 days", "OUT_OF_RANGE")
        else:
            caps.append(Cap(c.max_count, period, c.channel, c.topic))
    return caps


def preferred_channels(check: Checker, field: str, values: Iterable[int]) -> None:
    seen: set[int] = set()
    for i, c in enumerate(values):
        contact_channel(check, f"{field}[{i}]", c)
        if c in seen:
            check.fail(f"{field}[{i}]", "repeats a channel", "DUPLICATE")
        elif c and c in ch.Channel.values() and c not in channels.CONTACTABLE:
            check.fail(f"{field}[{i}]", "cannot carry outbound contacts", "CHANNEL_NOT_CONTACTABLE")
        seen.add(c)


def preferences(
    check: Checker, prefs: res.Preferences, fields: list[str], prefix: str = "preferences"
) -> None:
    """Check the fields of ``prefs`` that an update writes."""
    if "preferred_channels" in fields:
        preferred_channels(check, f"{prefix}.preferred_channels", prefs.preferred_channels)
    if "quiet_hours" in fields:
        quiet_hours(check, f"{prefix}.quiet_hours", prefs.quiet_hours)
    if "time_zone" in fields:
        time_zone(check, f"{prefix}.time_zone", prefs.time_zone)
    if "language_code" in fields:
        language(check, f"{prefix}.language_code", prefs.language_code)
    if "frequency_caps" in fields:
        frequency_caps(check, f"{prefix}.frequency_caps", prefs.frequency_caps)
    if "preferred_store" in fields and prefs.preferred_store:
        check.name(f"{prefix}.preferred_store", prefs.preferred_store, "locations/{location}")
