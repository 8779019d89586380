"""Provider callbacks, received unparsed through the gateway (``omni.type.v1.HttpRequest``):
check the signature over the exact request, then apply the receipt it reports.

- ``twilio``: ``X-Twilio-Signature`` (HMAC-SHA1 of URL + sorted form parameters, keyed with the
  account's auth token); form fields ``MessageSid``, ``MessageStatus``, ``ErrorCode``.
  ``delivered`` → DELIVERED, ``read`` → OPENED, ``undelivered``/``failed`` → FAILED; the
  intermediate ``queued``/``sending``/``sent``/``accepted`` change nothing.
- any other configured source (``OMNI_MESSAGING_CALLBACK_SECRETS=id=secret,…``): the configured
  header (default ``X-Omni-Signature``) must be ``sha256=<hex>`` of the HMAC-SHA256 of the raw
  body; the body is a JSON receipt ``{"provider_message_id", "status": "delivered|failed|
  opened|clicked", "error_code", "error_message", "url", "occur_time"}`` for that provider.

A signature is checked against the URL the gateway saw and, when ``OMNI_MESSAGING_PUBLIC_URL``
is set, the same path under it (what the provider was told to call, behind any proxy).
Anything unsigned or forged is UNAUTHENTICATED before its body is even parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import resources_pb2 as res
from omni.type.v1 import http_pb2
from omni_runtime.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated
from omni_runtime.listing import parse_timestamp
from services.messaging import metrics, receipts
from services.messaging.adapters import twilio, webhook
from services.messaging.domain import DOMAIN
from services.messaging.unit import Unit

TWILIO_STATUSES = {
    "delivered": res.DELIVERY_RECEIPT_STATUS_DELIVERED,
    "read": res.DELIVERY_RECEIPT_STATUS_OPENED,
    "undelivered": res.DELIVERY_RECEIPT_STATUS_FAILED,
    "failed": res.DELIVERY_RECEIPT_STATUS_FAILED,
}
JSON_STATUSES = {
    "delivered": res.DELIVERY_RECEIPT_STATUS_DELIVERED,
    "failed": res.DELIVERY_RECEIPT_STATUS_FAILED,
    "bounced": res.DELIVERY_RECEIPT_STATUS_FAILED,
    "opened": res.DELIVERY_RECEIPT_STATUS_OPENED,
    "clicked": res.DELIVERY_RECEIPT_STATUS_CLICKED,
}


def _urls(unit: Unit, url: str) -> list[str]:
    """The URL as received, and the same path and query under the configured public URL."""
    found = [url]
    public = unit.config.public_url
    if public:
        parts = urlsplit(url)
        rebased = public.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        if rebased not in found:
            found.append(rebased)
    return found


def _refuse(provider: str, why: str) -> Unauthenticated:
    metrics.RECEIPTS.labels(provider, "rejected").inc()
    return Unauthenticated(
        f"callback for {provider} refused: {why}", reason="CALLBACK_SIGNATURE_INVALID", domain=DOMAIN
    )


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description, "INVALID_CALLBACK")], domain=DOMAIN)


def _twilio(unit: Unit, request: http_pb2.HttpRequest) -> dict[str, object] | None:
    config = unit.config.twilio
    if config is None:
        raise NotFound("providerCallbacks/twilio", "Twilio is not configured", domain=DOMAIN)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise _refuse("twilio", "Twilio posts application/x-www-form-urlencoded")
    try:
        params = parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise _refuse("twilio", "the body is not a form") from None
    given = request.headers.get("x-twilio-signature", "")
    if not any(
        twilio.valid_signature(config.auth_token, url, params, given) for url in _urls(unit, request.url)
    ):
        raise _refuse("twilio", "missing or wrong X-Twilio-Signature")
    form: Mapping[str, str] = dict(params)
    status = TWILIO_STATUSES.get(form.get("MessageStatus", form.get("SmsStatus", "")).lower())
    if status is None:
        return None
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not sid:
        raise _bad("http_request.body", "has no MessageSid")
    return {
        "provider": "twilio",
        "provider_message_id": sid,
        "status": status,
        "error_code": form.get("ErrorCode", ""),
        "error_message": form.get("ErrorMessage", ""),
    }


def _hmac(unit: Unit, provider: str, request: http_pb2.HttpRequest) -> dict[str, object] | None:
    secret = unit.config.callback_secrets.get(provider)
    if not secret:
        raise NotFound(
            f"providerCallbacks/{provider}", f"no callback source {provider!r} is configured", domain=DOMAIN
        )
    given = request.headers.get(unit.config.callback_signature_header.lower(), "")
    if not webhook.valid_signature(secret, request.body, given):
        raise _refuse(provider, f"missing or wrong {unit.config.callback_signature_header}")
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, ValueError):
        raise _bad("http_request.body", "must be a JSON receipt") from None
    if not isinstance(body, dict):
        raise _bad("http_request.body", "must be a JSON object")
    status = JSON_STATUSES.get(str(body.get("status", "")).lower())
    message_id = str(body.get("provider_message_id") or "")
    if not message_id:
        raise _bad("http_request.body.provider_message_id", "is required")
    if status is None:
        raise _bad("http_request.body.status", "must be delivered, failed, bounced, opened or clicked")
    occur: datetime | None = None
    if body.get("occur_time"):
        occur = parse_timestamp(str(body["occur_time"]))
        if occur is None:
            raise _bad("http_request.body.occur_time", "must be an RFC 3339 time")
    return {
        "provider": provider,
        "provider_message_id": message_id,
        "status": status,
        "error_code": str(body.get("error_code") or ""),
        "error_message": str(body.get("error_message") or ""),
        "url": str(body.get("url") or ""),
        "occur_time": occur,
    }


async def receive(
    unit: Unit, request: svc.ReceiveProviderCallbackRequest
) -> svc.ReceiveProviderCallbackResponse:
    raw = request.http_request
    receipt = _twilio(unit, raw) if request.provider == "twilio" else _hmac(unit, request.provider, raw)
    if receipt is None:
        return svc.ReceiveProviderCallbackResponse()
    async with unit.db.transaction() as session:
        notification = await receipts.apply(unit, session, **receipt)  # type: ignore[arg-type]
    return svc.ReceiveProviderCallbackResponse(notification=notification.name)
