"""Notifications end to end against the real preferences service, PostgreSQL, NATS and the local
providers: the preferred channel, quiet hours held until they end (the clock is moved, not slept),
urgent messages through them, fallback on an invalid number, every channel failing, idempotent
sends, receipts, erasure, the platform's own event-driven notifications, and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import text

from omni.cart.v1 import events_pb2 as cart_events
from omni.cart.v1 import resources_pb2 as cart_res
from omni.identity.v1 import events_pb2 as identity_events
from omni.inventory.v1 import events_pb2 as inventory_events
from omni.messaging.v1 import events_pb2 as ev
from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import events_pb2 as pref_events
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import money_pb2
from omni_runtime.db.engine import Database
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from omni_runtime.testing.services import RunningService
from services.messaging.localsinks import text_of
from tests.messaging.conftest import (
    Caller,
    OffsetClock,
    Sinks,
    eventually,
    needs_preferences,
    rid,
    rpc_error,
    uid,
    violations,
)
from tests.messaging.customers import EMAIL, SMS, Customer, known_by_both, new_customer

pytestmark = needs_preferences
State = res.NotificationState
BUCHAREST = ZoneInfo("Europe/Bucharest")


@pytest.fixture(scope="module")
async def db(messaging: RunningService) -> Database:
    runtime = messaging.host.runtime
    assert runtime is not None and runtime.db is not None
    return runtime.db


@pytest.fixture(scope="module")
async def offer(api: Caller) -> str:
    """A marketing template with e-mail and SMS content."""
    template_id = uid("offer")
    await api.CreateTemplate(
        svc.CreateTemplateRequest(
            template_id=template_id,
            template=res.Template(
                topic="offers",
                default_locale="en",
                purpose=pref.CONTACT_PURPOSE_MARKETING,
                contents=[
                    res.TemplateContent(
                        channel=EMAIL,
                        locale="en",
                        subject="{{discount}} off",
                        body="Hi {{name}}, {{discount}} off today",
                        html_body="<p>{{discount}} off</p>",
                    ),
                    res.TemplateContent(
                        channel=EMAIL,
                        locale="ro",
                        subject="{{discount}} reducere",
                        body="Salut {{name}}, {{discount}} reducere azi",
                    ),
                    res.TemplateContent(channel=SMS, locale="en", body="{{discount}} off today, {{name}}"),
                ],
            ),
        )
    )
    return f"templates/{template_id}"


@pytest.fixture(scope="module")
def make_customer(
    omni_infra: Infra, preferences: RunningService, make_token: Callable[..., str], db: Database
) -> Callable[..., Awaitable[Customer]]:
    token = make_token("serviceClients/web-backend", ["service"], ttl_seconds=3600)

    async def make(phone: str | None = None) -> Customer:
        customer = await new_customer(omni_infra.nats_url, preferences, token, phone=phone)

        async def known() -> bool:
            return await known_by_both(db, customer)

        await eventually(known)
        return customer

    return make


def send(
    customer: Customer, template: str, *, request_id: str | None = None, **kw: Any
) -> svc.SendNotificationRequest:
    params = kw.pop("params", {"name": "Ana", "discount": "20%"})
    return svc.SendNotificationRequest(
        notification=res.Notification(customer=customer.name, template=template, params=params, **kw),
        request_id=request_id or rid(),
    )


async def final(api: Caller, name: str, *states: int, timeout: float = 15.0) -> res.Notification:
    wanted = states or (
        State.NOTIFICATION_STATE_SENT,
        State.NOTIFICATION_STATE_DELIVERED,
        State.NOTIFICATION_STATE_FAILED,
        State.NOTIFICATION_STATE_SUPPRESSED,
    )

    async def reached() -> res.Notification | None:
        found = await api.GetNotification(svc.GetNotificationRequest(name=name))
        return found if found.state in wanted else None

    return await eventually(reached, timeout)  # type: ignore[no-any-return]


async def test_order_placed_is_confirmed_by_the_preferred_channel(
    omni_infra: Infra, make_customer: Callable[..., Awaitable[Customer]], sinks: Sinks, api: Caller
) -> None:
    customer = await make_customer()
    await customer.preferences(SMS, EMAIL)
    order = cart_res.Order(
        name=f"{customer.name}/orders/o1",
        order_number="O-26-000123",
        total=money_pb2.Money(currency_code="EUR", minor_units=12990),
        lines=[cart_res.OrderLine(quantity=2), cart_res.OrderLine(quantity=1)],
    )
    await publish_event(
        omni_infra.nats_url,
        cart_events.OrderPlacedEvent(order=order, customer=customer.name, cart=f"{customer.name}/cart"),
    )

    async def texted() -> list[dict[str, str]]:
        return [m for m in sinks.http.sms if m["to"] == customer.phone]

    [sms] = await eventually(texted)
    assert sms["body"] == "Omni: order O-26-000123 confirmed, total 129.90 EUR. Thank you!"
    assert not sinks.smtp.to(customer.email)  # one channel: the preferred one
    page = await api.ListNotifications(svc.ListNotificationsRequest(customer=customer.name))
    [listed] = page.notifications
    notification = await final(api, listed.name)  # the sink can see the SMS before SENT is committed
    assert notification.subject_resource == order.name and notification.chosen_channel == SMS
    assert notification.purpose == pref.CONTACT_PURPOSE_TRANSACTIONAL


async def test_quiet_hours_hold_an_offer_until_they_end_and_urgent_goes_through(
    make_customer: Callable[..., Awaitable[Customer]],
    api: Caller,
    offer: str,
    sinks: Sinks,
    clock: OffsetClock,
) -> None:
    customer = await make_customer()
    await customer.preferences(EMAIL, quiet=(22, 8))
    await customer.consent(EMAIL, "offers")
    night = datetime.now(BUCHAREST).replace(hour=23, minute=0, second=0, microsecond=0)
    clock.set(night.astimezone(UTC))
    try:
        held = await api.SendNotification(send(customer, offer))
        assert held.state == State.NOTIFICATION_STATE_PENDING
        morning = (night + timedelta(days=1)).replace(hour=8)
        assert held.schedule_time.ToDatetime(tzinfo=UTC) == morning.astimezone(UTC)

        urgent = await api.SendNotification(send(customer, offer, purpose=pref.CONTACT_PURPOSE_URGENT))
        sent = await final(api, urgent.name)
        assert sent.state == State.NOTIFICATION_STATE_SENT
        assert len(sinks.smtp.to(customer.email)) == 1  # the urgent one only: the offer waits
        still = await api.GetNotification(svc.GetNotificationRequest(name=held.name))
        assert still.state == State.NOTIFICATION_STATE_PENDING

        clock.set(morning.astimezone(UTC) + timedelta(seconds=1))
        delivered = await final(api, held.name)
        assert delivered.state == State.NOTIFICATION_STATE_SENT
        mails = await sinks.smtp.wait_for(0)
        assert len([m for m in mails if str(m["To"]) == customer.email]) == 2
    finally:
        clock.offset = timedelta(0)


async def test_an_invalid_number_falls_back_to_email(
    make_customer: Callable[..., Awaitable[Customer]], api: Caller, sinks: Sinks
) -> None:
    customer = await make_customer(phone="+1234")  # Twilio refuses it: 21211
    await customer.preferences(SMS, EMAIL)
    request = send(
        customer,
        "templates/order-shipped",
        params={"order_number": "O-7", "tracking_reference": "TRK1"},
        purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
        topic="order_updates",
    )
    accepted = await api.SendNotification(request)
    done = await final(api, accepted.name)
    assert done.state == State.NOTIFICATION_STATE_SENT and done.chosen_channel == EMAIL
    assert [(a.channel, a.state, a.error_code) for a in done.attempts] == [
        (SMS, res.DELIVERY_ATTEMPT_STATE_FAILED, "INVALID_DESTINATION"),
        (EMAIL, res.DELIVERY_ATTEMPT_STATE_SENT, ""),
    ]
    assert "21211" in done.attempts[0].error_message
    [mail] = sinks.smtp.to(customer.email)
    assert "O-7" in str(mail["Subject"])
    assert done.rendered_subject == str(mail["Subject"])


async def test_every_channel_failing_is_failed_with_every_attempt(
    make_customer: Callable[..., Awaitable[Customer]], api: Caller, sinks: Sinks
) -> None:
    customer = await make_customer(phone="+1234")
    sinks.smtp.refuse[customer.email] = (550, "5.1.1 No such mailbox")
    await customer.preferences(SMS, EMAIL)
    accepted = await api.SendNotification(
        send(
            customer,
            "templates/order-shipped",
            params={"order_number": "O-8", "tracking_reference": "-"},
            purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
        )
    )
    failed = await final(api, accepted.name)
    assert failed.state == State.NOTIFICATION_STATE_FAILED
    assert [(a.channel, a.error_code) for a in failed.attempts] == [
        (SMS, "INVALID_DESTINATION"),
        (EMAIL, "INVALID_DESTINATION"),
    ]
    assert all(a.state == res.DELIVERY_ATTEMPT_STATE_FAILED for a in failed.attempts)
    assert failed.attempts[1].destination == f"{customer.email[0]}***@example.com"


async def test_the_same_send_twice_sends_one_message(
    make_customer: Callable[..., Awaitable[Customer]], api: Caller, sinks: Sinks
) -> None:
    customer = await make_customer()
    await customer.preferences(EMAIL)
    request = send(
        customer,
        "templates/order-cancelled",
        params={"order_number": "O-9", "reason": "out of stock"},
        purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
    )
    answers = await asyncio.gather(*(api.SendNotification(request) for _ in range(5)))
    assert len({a.name for a in answers}) == 1
    await final(api, answers[0].name)
    retry = await api.SendNotification(request)
    assert retry.name == answers[0].name
    await asyncio.sleep(0.3)  # give a (wrong) second send the time to show up in the sink
    assert len(sinks.smtp.to(customer.email)) == 1


async def test_a_bounce_falls_back_and_delivered_opened_clicked_reach_the_timeline_events(
    make_customer: Callable[..., Awaitable[Customer]], api: Caller, sinks: Sinks, db: Database
) -> None:
    customer = await make_customer()
    await customer.preferences(EMAIL, SMS)
    accepted = await api.SendNotification(
        send(
            customer,
            "templates/order-shipped",
            params={"order_number": "O-10", "tracking_reference": "T"},
            purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
        )
    )
    sent = await final(api, accepted.name)
    email_attempt = sent.attempts[-1]
    bounced = await api.RecordDeliveryReceipt(
        svc.RecordDeliveryReceiptRequest(
            provider="smtp",
            provider_message_id=email_attempt.provider_message_id,
            status=res.DELIVERY_RECEIPT_STATUS_FAILED,
            error_code="5.1.1",
        )
    )
    assert bounced.state in (State.NOTIFICATION_STATE_PENDING, State.NOTIFICATION_STATE_SENT)
    by_sms = await final(api, accepted.name, State.NOTIFICATION_STATE_SENT)
    assert by_sms.chosen_channel == SMS and by_sms.attempts[0].error_code == "BOUNCED"
    sms_attempt = by_sms.attempts[-1]
    for status in (
        res.DELIVERY_RECEIPT_STATUS_DELIVERED,
        res.DELIVERY_RECEIPT_STATUS_OPENED,
        res.DELIVERY_RECEIPT_STATUS_CLICKED,
        res.DELIVERY_RECEIPT_STATUS_CLICKED,
    ):
        latest = await api.RecordDeliveryReceipt(
            svc.RecordDeliveryReceiptRequest(
                provider="twilio",
                provider_message_id=sms_attempt.provider_message_id,
                status=status,
                url="https://shop/x",
            )
        )
    assert latest.state == State.NOTIFICATION_STATE_DELIVERED
    assert latest.HasField("open_time") and latest.HasField("click_time")
    async with db.transaction() as session:
        types = [
            r[0]
            for r in await session.execute(
                text(
                    "SELECT event_type FROM omni_outbox"
                    " WHERE position(CAST(:n AS bytea) IN payload) > 0 ORDER BY seq"
                ),
                {"n": accepted.name.encode()},
            )
        ]
    for kind in (
        ev.NotificationSentEvent,
        ev.NotificationDeliveredEvent,
        ev.NotificationOpenedEvent,
        ev.NotificationClickedEvent,
    ):
        assert types.count(kind.DESCRIPTOR.full_name) == (2 if kind is ev.NotificationSentEvent else 1), types
    unknown = await rpc_error(
        api.RecordDeliveryReceipt(
            svc.RecordDeliveryReceiptRequest(
                provider="twilio", provider_message_id="SMnope", status=res.DELIVERY_RECEIPT_STATUS_DELIVERED
            )
        )
    )
    assert unknown.code() is grpc.StatusCode.NOT_FOUND


async def test_erasure_suppresses_waiting_notifications_and_wipes_what_was_sent(
    omni_infra: Infra,
    make_customer: Callable[..., Awaitable[Customer]],
    api: Caller,
    offer: str,
    clock: OffsetClock,
    db: Database,
) -> None:
    customer = await make_customer()
    await customer.preferences(EMAIL, quiet=(0, 23))
    await customer.consent(EMAIL, "offers")
    urgent = await api.SendNotification(send(customer, offer, purpose=pref.CONTACT_PURPOSE_URGENT))
    await final(api, urgent.name)
    night = datetime.now(BUCHAREST).replace(hour=12, minute=0, second=0, microsecond=0)
    clock.set(night.astimezone(UTC))
    try:
        held = await api.SendNotification(send(customer, offer))
        assert held.state == State.NOTIFICATION_STATE_PENDING
    finally:
        clock.offset = timedelta(0)
    await publish_event(
        omni_infra.nats_url,
        identity_events.CustomerErasedEvent(customer=customer.name, requested_by=customer.name),
    )
    erased = await final(api, held.name, State.NOTIFICATION_STATE_SUPPRESSED)
    assert erased.suppression_reason == res.SUPPRESSION_REASON_CUSTOMER_ERASED
    wiped = await api.GetNotification(svc.GetNotificationRequest(name=urgent.name))
    assert wiped.state == State.NOTIFICATION_STATE_SENT  # the fact stays
    assert (
        wiped.rendered_body,
        wiped.rendered_subject,
        dict(wiped.params),
        wiped.attempts[0].destination,
    ) == ("", "", {}, "")
    async with db.transaction() as session:
        points = (
            await session.execute(
                text("SELECT count(*) FROM contact_points WHERE customer = :c"), {"c": customer.name}
            )
        ).scalar_one()
        receipts = (
            await session.execute(
                text("SELECT count(*) FROM omni_outbox WHERE event_type = :t"),
                {"t": ev.CustomerErasureProcessedEvent.DESCRIPTOR.full_name},
            )
        ).scalar_one()
    assert points == 0 and receipts >= 1


async def test_a_template_update_reaches_waiting_notifications_not_sent_ones(
    make_customer: Callable[..., Awaitable[Customer]], api: Caller, sinks: Sinks, clock: OffsetClock
) -> None:
    template_id = uid("promo")
    content = [res.TemplateContent(channel=EMAIL, locale="en", subject="Old {{x}}", body="old body {{x}}")]
    created = await api.CreateTemplate(
        svc.CreateTemplateRequest(
            template_id=template_id,
            template=res.Template(topic="offers", default_locale="en", contents=content),
        )
    )
    customer = await make_customer()
    await customer.preferences(EMAIL, quiet=(0, 23))
    await customer.consent(EMAIL, "offers")
    first = await api.SendNotification(
        send(customer, created.name, params={"x": "1"}, purpose=pref.CONTACT_PURPOSE_URGENT)
    )
    await final(api, first.name)
    noon = datetime.now(BUCHAREST).replace(hour=12, minute=0, second=0, microsecond=0)
    clock.set(noon.astimezone(UTC))
    try:
        held = await api.SendNotification(send(customer, created.name, params={"x": "2"}))
        await api.UpdateTemplate(
            svc.UpdateTemplateRequest(
                template=res.Template(
                    name=created.name,
                    contents=[
                        res.TemplateContent(
                            channel=EMAIL, locale="en", subject="New {{x}}", body="new body {{x}}"
                        )
                    ],
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["contents"]),
            )
        )
        clock.set((noon + timedelta(hours=11, minutes=1)).astimezone(UTC))
        sent = await final(api, held.name)
    finally:
        clock.offset = timedelta(0)
    assert sent.rendered_subject == "New 2"
    kept = await api.GetNotification(svc.GetNotificationRequest(name=first.name))
    assert kept.rendered_subject == "Old 1" and kept.rendered_body == "old body 1"
    assert sorted(str(m["Subject"]) for m in sinks.smtp.to(customer.email)) == ["New 2", "Old 1"]


async def test_platform_notifications_from_events(
    omni_infra: Infra, make_customer: Callable[..., Awaitable[Customer]], sinks: Sinks, api: Caller
) -> None:
    customer = await make_customer()
    await customer.preferences(EMAIL)
    await publish_event(
        omni_infra.nats_url,
        inventory_events.StockSubscriptionFiredEvent(
            stock_subscription="stockSubscriptions/s1",
            customer=customer.name,
            item="items/SKU-1",
            item_title="Trail shoe",
            location="locations/store-1",
            location_display_name="Omni Cluj",
        ),
    )
    token = "tok-" + uid()
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(days=2))
    await publish_event(
        omni_infra.nats_url,
        pref_events.ConsentConfirmationRequestedEvent(
            consent=f"{customer.name}/consents/c1",
            customer=customer.name,
            channel=EMAIL,
            topic="offers",
            destination="new-address@example.com",
            token=token,
            expire_time=expire,
            language_code="ro",
        ),
    )

    async def both() -> bool:
        return bool(sinks.smtp.to(customer.email)) and bool(sinks.smtp.to("new-address@example.com"))

    await eventually(both)
    [stock] = sinks.smtp.to(customer.email)
    assert str(stock["Subject"]) == "Trail shoe is back in stock" and "Omni Cluj" in text_of(stock)
    [confirm] = sinks.smtp.to("new-address@example.com")
    assert str(confirm["Subject"]) == "Confirmă abonarea"  # the language the consent was asked in
    assert f"token={token}" in text_of(confirm)


async def test_bad_input_is_refused_with_details(
    api: Caller, offer: str, as_role: Callable[..., Caller]
) -> None:
    customer = Customer("customers/c-bad", "x@example.com", "+40700000000")
    unknown = await rpc_error(api.SendNotification(send(customer, "templates/no-such-template")))
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    missing = await rpc_error(api.SendNotification(send(customer, offer, params={"name": "Ana"})))
    assert violations(missing) == {"notification.params[discount]"}
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    bad = await rpc_error(
        api.SendNotification(
            send(customer, offer, topic="Big Offers", expire_time=past, request_id="not-a-uuid")
        )
    )
    assert {"notification.topic", "notification.expire_time", "request_id"} <= violations(bad)
    no_id = await rpc_error(
        api.SendNotification(
            svc.SendNotificationRequest(notification=res.Notification(customer=customer.name, template=offer))
        )
    )
    assert "request_id" in violations(no_id)

    shopper = as_role(customer.name, "customer", channel="web")
    denied = await rpc_error(shopper.SendNotification(send(customer, offer)))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_customers_read_only_their_own_notifications(
    make_customer: Callable[..., Awaitable[Customer]], api: Caller, as_role: Callable[..., Caller]
) -> None:
    customer = await make_customer()
    await customer.preferences(EMAIL)
    mine = await api.SendNotification(
        send(
            customer,
            "templates/order-cancelled",
            params={"order_number": "O-1", "reason": "r"},
            purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
        )
    )
    me = as_role(customer.name, "customer", channel="mobile_app")
    other = as_role("customers/someone-else", "customer", channel="mobile_app")
    found = await me.GetNotification(svc.GetNotificationRequest(name=mine.name, customer=customer.name))
    assert found.name == mine.name
    listed = await me.ListNotifications(svc.ListNotificationsRequest(customer=customer.name))
    assert [n.name for n in listed.notifications] == [mine.name]
    hidden = await rpc_error(
        other.GetNotification(svc.GetNotificationRequest(name=mine.name, customer="customers/someone-else"))
    )
    assert hidden.code() is grpc.StatusCode.NOT_FOUND
    unnamed = await rpc_error(me.ListNotifications(svc.ListNotificationsRequest()))
    assert unnamed.code() is grpc.StatusCode.PERMISSION_DENIED
