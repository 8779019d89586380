"""Messaging in the platform, through the gateway: a one-time code login end to end (request the
code, read it from the mail in the SMTP sink, log in with it); an SMS code sent after the SMS
provider answered 503; and Twilio's status callback through the gateway, where a forged or
unsigned callback gets 401 and changes nothing while a genuine one marks the message delivered."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import messaging_service_pb2_grpc
from omni.messaging.v1 import resources_pb2 as res
from omni_runtime.auth.tokens import issue_token
from omni_runtime.testing.plugin import Infra, bearer
from services.messaging.adapters import twilio
from services.messaging.localsinks import Fault, text_of
from tests.gateway.platform import Platform, running_platform
from tests.messaging.conftest import Sinks, eventually, messaging_extra

WEB = {"X-Omni-Channel": "web"}
CALLBACK_URL = "https://api.omni.test/v1/providerCallbacks/twilio"


@pytest.fixture(scope="module")
async def platform(omni_infra: Infra, sinks: Sinks) -> AsyncIterator[Platform]:
    extra = {"messaging": messaging_extra(sinks)}
    async with running_platform(omni_infra, ("identity", "messaging"), extra=extra) as running:
        yield running


@pytest.fixture(scope="module")
async def http(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
        yield client


def admin_stub(platform: Platform) -> tuple[Any, tuple[tuple[str, str], ...]]:
    runtime = platform.services["identity"].host.runtime
    assert runtime is not None
    token = issue_token(runtime.key_source.current(), subject="staffMembers/root", roles=["admin"])  # type: ignore[union-attr]
    return messaging_service_pb2_grpc.MessagingServiceStub(platform.services["messaging"].channel), bearer(
        token
    )


async def start_code_login(http: httpx.AsyncClient, kind: str, value: str) -> dict[str, Any]:
    response = await http.post(
        "/v1/customers:startOneTimeCodeLogin",
        headers=WEB,
        json={"destination": {"kind": kind, "value": value}, "allowRegistration": True},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_code_login_end_to_end_with_the_code_from_the_mail(
    http: httpx.AsyncClient, sinks: Sinks
) -> None:
    address = f"ana-{uuid.uuid4().hex[:8]}@example.com"
    challenge = await start_code_login(http, "IDENTIFIER_KIND_EMAIL", address)

    async def mail() -> Any:
        return sinks.smtp.to(address)

    [message] = await eventually(mail)
    assert "Your Omni code" in str(message["Subject"])
    code = re.search(r"\b(\d{4,10})\b", text_of(message))
    assert code is not None, text_of(message)
    html = message.get_body(preferencelist=("html",))
    assert html is not None and f"<b>{code.group(1)}</b>" in html.get_content()

    verified = await http.post(
        "/v1/customers:verifyOneTimeCode",
        headers=WEB,
        json={"challengeId": challenge["challengeId"], "code": code.group(1)},
    )
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["token"]["accessToken"]
    assert body["customer"]["name"].startswith("customers/")


async def test_an_sms_code_survives_a_503_and_its_receipts_are_signed(
    http: httpx.AsyncClient, sinks: Sinks, platform: Platform
) -> None:
    phone = "+4072" + f"{uuid.uuid4().int % 10**7:07d}"
    sinks.http.twilio_faults.append(
        Fault(503, {"code": 20500, "message": "Service Unavailable", "status": 503})
    )
    await start_code_login(http, "IDENTIFIER_KIND_PHONE", phone)

    async def texts() -> list[dict[str, str]]:
        return [m for m in sinks.http.sms if m["to"] == phone]

    [sms] = await eventually(texts)
    assert re.search(r"Your Omni code is \d+", sms["body"])
    stub, md = admin_stub(platform)

    async def sent() -> res.Notification | None:
        page = await stub.ListNotifications(
            svc.ListNotificationsRequest(
                filter='template = "templates/one-time-code" AND chosen_channel = CHANNEL_SMS', page_size=1000
            ),
            metadata=md,
        )
        found = [
            n for n in page.notifications if any(a.provider_message_id == sms["sid"] for a in n.attempts)
        ]
        return found[0] if found else None

    notification = await eventually(sent)
    assert notification.state == res.NOTIFICATION_STATE_SENT
    assert [a.state for a in notification.attempts] == [
        res.DELIVERY_ATTEMPT_STATE_FAILED,
        res.DELIVERY_ATTEMPT_STATE_SENT,
    ]
    assert notification.attempts[0].error_code == "PROVIDER_UNAVAILABLE"
    assert (
        notification.attempts[1].destination.endswith(phone[-3:])
        and phone not in notification.attempts[1].destination
    )

    form = {
        "MessageSid": sms["sid"],
        "MessageStatus": "delivered",
        "To": phone,
        "AccountSid": sinks.http.twilio_sid,
    }
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    # Unsigned, forged (signed with another token), and replayed to another URL: 401, nothing changes.
    unsigned = await http.post("/v1/providerCallbacks/twilio", data=form, headers=form_headers)
    forged_signature = twilio.signature("not-the-auth-token", CALLBACK_URL, form.items())
    forged = await http.post(
        "/v1/providerCallbacks/twilio",
        data=form,
        headers={**form_headers, "X-Twilio-Signature": forged_signature},
    )
    genuine = twilio.signature(sinks.http.twilio_token, CALLBACK_URL, form.items())
    tampered = await http.post(
        "/v1/providerCallbacks/twilio",
        data={**form, "MessageStatus": "failed"},
        headers={**form_headers, "X-Twilio-Signature": genuine},
    )
    for refused in (unsigned, forged, tampered):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["details"][0]["reason"] == "CALLBACK_SIGNATURE_INVALID"
    unchanged = await stub.GetNotification(svc.GetNotificationRequest(name=notification.name), metadata=md)
    assert unchanged.state == res.NOTIFICATION_STATE_SENT and unchanged == notification

    accepted = await http.post(
        "/v1/providerCallbacks/twilio", data=form, headers={**form_headers, "X-Twilio-Signature": genuine}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["notification"] == notification.name
    delivered = await stub.GetNotification(svc.GetNotificationRequest(name=notification.name), metadata=md)
    assert delivered.state == res.NOTIFICATION_STATE_DELIVERED and delivered.HasField("deliver_time")
    assert delivered.attempts[-1].state == res.DELIVERY_ATTEMPT_STATE_DELIVERED
    again = await http.post(
        "/v1/providerCallbacks/twilio", data=form, headers={**form_headers, "X-Twilio-Signature": genuine}
    )
    assert again.status_code == 200  # Twilio retries callbacks: a repeat is harmless


async def test_hmac_callbacks_need_the_source_secret(http: httpx.AsyncClient) -> None:
    body = b'{"provider_message_id":"nope","status":"delivered"}'
    unsigned = await http.post(
        "/v1/providerCallbacks/webhook", content=body, headers={"Content-Type": "application/json"}
    )
    assert unsigned.status_code == 401
    unknown = await http.post(
        "/v1/providerCallbacks/mystery", content=body, headers={"Content-Type": "application/json"}
    )
    assert unknown.status_code == 404


async def test_make_run_demo_data_seeds_the_templates(platform: Platform, tmp_path: Any) -> None:
    from services.messaging.seed import OFFER
    from tests.gateway.platform import seed_demo_data

    state = await seed_demo_data(platform, tmp_path / "demo.json")
    assert state.get("messaging")["state"] == "loaded"  # type: ignore[index]
    stub, md = admin_stub(platform)
    offer = await stub.GetTemplate(svc.GetTemplateRequest(name=f"templates/{OFFER}"), metadata=md)
    assert offer.topic == "offers" and list(offer.params) == ["discount", "name"]
    again = await seed_demo_data(platform, tmp_path / "demo.json")
    assert again.get("messaging")["state"] == "loaded"  # type: ignore[index]  # nothing added twice
