"""A generic signed webhook: any channel a business reaches through its own backend (Facebook
Messenger or Instagram through the social channel backend, a niche SMS gateway).

``POST {url}`` with a JSON body ``{"id", "reference", "channel", "to": {"kind", "value"},
"subject", "text", "html"}`` and the headers ``Idempotency-Key`` (the receiver must drop a
repeat; that makes the re-send after a crash harmless) and ``X-Omni-Signature: sha256=<hex>``,
the HMAC-SHA256 of the exact body under the shared secret, so the receiver can tell it came from
us. A 2xx may answer ``{"id": …}`` (the provider message id; default the idempotency key). 429
and 5xx are transient, other 4xx permanent (REJECTED).

The same signature scheme checks receipts the other way (see ``callbacks``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import httpx

from omni_runtime.context import channel_name
from services.messaging.adapters import http
from services.messaging.adapters.base import REJECTED, Outbound, ProviderError, Sent
from services.messaging.domain.contacts import Destination

SIGNATURE_HEADER = "X-Omni-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def valid_signature(secret: str, body: bytes, given: str) -> bool:
    return bool(secret) and bool(given) and hmac.compare_digest(sign(secret, body), given.strip())


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str
    # Destination kinds it reaches (facebook, instagram, whatsapp, phone, …).
    kinds: frozenset[str]
    name: str = "webhook"
    timeout: float = 10.0


class WebhookProvider:
    idempotent = True

    def __init__(self, config: WebhookConfig, client: httpx.AsyncClient | None = None) -> None:
        if not config.secret:
            raise ValueError("a signed webhook needs a secret")
        self.config = config
        self.client = client or http.client(config.timeout)

    @property
    def name(self) -> str:
        return self.config.name

    def accepts(self, destination: Destination) -> bool:
        return destination.kind in self.config.kinds

    async def send(self, message: Outbound) -> Sent:
        body = json.dumps(
            {
                "id": message.idempotency_key,
                "reference": message.reference,
                "channel": channel_name(message.channel),
                "to": {"kind": message.destination.kind, "value": message.destination.value},
                "subject": message.subject,
                "text": message.body,
                "html": message.html_body,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
            SIGNATURE_HEADER: sign(self.config.secret, body),
        }
        try:
            response = await self.client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise http.unreachable(exc) from None
        if 200 <= response.status_code < 300:
            found = http.json_object(response).get("id")
            return Sent(provider_message_id=str(found) if found else message.idempotency_key)
        text = response.text[:300] or f"HTTP {response.status_code}"
        transient = http.transient_status(response, text, str(response.status_code))
        if transient is not None:
            raise transient
        raise ProviderError(REJECTED, text, transient=False, provider_code=str(response.status_code))

    async def close(self) -> None:
        await self.client.aclose()
