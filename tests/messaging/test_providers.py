"""Each provider adapter against a local server that speaks the provider's documented wire format:
SMTP for real (aiosmtpd, with STARTTLS), and HTTP servers shaped like Twilio's Messages API, FCM
HTTP v1 with its OAuth token endpoint, and the signed webhook, including their error answers."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from omni.type.v1 import channel_pb2 as ch
from services.messaging.adapters import base, twilio, webhook
from services.messaging.adapters.fcm import FcmConfig, FcmProvider, ServiceAccount
from services.messaging.adapters.smtp import SmtpConfig, SmtpProvider
from services.messaging.adapters.twilio import TwilioConfig, TwilioProvider
from services.messaging.adapters.webhook import WebhookConfig, WebhookProvider
from services.messaging.domain.contacts import EMAIL, FACEBOOK, PHONE, PUSH_TOKEN, WHATSAPP, Destination
from services.messaging.localsinks import Fault, HttpSink, SmtpSink, serving, text_of
from tests.messaging.providers import service_account, tls_context


def outbound(kind: str, value: str, channel: int = ch.CHANNEL_SMS, **kw: str) -> base.Outbound:
    return base.Outbound(
        channel=channel,
        destination=Destination(kind, value),
        subject=kw.get("subject", "Your order"),
        body=kw.get("body", "Order O-1 is ready"),
        html_body=kw.get("html", ""),
        idempotency_key=kw.get("key", "n1.1"),
        reference="notifications/n1",
    )


# -- SMTP ------------------------------------------------------------------------------------------


async def test_smtp_sends_multipart_over_starttls_with_a_stable_message_id(tmp_path: Path) -> None:
    sink = SmtpSink(tmp_path / "outbox", tls_context=tls_context(tmp_path))
    port = await sink.start()
    provider = SmtpProvider(
        SmtpConfig(port=port, tls="starttls", validate_certs=False, sender="Omni <shop@omni.test>")
    )
    try:
        sent = await provider.send(
            outbound(EMAIL, "ana@example.com", ch.CHANNEL_EMAIL, html="<p>Order <b>O-1</b></p>", key="n1.1")
        )
        again = await provider.send(outbound(EMAIL, "ana@example.com", ch.CHANNEL_EMAIL, key="n1.2"))
    finally:
        await provider.close()
        await sink.stop()
    assert sent.provider_message_id == "n1.1@omni.test"
    assert again.provider_message_id == "n1.2@omni.test"
    assert sink.sessions_with_tls == 2  # every message went over TLS (the sink requires STARTTLS)
    message = sink.messages[0]
    assert message["Message-ID"] == "<n1.1@omni.test>"
    assert message["To"] == "ana@example.com" and message["Subject"] == "Your order"
    assert message.get_content_type() == "multipart/alternative"
    assert text_of(message).strip() == "Order O-1 is ready"
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "<b>O-1</b>" in html.get_content()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


async def test_smtp_refusals_are_permanent_and_temporary_failures_transient(tmp_path: Path) -> None:
    sink = SmtpSink()
    sink.refuse["nobody@example.com"] = (550, "5.1.1 No such user")
    sink.refuse["busy@example.com"] = (451, "4.3.0 Try again later")
    port = await sink.start()
    provider = SmtpProvider(SmtpConfig(port=port, tls="none"))
    try:
        with pytest.raises(base.ProviderError) as unknown:
            await provider.send(outbound(EMAIL, "nobody@example.com", ch.CHANNEL_EMAIL))
        with pytest.raises(base.ProviderError) as busy:
            await provider.send(outbound(EMAIL, "busy@example.com", ch.CHANNEL_EMAIL))
        ok = await provider.send(outbound(EMAIL, "ana@example.com", ch.CHANNEL_EMAIL))
    finally:
        await provider.close()
        await sink.stop()
    assert (unknown.value.code, unknown.value.transient, unknown.value.provider_code) == (
        base.INVALID_DESTINATION,
        False,
        "550",
    )
    assert (busy.value.code, busy.value.transient) == (base.PROVIDER_UNAVAILABLE, True)
    assert ok.provider_message_id and len(sink.messages) == 1


async def test_smtp_server_down_is_transient() -> None:
    from omni_runtime.localinfra import free_port

    provider = SmtpProvider(SmtpConfig(port=free_port(), tls="none", timeout=2))
    with pytest.raises(base.ProviderError) as down:
        await provider.send(outbound(EMAIL, "ana@example.com", ch.CHANNEL_EMAIL))
    assert (down.value.code, down.value.transient) == (base.PROVIDER_UNAVAILABLE, True)


# -- Twilio ----------------------------------------------------------------------------------------


@pytest.fixture
async def http_sink(tmp_path: Path) -> AsyncIterator[tuple[HttpSink, str]]:
    sink = HttpSink(tmp_path / "outbox")
    async with serving(sink.app()) as port:
        yield sink, f"http://127.0.0.1:{port}"


def twilio_provider(base_url: str, sink: HttpSink, **kw: str) -> TwilioProvider:
    return TwilioProvider(
        TwilioConfig(
            account_sid=kw.get("sid", sink.twilio_sid),
            auth_token=kw.get("token", sink.twilio_token),
            from_number="+15005550006",
            whatsapp_from="+14155238886",
            base_url=base_url,
        )
    )


async def test_twilio_sms_and_whatsapp_are_posted_as_twilio_expects(http_sink: tuple[HttpSink, str]) -> None:
    sink, url = http_sink
    provider = twilio_provider(url, sink)
    try:
        sms = await provider.send(outbound(PHONE, "+40712345678"))
        wa = await provider.send(outbound(WHATSAPP, "40712345678", ch.CHANNEL_SOCIAL))
    finally:
        await provider.close()
    assert sms.provider_message_id.startswith("SM") and len(sms.provider_message_id) == 34
    assert sink.sms[0] == {
        "sid": sms.provider_message_id,
        "to": "+40712345678",
        "from": "+15005550006",
        "body": "Order O-1 is ready",
    }
    assert sink.sms[1]["to"] == "whatsapp:+40712345678" and sink.sms[1]["from"] == "whatsapp:+14155238886"
    assert wa.provider_message_id != sms.provider_message_id


async def test_twilio_errors_are_classified(http_sink: tuple[HttpSink, str]) -> None:
    sink, url = http_sink
    provider = twilio_provider(url, sink)
    sink.twilio_faults.append(Fault(503, {"code": 20500, "message": "Service unavailable", "status": 503}))
    sink.twilio_faults.append(
        Fault(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "7"})
    )
    try:
        with pytest.raises(base.ProviderError) as unavailable:
            await provider.send(outbound(PHONE, "+40712345678"))
        with pytest.raises(base.ProviderError) as limited:
            await provider.send(outbound(PHONE, "+40712345678"))
        with pytest.raises(base.ProviderError) as invalid:
            await provider.send(outbound(PHONE, "0712 345 678"))
    finally:
        await provider.close()
    assert (unavailable.value.code, unavailable.value.transient) == (base.PROVIDER_UNAVAILABLE, True)
    assert (limited.value.code, limited.value.retry_after) == (base.RATE_LIMITED, timedelta(seconds=7))
    assert (invalid.value.code, invalid.value.transient, invalid.value.provider_code) == (
        base.INVALID_DESTINATION,
        False,
        "21211",
    )
    assert not sink.sms


async def test_twilio_wrong_credentials_are_not_a_permanent_failure_of_the_message(
    http_sink: tuple[HttpSink, str],
) -> None:
    sink, url = http_sink
    provider = twilio_provider(url, sink, token="wrong")
    try:
        with pytest.raises(base.ProviderError) as refused:
            await provider.send(outbound(PHONE, "+40712345678"))
    finally:
        await provider.close()
    assert (refused.value.code, refused.value.transient, refused.value.provider_code) == (
        base.MISCONFIGURED,
        True,
        "20003",
    )


def test_twilio_signature_matches_twilios_published_example() -> None:
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio.signature("12345", url, params) == "GvWf1cFY/Q7PnoempGyD5oXAezc="
    assert twilio.valid_signature("12345", url, params, "GvWf1cFY/Q7PnoempGyD5oXAezc=")
    assert not twilio.valid_signature("12345", url + "&x=1", params, "GvWf1cFY/Q7PnoempGyD5oXAezc=")


# -- FCM -------------------------------------------------------------------------------------------


async def test_fcm_authenticates_with_a_signed_assertion_and_classifies_errors(
    http_sink: tuple[HttpSink, str], tmp_path: Path
) -> None:
    sink, url = http_sink
    path, public_key = service_account(tmp_path, f"{url}/token")
    sink.fcm_public_key = public_key  # the token endpoint verifies the RS256 assertion
    sink.unregistered_tokens.add("uninstalled-app-token")
    provider = FcmProvider(FcmConfig(account=ServiceAccount.from_file(path), base_url=url))
    try:
        sent = await provider.send(outbound(PUSH_TOKEN, "device-token-1", ch.CHANNEL_PUSH))
        with pytest.raises(base.ProviderError) as gone:
            await provider.send(outbound(PUSH_TOKEN, "uninstalled-app-token", ch.CHANNEL_PUSH))
        sink.fcm_faults.append(
            Fault(503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "down"}})
        )
        with pytest.raises(base.ProviderError) as down:
            await provider.send(outbound(PUSH_TOKEN, "device-token-1", ch.CHANNEL_PUSH))
        sink._tokens.clear()  # the access token was revoked: one refresh, then it works
        again = await provider.send(outbound(PUSH_TOKEN, "device-token-1", ch.CHANNEL_PUSH))
    finally:
        await provider.close()
    assert sent.provider_message_id.startswith("projects/omni-test/messages/")
    assert sink.push[0]["notification"] == {"title": "Your order", "body": "Order O-1 is ready"}
    assert sink.push[0]["token"] == "device-token-1"
    assert (gone.value.code, gone.value.transient, gone.value.provider_code) == (
        base.DEVICE_UNREGISTERED,
        False,
        "UNREGISTERED",
    )
    assert (down.value.code, down.value.transient) == (base.PROVIDER_UNAVAILABLE, True)
    assert again.provider_message_id != sent.provider_message_id


# -- signed webhook --------------------------------------------------------------------------------


async def test_webhook_is_signed_and_a_resend_with_the_same_key_is_dropped(
    http_sink: tuple[HttpSink, str],
) -> None:
    sink, url = http_sink
    provider = WebhookProvider(
        WebhookConfig(url=f"{url}/webhook", secret=sink.webhook_secret, kinds=frozenset({FACEBOOK}))
    )
    forged = WebhookProvider(
        WebhookConfig(url=f"{url}/webhook", secret="not-the-secret", kinds=frozenset({FACEBOOK}))
    )
    try:
        first = await provider.send(outbound(FACEBOOK, "psid-1", ch.CHANNEL_SOCIAL, key="n9.1"))
        repeat = await provider.send(outbound(FACEBOOK, "psid-1", ch.CHANNEL_SOCIAL, key="n9.1"))
        with pytest.raises(base.ProviderError) as refused:
            await forged.send(outbound(FACEBOOK, "psid-1", ch.CHANNEL_SOCIAL, key="n9.2"))
    finally:
        await provider.close()
        await forged.close()
    assert first.provider_message_id == repeat.provider_message_id
    assert len(sink.webhooks) == 1  # the receiver honoured the Idempotency-Key
    assert sink.webhooks[0]["to"] == {"kind": "facebook", "value": "psid-1"}
    assert (refused.value.code, refused.value.transient) == (base.MISCONFIGURED, True)


def test_webhook_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"status":"delivered"}'
    signature = webhook.sign("s3cret", body)
    assert signature == "sha256=" + hmac.new(b"s3cret", body, "sha256").hexdigest()
    assert webhook.valid_signature("s3cret", body, signature)
    assert not webhook.valid_signature("s3cret", body + b" ", signature)
    assert not webhook.valid_signature("s3cret", body, "")


async def test_unreachable_http_provider_is_transient() -> None:
    from omni_runtime.localinfra import free_port

    provider = WebhookProvider(
        WebhookConfig(
            url=f"http://127.0.0.1:{free_port()}/webhook", secret="x", kinds=frozenset({FACEBOOK}), timeout=2
        )
    )
    try:
        with pytest.raises(base.ProviderError) as down:
            await provider.send(outbound(FACEBOOK, "psid-1", ch.CHANNEL_SOCIAL))
    finally:
        await provider.close()
    assert (down.value.code, down.value.transient) == (base.PROVIDER_UNAVAILABLE, True)
