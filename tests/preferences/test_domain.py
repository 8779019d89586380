"""The pure rules: quiet hours across midnight and DST, caps, the merge rule, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.protobuf import duration_pb2
from google.type import dayofweek_pb2, timeofday_pb2

from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.validation import Checker
from services.preferences.domain import checks, decision, merge
from services.preferences.domain.caps import Cap, Contact, blocked_until
from services.preferences.domain.quiet import Window, overlapping, quiet_until

BUCHAREST = ZoneInfo("Europe/Bucharest")
H = 3600
NIGHT = Window(22 * H, 8 * H)  # 22:00–08:00, every day, every channel


def local(*args: int, zone: ZoneInfo = BUCHAREST) -> datetime:
    return datetime(*args, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


def test_a_window_across_midnight_covers_both_evenings_and_mornings() -> None:
    assert quiet_until([NIGHT], ch.CHANNEL_SMS, local(2026, 6, 10, 21, 59), BUCHAREST) is None
    assert quiet_until([NIGHT], ch.CHANNEL_SMS, local(2026, 6, 10, 22, 0), BUCHAREST) == local(
        2026, 6, 11, 8, 0
    )
    assert quiet_until([NIGHT], ch.CHANNEL_SMS, local(2026, 6, 11, 3, 0), BUCHAREST) == local(
        2026, 6, 11, 8, 0
    )
    assert quiet_until([NIGHT], ch.CHANNEL_SMS, local(2026, 6, 11, 8, 0), BUCHAREST) is None


def test_day_and_channel_restrictions() -> None:
    friday_night = Window(23 * H, 10 * H, days=frozenset({5}), channels=frozenset({ch.CHANNEL_PUSH}))
    saturday_2am = local(2026, 6, 13, 2, 0)  # 2026-06-12 is a Friday
    assert quiet_until([friday_night], ch.CHANNEL_PUSH, saturday_2am, BUCHAREST) == local(2026, 6, 13, 10, 0)
    assert quiet_until([friday_night], ch.CHANNEL_EMAIL, saturday_2am, BUCHAREST) is None
    assert quiet_until([friday_night], ch.CHANNEL_PUSH, local(2026, 6, 14, 2, 0), BUCHAREST) is None


def test_dst_nights_keep_wall_clock_ends() -> None:
    # Europe/Bucharest goes from +02:00 to +03:00 at 03:00 on 2026-03-29 and back on 2026-10-25.
    spring = quiet_until([NIGHT], ch.CHANNEL_SMS, local(2026, 3, 28, 23, 0), BUCHAREST)
    assert spring == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 08:00 at +03:00
    assert spring - local(2026, 3, 28, 22, 0) == timedelta(hours=9)
    autumn = quiet_until([NIGHT], ch.CHANNEL_SMS, local(2026, 10, 24, 23, 0), BUCHAREST)
    assert autumn == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 08:00 at +02:00
    assert autumn - local(2026, 10, 24, 22, 0) == timedelta(hours=11)
    # In the repeated hour (03:30 happens twice) both occurrences are quiet.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert quiet_until([NIGHT], ch.CHANNEL_SMS, first, BUCHAREST) == autumn
    assert quiet_until([NIGHT], ch.CHANNEL_SMS, second, BUCHAREST) == autumn
    # A boundary in the skipped hour moves forward by the gap, as java.time and PEP 495 do:
    # 03:30 that night is 04:30 local (01:30 UTC).
    skipped = Window(3 * H + 30 * 60, 6 * H)
    at = lambda h, m: datetime(2026, 3, 29, h, m, tzinfo=UTC)  # noqa: E731
    assert quiet_until([skipped], ch.CHANNEL_SMS, at(1, 29), BUCHAREST) is None
    assert quiet_until([skipped], ch.CHANNEL_SMS, at(1, 30), BUCHAREST) == at(3, 0)


def test_back_to_back_windows_chain() -> None:
    evening, night = Window(20 * H, 22 * H), Window(22 * H, 7 * H)
    assert quiet_until([evening, night], ch.CHANNEL_SMS, local(2026, 6, 10, 21, 0), BUCHAREST) == local(
        2026, 6, 11, 7, 0
    )


def test_overlap_detection_respects_days_and_channels() -> None:
    assert overlapping([NIGHT, Window(6 * H, 9 * H)]) == [(0, 1)]
    assert overlapping([NIGHT, Window(8 * H, 9 * H)]) == []
    sms, email = frozenset({ch.CHANNEL_SMS}), frozenset({ch.CHANNEL_EMAIL})
    assert overlapping([Window(22 * H, 8 * H, channels=sms), Window(23 * H, 7 * H, channels=email)]) == []
    sunday_night = Window(22 * H, 8 * H, days=frozenset({7}))
    monday_morning = Window(6 * H, 9 * H, days=frozenset({1}))
    assert overlapping([sunday_night, monday_morning]) == [(0, 1)]


def test_caps_slide_and_say_when_they_free_up() -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    cap = Cap(2, timedelta(days=7), ch.CHANNEL_EMAIL)
    sent = [Contact(ch.CHANNEL_EMAIL, "offers", now - timedelta(days=d)) for d in (6, 1)]
    assert blocked_until([cap], sent, ch.CHANNEL_EMAIL, "offers", now) == now + timedelta(days=1)
    assert blocked_until([cap], sent, ch.CHANNEL_SMS, "offers", now) is None
    assert blocked_until([cap], sent[1:], ch.CHANNEL_EMAIL, "offers", now) is None
    topic_cap = Cap(1, timedelta(days=1), topic="news")
    assert blocked_until([topic_cap], sent, ch.CHANNEL_EMAIL, "offers", now) is None


def test_next_allowed_time_waits_for_quiet_hours_and_caps_together() -> None:
    now = local(2026, 6, 10, 21, 0)
    s = decision.Situation(
        consents={ch.CHANNEL_PUSH: decision.ConsentView("c", ch.CHANNEL_PUSH, "offers", decision.GRANTED)},
        contact_points=frozenset({ch.CHANNEL_PUSH}),
        windows=(NIGHT,),
        zone=BUCHAREST,
        caps=(Cap(1, timedelta(hours=12)),),
        contacts=(Contact(ch.CHANNEL_PUSH, "offers", now - timedelta(hours=1)),),
    )
    verdict = decision.evaluate(s, ch.CHANNEL_PUSH, "offers", decision.MARKETING, now)
    assert not verdict.allowed and verdict.reasons == [res.DECISION_REASON_FREQUENCY_CAP]
    # The cap frees at 08:00 local, when quiet hours also end.
    assert verdict.next_allowed_time == local(2026, 6, 11, 8, 0)
    urgent = decision.evaluate(s, ch.CHANNEL_PUSH, "offers", decision.URGENT, local(2026, 6, 10, 23, 0))
    assert urgent.allowed and urgent.next_allowed_time is None


R = res.CONSENT_STATE_GRANTED, res.CONSENT_STATE_DENIED, res.CONSENT_STATE_WITHDRAWN
GRANTED, DENIED, WITHDRAWN = R
EMAIL = ch.CHANNEL_EMAIL


def effective(records: list[merge.Record], changes: list[merge.Change], topic: str) -> int | None:
    final = {(r.channel, r.topic): r.state for r in records}
    final.update({(c.channel, c.topic): c.winner.state for c in changes})
    return final.get((EMAIL, topic), final.get((EMAIL, "*")))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([("*", WITHDRAWN)], [("offers", GRANTED)]),
        ([("offers", GRANTED), ("news", DENIED)], [("*", GRANTED), ("offers", WITHDRAWN)]),
        ([("offers", DENIED)], [("offers", res.CONSENT_STATE_PENDING_CONFIRMATION)]),
        ([], [("offers", GRANTED), ("*", DENIED)]),
    ],
)
def test_the_merge_is_the_most_restrictive_in_both_orders(
    a: list[tuple[str, int]], b: list[tuple[str, int]]
) -> None:
    left = [merge.Record(EMAIL, t, s, res.LEGAL_BASIS_CONSENT) for t, s in a]
    right = [merge.Record(EMAIL, t, s, res.LEGAL_BASIS_CONSENT) for t, s in b]
    rank = {None: 0, res.CONSENT_STATE_PENDING_CONFIRMATION: 0, **merge.RANK}
    for topic in ("offers", "news", "tips"):
        into_left = effective(left, merge.merge(left, right), topic)
        into_right = effective(right, merge.merge(right, left), topic)
        assert into_left == into_right or {into_left, into_right} <= {
            None,
            res.CONSENT_STATE_PENDING_CONFIRMATION,
        }
        assert rank[into_left] >= max(rank[effective(left, [], topic)], rank[effective(right, [], topic)])


def test_validation_messages() -> None:
    check = Checker()
    checks.topic(check, "t1", "Offers")
    checks.topic(check, "t2", "new-offers")
    checks.topic(check, "t3", "spring_sale_2026")
    checks.language(check, "l1", "ro-RO")
    checks.language(check, "l2", "zh-Hant-TW")
    checks.language(check, "l3", "english")
    checks.language(check, "l4", "ro_RO")
    checks.time_zone(check, "z1", "Europe/Bucharest")
    checks.time_zone(check, "z2", "Mars/Olympus")
    checks.time_zone(check, "z3", "../../etc/passwd")
    tod = timeofday_pb2.TimeOfDay
    checks.quiet_hours(
        check,
        "q",
        [
            res.QuietHours(start_time=tod(hours=22), end_time=tod(hours=22)),
            res.QuietHours(start_time=tod(hours=25), end_time=tod(hours=1)),
            res.QuietHours(start_time=tod(hours=1), end_time=tod(hours=2), days=[dayofweek_pb2.MONDAY] * 2),
        ],
    )
    checks.frequency_caps(
        check,
        "f",
        [
            res.FrequencyCap(max_count=3, period=duration_pb2.Duration()),
            res.FrequencyCap(max_count=0, period=duration_pb2.Duration(seconds=60)),
            res.FrequencyCap(max_count=3, topic="Bad Topic", period=duration_pb2.Duration(seconds=60)),
        ],
    )
    failed = {v.field for v in check.violations}
    assert failed == {
        "t1", "t2", "l3", "l4", "z2", "z3", "q[0]", "q[1].start_time", "q[2].days",
        "f[0].period", "f[1].max_count", "f[2].topic",
    }  # fmt: skip
