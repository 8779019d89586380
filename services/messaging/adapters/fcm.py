"""Push over Firebase Cloud Messaging's HTTP v1 API, authenticated as a Google service account.

Access token: a JWT signed (RS256) with the service account's private key, exchanged at its
``token_uri`` (OAuth 2.0 JWT bearer grant, scope ``firebase.messaging``); cached until a minute
before it expires, and refreshed once when FCM answers 401.
Send: ``POST {base}/v1/projects/{project}/messages:send`` with ``{"message": {"token",
"notification": {"title", "body"}, "data"}}``; 200 answers ``{"name": "projects/…/messages/…"}``,
the provider message id. Errors are google.rpc.Status JSON with an ``FcmError`` detail:
UNREGISTERED (the app was uninstalled) is DEVICE_UNREGISTERED, INVALID_ARGUMENT and
SENDER_ID_MISMATCH are INVALID_DESTINATION (both permanent); QUOTA_EXCEEDED (429), UNAVAILABLE
(503) and INTERNAL (500) are transient. FCM takes no idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from services.messaging.adapters import http
from services.messaging.adapters.base import (
    DEVICE_UNREGISTERED,
    INVALID_DESTINATION,
    MISCONFIGURED,
    REJECTED,
    Outbound,
    ProviderError,
    Sent,
)
from services.messaging.domain.contacts import PUSH_TOKEN, Destination

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    project_id: str
    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        data = json.loads(path.read_text())
        try:
            return cls(
                project_id=str(data["project_id"]),
                client_email=str(data["client_email"]),
                private_key=str(data["private_key"]),
                private_key_id=str(data.get("private_key_id", "")),
                token_uri=str(data.get("token_uri") or "https://oauth2.googleapis.com/token"),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: service account file lacks {exc.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class FcmConfig:
    account: ServiceAccount
    base_url: str = "https://fcm.googleapis.com"
    timeout: float = 10.0


class FcmProvider:
    name = "fcm"
    idempotent = False

    def __init__(self, config: FcmConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or http.client(config.timeout)
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def accepts(self, destination: Destination) -> bool:
        return destination.kind == PUSH_TOKEN

    def _assertion(self) -> str:
        account = self.config.account
        now = int(time.time())
        claims = {
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": account.token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)

    async def access_token(self, *, refresh: bool = False) -> str:
        async with self._lock:
            if not refresh and self._token and time.monotonic() < self._expires - 60:
                return self._token
            try:
                response = await self.client.post(
                    self.config.account.token_uri, data={"grant_type": GRANT, "assertion": self._assertion()}
                )
            except httpx.HTTPError as exc:
                raise http.unreachable(exc) from None
            body = http.json_object(response)
            token = body.get("access_token")
            if response.status_code != 200 or not isinstance(token, str):
                error = http.transient_status(response, f"token exchange failed: {response.text[:200]}")
                raise error or ProviderError(
                    MISCONFIGURED, f"token exchange refused: {response.text[:200]}", transient=True
                )
            expires_in = body.get("expires_in", 3600)
            self._token = token
            self._expires = time.monotonic() + (
                float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            )
            return token

    async def send(self, message: Outbound) -> Sent:
        url = f"{self.config.base_url.rstrip('/')}/v1/projects/{self.config.account.project_id}/messages:send"
        payload = {
            "message": {
                "token": message.destination.value,
                "notification": {"title": message.subject, "body": message.body},
                "data": {"reference": message.reference, **message.metadata},
            }
        }
        response: httpx.Response | None = None
        for refresh in (False, True):
            token = await self.access_token(refresh=refresh)
            try:
                response = await self.client.post(
                    url, json=payload, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                raise http.unreachable(exc) from None
            if response.status_code != 401:
                break
        assert response is not None
        if response.status_code == 200:
            name = http.json_object(response).get("name")
            if not isinstance(name, str) or not name:
                raise ProviderError(REJECTED, "FCM answered without a message name", transient=True)
            return Sent(provider_message_id=name)
        error = http.json_object(response).get("error")
        error = error if isinstance(error, dict) else {}
        fcm_code = _fcm_error_code(error)
        text = str(error.get("message") or response.text[:300] or f"HTTP {response.status_code}")
        if fcm_code == "UNREGISTERED":
            raise ProviderError(DEVICE_UNREGISTERED, text, transient=False, provider_code=fcm_code)
        transient = http.transient_status(response, text, fcm_code)
        if transient is not None:
            raise transient
        if fcm_code in ("INVALID_ARGUMENT", "SENDER_ID_MISMATCH") or response.status_code == 400:
            raise ProviderError(INVALID_DESTINATION, text, transient=False, provider_code=fcm_code)
        raise ProviderError(REJECTED, text, transient=False, provider_code=fcm_code)

    async def close(self) -> None:
        await self.client.aclose()


def _fcm_error_code(error: dict[str, Any]) -> str:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")
