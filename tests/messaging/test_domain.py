"""The messaging rules without I/O: placeholders, rendering, locale fallback, plans, back-off, masks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2 as ch
from services.messaging.domain import contacts, delivery, plans
from services.messaging.domain import templates as t

NOW = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)


def test_placeholders_are_found_and_the_escape_is_literal() -> None:
    assert t.placeholders("Hi {{name}}, order {{order_number}} {{{{not}}") == ["name", "order_number"]
    assert t.fill("{{{{x}} {{a}}", {"a": "1"}) == "{{x}} 1"


@pytest.mark.parametrize("text", ["{{ name }}", "{{name", "{{na-me}}", "{{}}"])
def test_a_malformed_placeholder_is_refused(text: str) -> None:
    with pytest.raises(t.PlaceholderError):
        t.placeholders(text)


def test_html_bodies_escape_values_and_text_bodies_do_not() -> None:
    content = t.Content(ch.CHANNEL_EMAIL, "en", "Hi {{name}}", "Hi {{name}}", "<p>Hi {{name}}</p>")
    out = t.render(content, {"name": '<script>alert("x")</script>'})
    assert out.html_body == "<p>Hi &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</p>"
    assert out.body == 'Hi <script>alert("x")</script>'


def test_locale_falls_back_from_region_to_language_to_default() -> None:
    contents = [
        t.Content(ch.CHANNEL_EMAIL, "en", body="en"),
        t.Content(ch.CHANNEL_EMAIL, "ro", body="ro"),
        t.Content(ch.CHANNEL_SMS, "en", body="sms en"),
    ]
    assert t.locale_chain("ro-RO", "en") == ["ro-ro", "ro", "en"]
    assert t.pick(contents, ch.CHANNEL_EMAIL, "ro-RO", "en").body == "ro"  # type: ignore[union-attr]
    assert t.pick(contents, ch.CHANNEL_EMAIL, "de-DE", "en").body == "en"  # type: ignore[union-attr]
    assert t.pick(contents, ch.CHANNEL_SMS, "ro", "en").body == "sms en"  # type: ignore[union-attr]
    assert t.pick(contents, ch.CHANNEL_PUSH, "en", "en") is None


def test_contents_are_checked_as_a_whole() -> None:
    problems = dict(
        t.check_contents(
            [
                t.Content(ch.CHANNEL_EMAIL, "ro", body="Salut {{name"),
                t.Content(ch.CHANNEL_SMS, "en", body="x" * 1601),
                t.Content(ch.CHANNEL_STORE_POS, "en", body="till"),
                t.Content(ch.CHANNEL_SMS, "en", body="again", html_body="<p>no</p>"),
            ],
            "en",
        )
    )
    assert "template.contents[0].body" in problems  # malformed placeholder
    assert "template.contents[1].body" in problems  # SMS too long
    assert "template.contents[2].channel" in problems  # not an outbound channel
    assert "template.contents[3]" in problems  # repeats (SMS, en)
    assert "template.contents[3].html_body" in problems  # HTML only for e-mail
    assert "CHANNEL_EMAIL has content but none in the default locale" in problems["template.default_locale"]


def _decision(allowed: bool, channel: int, reasons: set[int] = frozenset(), **kw: object) -> plans.Decision:  # type: ignore[assignment]
    return plans.Decision(
        allowed=allowed,
        channel=channel,
        reasons=frozenset(reasons),
        next_allowed_time=kw.get("next_allowed_time"),  # type: ignore[arg-type]
        fallback_channels=tuple(kw.get("fallbacks", ())),  # type: ignore[arg-type]
        evaluations=tuple(kw.get("evaluations", ())),  # type: ignore[arg-type]
        language_code="ro-RO",
        reserved=bool(kw.get("reserved", False)),
    )


LIMITS = plans.Limits()


def test_an_allowed_decision_sends_in_preference_order_on_deliverable_channels() -> None:
    decision = _decision(True, ch.CHANNEL_SMS, fallbacks=(ch.CHANNEL_PUSH, ch.CHANNEL_EMAIL), reserved=True)
    got = plans.plan(
        decision,
        requested=0,
        deliverable=[ch.CHANNEL_EMAIL, ch.CHANNEL_SMS],
        now=NOW,
        expire_time=None,
        limits=LIMITS,
    )
    assert got == plans.Send((ch.CHANNEL_SMS, ch.CHANNEL_EMAIL), "ro-RO", ch.CHANNEL_SMS)


def test_a_requested_channel_has_no_fallback() -> None:
    decision = _decision(True, ch.CHANNEL_SMS, fallbacks=(ch.CHANNEL_EMAIL,))
    got = plans.plan(
        decision,
        requested=ch.CHANNEL_SMS,
        deliverable=[ch.CHANNEL_EMAIL, ch.CHANNEL_SMS],
        now=NOW,
        expire_time=None,
        limits=LIMITS,
    )
    assert got == plans.Send((ch.CHANNEL_SMS,), "ro-RO", 0)


def test_quiet_hours_hold_until_they_end_unless_that_is_past_the_expire_time() -> None:
    morning = NOW + timedelta(hours=10)
    decision = _decision(False, ch.CHANNEL_SMS, {pref.DECISION_REASON_QUIET_HOURS}, next_allowed_time=morning)
    held = plans.plan(
        decision, requested=0, deliverable=[ch.CHANNEL_SMS], now=NOW, expire_time=None, limits=LIMITS
    )
    assert held == plans.Hold(morning, "ro-RO")
    late = plans.plan(
        decision,
        requested=0,
        deliverable=[ch.CHANNEL_SMS],
        now=NOW,
        expire_time=NOW + timedelta(hours=2),
        limits=LIMITS,
    )
    assert late == plans.Suppress(res.SUPPRESSION_REASON_EXPIRED)


def test_a_cap_beyond_the_longest_hold_is_a_frequency_cap_suppression() -> None:
    decision = _decision(
        False,
        ch.CHANNEL_EMAIL,
        {pref.DECISION_REASON_FREQUENCY_CAP},
        next_allowed_time=NOW + timedelta(days=30),
    )
    got = plans.plan(
        decision, requested=0, deliverable=[ch.CHANNEL_EMAIL], now=NOW, expire_time=None, limits=LIMITS
    )
    assert got == plans.Suppress(res.SUPPRESSION_REASON_FREQUENCY_CAP)


@pytest.mark.parametrize(
    ("requested", "reasons", "expected"),
    [
        (0, {pref.DECISION_REASON_NO_CONSENT}, res.SUPPRESSION_REASON_NO_CONSENT),
        (0, {pref.DECISION_REASON_NO_CONTACT_POINT}, res.SUPPRESSION_REASON_NO_CONTACT_POINT),
        (
            ch.CHANNEL_SMS,
            {pref.DECISION_REASON_CONSENT_WITHDRAWN},
            res.SUPPRESSION_REASON_CHANNEL_NOT_ALLOWED,
        ),
        (ch.CHANNEL_SMS, {pref.DECISION_REASON_NO_CONTACT_POINT}, res.SUPPRESSION_REASON_NO_CONTACT_POINT),
        (0, {pref.DECISION_REASON_CUSTOMER_NOT_CONTACTABLE}, res.SUPPRESSION_REASON_CUSTOMER_NOT_CONTACTABLE),
    ],
)
def test_refusals_map_to_the_contract_reasons(requested: int, reasons: set[int], expected: int) -> None:
    decision = _decision(False, ch.CHANNEL_SMS, reasons)
    got = plans.plan(
        decision, requested=requested, deliverable=[ch.CHANNEL_SMS], now=NOW, expire_time=None, limits=LIMITS
    )
    assert got == plans.Suppress(expected)


def test_back_off_grows_is_capped_jittered_and_honours_retry_after() -> None:
    policy = delivery.RetryPolicy(
        attempts_per_channel=5, base_delay=timedelta(seconds=2), max_delay=timedelta(seconds=10)
    )
    rng = random.Random(1)
    waits = [policy.delay(n, rng) for n in range(1, 6)]
    assert timedelta(seconds=1) <= waits[0] <= timedelta(seconds=2)
    assert timedelta(seconds=4) <= waits[2] <= timedelta(seconds=8)
    assert all(w <= timedelta(seconds=10) for w in waits)
    assert len({w for w in waits}) == len(waits)  # jittered
    assert policy.delay(1, rng, timedelta(seconds=30)) == timedelta(seconds=30)


def test_after_failure_retries_transient_then_falls_back_then_gives_up() -> None:
    policy = delivery.RetryPolicy(attempts_per_channel=2)
    rng = random.Random(2)
    retry = delivery.after_failure(
        transient=True,
        tries_on_channel=1,
        remaining_channels=(ch.CHANNEL_EMAIL,),
        policy=policy,
        now=NOW,
        rng=rng,
    )
    assert isinstance(retry, delivery.Retry) and retry.at > NOW
    budget = delivery.after_failure(
        transient=True,
        tries_on_channel=2,
        remaining_channels=(ch.CHANNEL_EMAIL,),
        policy=policy,
        now=NOW,
        rng=rng,
    )
    assert budget == delivery.NextChannel(ch.CHANNEL_EMAIL)
    permanent = delivery.after_failure(
        transient=False, tries_on_channel=1, remaining_channels=(), policy=policy, now=NOW, rng=rng
    )
    assert permanent == delivery.GiveUp()


def test_masks_hide_the_address_but_stay_recognisable() -> None:
    assert contacts.mask(contacts.EMAIL, "jane.doe@example.com") == "j***@example.com"
    assert contacts.mask(contacts.PHONE, "+40712345123") == "+40 7** *** 123"
    assert contacts.mask(contacts.PUSH_TOKEN, "abcdef123456") == "…3456"


def test_the_best_contact_point_is_primary_then_verified_then_newest() -> None:
    old, new = NOW - timedelta(days=1), NOW
    points = [
        contacts.ContactPoint(contacts.EMAIL, "a@x.com", primary=False, verified=True, update_time=new),
        contacts.ContactPoint(contacts.EMAIL, "b@x.com", primary=True, verified=False, update_time=old),
        contacts.ContactPoint(contacts.PHONE, "+40700000000"),
    ]
    assert contacts.choose(points, ch.CHANNEL_EMAIL).value == "b@x.com"  # type: ignore[union-attr]
    assert contacts.choose(points, ch.CHANNEL_PUSH) is None
