"""SMS and WhatsApp over Twilio's Programmable Messaging REST API, and Twilio's callback signature.

Send: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, HTTP Basic auth
(AccountSid:AuthToken), form fields ``To``, ``From`` (or ``MessagingServiceSid``), ``Body`` and
``StatusCallback``; 201 answers the message resource, whose ``sid`` is the provider message id.
Errors are ``{"code", "message", "more_info", "status"}``: 21211 (invalid 'To' number) and 21614
(not a mobile number) are INVALID_DESTINATION, 21610 (the recipient replied STOP) and other 4xx
REJECTED, 429 and 5xx transient. Twilio's API takes no idempotency key.

Callbacks carry ``X-Twilio-Signature``: base64 of HMAC-SHA1 over the full callback URL followed by
every POST parameter's name and value, sorted by name, keyed with the account's auth token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from services.messaging.adapters import http
from services.messaging.adapters.base import INVALID_DESTINATION, REJECTED, Outbound, ProviderError, Sent
from services.messaging.domain.contacts import PHONE, WHATSAPP, Destination

INVALID_NUMBER_CODES = frozenset({21211, 21614, 21217, 21401, 63024})


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    from_number: str = ""
    messaging_service_sid: str = ""
    whatsapp_from: str = ""
    base_url: str = "https://api.twilio.com"
    # Absolute URL of our status callback (the gateway's /v1/providerCallbacks/twilio); empty: none.
    status_callback_url: str = ""
    timeout: float = 10.0


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature for a form POST to ``url``."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str) -> bool:
    return bool(given) and hmac.compare_digest(signature(auth_token, url, params), given.strip())


class TwilioProvider:
    name = "twilio"
    idempotent = False

    def __init__(self, config: TwilioConfig, client: httpx.AsyncClient | None = None) -> None:
        if not (config.from_number or config.messaging_service_sid or config.whatsapp_from):
            raise ValueError("Twilio needs a From number, a messaging service SID or a WhatsApp sender")
        self.config = config
        self.client = client or http.client(config.timeout)

    def accepts(self, destination: Destination) -> bool:
        if destination.kind == WHATSAPP:
            return bool(self.config.whatsapp_from)
        return destination.kind == PHONE and bool(
            self.config.from_number or self.config.messaging_service_sid
        )

    def _form(self, message: Outbound) -> dict[str, str]:
        cfg = self.config
        dest = message.destination
        form: dict[str, str] = {"Body": message.body}
        if dest.kind == WHATSAPP:
            number = dest.value if dest.value.startswith("+") else f"+{dest.value}"
            form["To"] = f"whatsapp:{number}"
            form["From"] = f"whatsapp:{cfg.whatsapp_from}"
        else:
            form["To"] = dest.value
            if cfg.messaging_service_sid:
                form["MessagingServiceSid"] = cfg.messaging_service_sid
            else:
                form["From"] = cfg.from_number
        if cfg.status_callback_url:
            form["StatusCallback"] = cfg.status_callback_url
        return form

    async def send(self, message: Outbound) -> Sent:
        cfg = self.config
        url = f"{cfg.base_url.rstrip('/')}/2010-04-01/Accounts/{cfg.account_sid}/Messages.json"
        try:
            response = await self.client.post(
                url, data=self._form(message), auth=(cfg.account_sid, cfg.auth_token)
            )
        except httpx.HTTPError as exc:
            raise http.unreachable(exc) from None
        if response.status_code in (200, 201):
            sid = http.json_object(response).get("sid")
            if not isinstance(sid, str) or not sid:
                raise ProviderError(REJECTED, "Twilio answered without a message sid", transient=True)
            return Sent(provider_message_id=sid)
        body = http.json_object(response)
        code = body.get("code")
        text = str(body.get("message") or response.text[:300] or f"HTTP {response.status_code}")
        provider_code = str(code) if code is not None else str(response.status_code)
        transient = http.transient_status(response, text, provider_code)
        if transient is not None:
            raise transient
        if isinstance(code, int) and code in INVALID_NUMBER_CODES:
            raise ProviderError(INVALID_DESTINATION, text, transient=False, provider_code=provider_code)
        raise ProviderError(REJECTED, text, transient=False, provider_code=provider_code)

    async def close(self) -> None:
        await self.client.aclose()
