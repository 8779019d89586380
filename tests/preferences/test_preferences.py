"""GetPreferences/UpdatePreferences and request validation: every bad input is INVALID_ARGUMENT
with a field violation, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import duration_pb2, field_mask_pb2
from google.type import timeofday_pb2

from omni.preferences.v1 import events_pb2 as ev
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.testing.calls import Caller, EventTap, details, rpc_error, violations
from tests.preferences.conftest import new_customer, rid, set_consent

TOD = timeofday_pb2.TimeOfDay


def update(
    customer: str, paths: list[str] | None = None, etag: str = "", **fields: object
) -> svc.UpdatePreferencesRequest:
    return svc.UpdatePreferencesRequest(
        preferences=res.Preferences(name=f"{customer}/preferences", etag=etag, **fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths if paths is not None else list(fields)),
        request_id=rid(),
    )


async def test_defaults_then_updates_with_etags_and_events(
    as_role: Callable[..., Caller], events: EventTap
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    defaults = await me.GetPreferences(svc.GetPreferencesRequest(name=f"{customer}/preferences"))
    assert (
        defaults.etag == 'W/"0"' and not defaults.HasField("update_time") and not defaults.preferred_channels
    )

    written = await me.UpdatePreferences(
        update(
            customer,
            etag=defaults.etag,
            preferred_channels=[ch.CHANNEL_PUSH, ch.CHANNEL_EMAIL],
            quiet_hours=[res.QuietHours(start_time=TOD(hours=22), end_time=TOD(hours=7, minutes=30))],
            time_zone="Europe/Bucharest",
            language_code="ro-RO",
            frequency_caps=[
                res.FrequencyCap(
                    channel=ch.CHANNEL_SMS, max_count=2, period=duration_pb2.Duration(seconds=86400)
                )
            ],
            preferred_store="locations/store-1",
        )
    )
    assert written.etag == 'W/"1"' and written.HasField("update_time")
    assert list(written.preferred_channels) == [ch.CHANNEL_PUSH, ch.CHANNEL_EMAIL]
    assert written.quiet_hours[0].end_time == TOD(hours=7, minutes=30)
    assert written.frequency_caps[0].period.seconds == 86400
    assert await me.GetPreferences(svc.GetPreferencesRequest(name=f"{customer}/preferences")) == written
    published = await events.wait_for(ev.PreferencesUpdatedEvent, lambda m: m.customer == customer)
    assert set(published.changed_fields) == {
        "preferred_channels", "quiet_hours", "time_zone", "language_code", "frequency_caps", "preferred_store"
    }  # fmt: skip
    assert published.changed_by == customer and published.snapshot == written

    # A partial update leaves the rest; a stale etag is ABORTED with the current one.
    lang = await me.UpdatePreferences(
        update(customer, ["language_code"], etag=written.etag, language_code="en-GB")
    )
    assert lang.language_code == "en-GB" and lang.time_zone == "Europe/Bucharest"
    stale = await rpc_error(
        me.UpdatePreferences(update(customer, etag=written.etag, language_code="fr")), grpc.StatusCode.ABORTED
    )
    assert details(stale)["ErrorInfo"].metadata["current_etag"] == lang.etag
    # Without a mask: the fields the request sets. Nothing changed: nothing written.
    same = await me.UpdatePreferences(update(customer, [], language_code="en-GB"))
    assert same.etag == lang.etag


async def test_bad_input_is_refused_field_by_field(as_role: Callable[..., Caller], backend: Caller) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    error = await rpc_error(
        me.UpdatePreferences(
            update(
                customer,
                time_zone="Europe/Atlantis",
                language_code="english",
                preferred_channels=[ch.CHANNEL_SMS, ch.CHANNEL_SMS, ch.CHANNEL_STORE_POS],
                quiet_hours=[
                    res.QuietHours(start_time=TOD(hours=22), end_time=TOD(hours=8)),
                    res.QuietHours(start_time=TOD(hours=6), end_time=TOD(hours=9)),
                    res.QuietHours(start_time=TOD(hours=12), end_time=TOD(hours=12)),
                ],
                frequency_caps=[res.FrequencyCap(max_count=1, period=duration_pb2.Duration())],
                preferred_store="store-1",
            )
        )
    )
    assert violations(error) == {
        "preferences.time_zone",
        "preferences.language_code",
        "preferences.preferred_channels[1]",
        "preferences.preferred_channels[2]",
        "preferences.quiet_hours[1]",
        "preferences.quiet_hours[2]",
        "preferences.frequency_caps[0].period",
        "preferences.preferred_store",
    }
    unchanged = await me.GetPreferences(svc.GetPreferencesRequest(name=f"{customer}/preferences"))
    assert unchanged.etag == 'W/"0"', "a refused update writes nothing"
    error = await rpc_error(me.UpdatePreferences(update(customer, ["etag"], etag="x")))
    assert violations(error) == {"update_mask.paths[0]"}

    error = await rpc_error(
        me.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "Summer Sale", res.CONSENT_STATE_GRANTED))
    )
    assert violations(error) == {"topic"}
    error = await rpc_error(
        me.SetConsent(
            svc.SetConsentRequest(
                parent=customer,
                channel=ch.CHANNEL_KIOSK,
                state=res.CONSENT_STATE_PENDING_CONFIRMATION,
                request_id="nope",
            )
        )
    )
    assert violations(error) == {"channel", "topic", "state", "request_id"}
    error = await rpc_error(
        me.DecideContact(
            svc.DecideContactRequest(name=f"{customer}/preferences", topic="*", purpose=9, channel=99)
        )  # type: ignore[arg-type]
    )
    assert violations(error) == {"topic", "purpose", "channel"}
    error = await rpc_error(
        me.ListConsents(svc.ListConsentsRequest(parent=customer, filter="colour = 1", page_size=-1))
    )
    assert violations(error) == {"filter", "page_size"}
    error = await rpc_error(
        backend.ListConsentEvents(svc.ListConsentEventsRequest(parent="customers/-/consents/-"))
    )
    assert violations(error) == {"parent"}


async def test_a_customer_touches_only_their_own_preferences(
    as_role: Callable[..., Caller], anonymous: Caller
) -> None:
    me, other = new_customer(), new_customer()
    mine = as_role(me, "customer")
    await rpc_error(
        mine.GetPreferences(svc.GetPreferencesRequest(name=f"{other}/preferences")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await rpc_error(
        mine.UpdatePreferences(update(other, language_code="ro")), grpc.StatusCode.PERMISSION_DENIED
    )
    await rpc_error(
        mine.SetConsent(set_consent(other, ch.CHANNEL_EMAIL, "offers", res.CONSENT_STATE_GRANTED)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await rpc_error(
        mine.ListConsentEvents(svc.ListConsentEventsRequest(parent=f"{other}/consents/-")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await rpc_error(
        mine.ListOptedInCustomers(svc.ListOptedInCustomersRequest(topic="offers")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await rpc_error(
        anonymous.GetPreferences(svc.GetPreferencesRequest(name=f"{me}/preferences")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    # Staff as the role table says: agents read and record consents, but change no preferences;
    # a store associate records a consent at the till; a marketer builds audiences only.
    agent = as_role("staffMembers/a1", "agent", channel="call_center")
    await agent.GetPreferences(svc.GetPreferencesRequest(name=f"{other}/preferences"))
    await rpc_error(
        agent.UpdatePreferences(update(other, language_code="ro")), grpc.StatusCode.PERMISSION_DENIED
    )
    associate = as_role("staffMembers/s1", "store_associate", channel="store_pos", store="locations/store-1")
    at_till = await associate.SetConsent(
        set_consent(other, ch.CHANNEL_SMS, "offers", res.CONSENT_STATE_DENIED)
    )
    assert at_till.source.channel.store == "locations/store-1"
    marketer = as_role("staffMembers/m1", "marketer")
    await marketer.ListOptedInCustomers(svc.ListOptedInCustomersRequest(topic="offers", page_size=1))
    await rpc_error(
        marketer.ListConsents(svc.ListConsentsRequest(parent=other)), grpc.StatusCode.PERMISSION_DENIED
    )
