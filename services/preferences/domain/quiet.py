"""Quiet hours: windows of local wall-clock time, in the customer's IANA time zone.

A window starts on a day (``days``, ISO numbers Monday = 1; none means every day) at ``start``
and ends at ``end``, on the next day when ``end <= start`` (22:00–08:00 spans midnight). Both
ends are wall-clock times, so a 22:00–08:00 window is 10 hours on most nights, 9 on the night
the clocks go forward and 11 on the night they go back. A boundary that falls in the hour
skipped by a spring-forward change moves forward by the gap (03:30 becomes 04:30), as PEP 495
and java.time resolve it; an ambiguous autumn time is its first occurrence.
All comparisons are made in UTC (aware datetimes in one zone compare by wall time in Python).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY = 86_400
WEEK = 7 * DAY


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # seconds after local midnight, 0 ≤ start < 86400
    end: int  # seconds after local midnight, 0 ≤ end ≤ 86400; ≤ start: the next day
    days: frozenset[int] = frozenset()  # ISO weekdays the window starts on; empty: every day
    channels: frozenset[int] = frozenset()  # empty: every channel

    @property
    def spans_midnight(self) -> bool:
        return self.end <= self.start

    def applies_to(self, channel: int) -> bool:
        return not self.channels or channel in self.channels

    def week_intervals(self) -> list[tuple[int, int]]:
        """The window's [start, end) intervals in seconds of a week starting Monday 00:00."""
        length = (self.end - self.start) % DAY or DAY
        out: list[tuple[int, int]] = []
        for day in sorted(self.days or range(1, 8)):
            begin = (day - 1) * DAY + self.start
            finish = begin + length
            if finish <= WEEK:
                out.append((begin, finish))
            else:  # Sunday night into Monday morning
                out.extend([(begin, WEEK), (0, finish - WEEK)])
        return out


def overlapping(windows: Sequence[Window]) -> list[tuple[int, int]]:
    """Index pairs of windows that share a moment of the week on a common channel."""
    pairs: list[tuple[int, int]] = []
    spans = [w.week_intervals() for w in windows]
    for i, a in enumerate(windows):
        for j in range(i + 1, len(windows)):
            b = windows[j]
            if a.channels and b.channels and not a.channels & b.channels:
                continue
            if any(s1 < e2 and s2 < e1 for s1, e1 in spans[i] for s2, e2 in spans[j]):
                pairs.append((i, j))
    return pairs


def _wall(day: date, seconds: int, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the wall clock of ``zone`` shows ``seconds`` after midnight of ``day``."""
    day = day + timedelta(days=seconds // DAY)
    seconds %= DAY
    local = datetime.combine(day, time(seconds // 3600, seconds // 60 % 60, seconds % 60), tzinfo=zone)
    return local.astimezone(UTC)


def window_end(windows: Iterable[Window], channel: int, at: datetime, zone: ZoneInfo) -> datetime | None:
    """The end of the latest-ending window that contains ``at`` (UTC) on ``channel``, or None."""
    today = at.astimezone(zone).date()
    best: datetime | None = None
    for window in windows:
        if not window.applies_to(channel):
            continue
        for day in (today - timedelta(days=1), today):
            if window.days and day.isoweekday() not in window.days:
                continue
            start = _wall(day, window.start, zone)
            end = _wall(day, window.end + (DAY if window.spans_midnight else 0), zone)
            if start <= at < end and (best is None or end > best):
                best = end
    return best


def quiet_until(windows: Sequence[Window], channel: int, at: datetime, zone: ZoneInfo) -> datetime | None:
    """When ``at`` is inside quiet hours: the first moment outside every window (windows of the
    customer and the business may follow each other); None when ``at`` is not quiet."""
    end = window_end(windows, channel, at, zone)
    if end is None:
        return None
    for _ in range(32):  # a week of back-to-back windows at most
        following = window_end(windows, channel, end, zone)
        if following is None:
            return end
        end = following
    return end
