"""Access tokens for calls: a channel backend's service token, or a token it already holds.

A *token source* is any object that ``await source()`` answers with an access token; the
channel factory (``omni_client.connect``) sends it as ``authorization: Bearer …`` on every call.
A source may also have ``invalidate()``: after an UNAUTHENTICATED answer the channel calls it and
retries the call once with a fresh token (a token revoked or signed with a retired key).

``ServiceToken`` holds a service client's credentials (identity's ``IssueServiceToken``, the
client-credentials grant), keeps the token and asks again shortly before it expires, so calls
cost one fetch per token lifetime. Concurrent callers share one fetch. If a refresh fails while
the held token is still valid, the held token is used (identity briefly unreachable must not
fail calls that can still be authenticated); once it has expired the failure propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc

log = logging.getLogger("omni_client.tokens")

# Ask for a new token this long before the current one expires (at most a fifth of its life).
REFRESH_MARGIN_SECONDS = 60.0
ISSUE_TIMEOUT_SECONDS = 5.0


class TokenSource(Protocol):
    def __call__(self) -> Awaitable[str | None]: ...


class StaticToken:
    """A token obtained elsewhere (a customer's or a staff member's log-in), sent as is."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def __call__(self) -> str:
        return self.token


class ServiceToken:
    """``await ServiceToken(identity_channel, client_id, secret)()`` → a valid service token."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client_id: str,
        client_secret: str,
        *,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``channel`` reaches identity and must not itself carry this source (IssueServiceToken
        is public; a source that needed a token to get a token would never start)."""
        from omni.identity.v1 import identity_service_pb2_grpc

        self._stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        self.client_id = client_id
        self._secret = client_secret
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = float("-inf")
        self._expires_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def __call__(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token
            try:
                await self._fetch()
            except grpc.aio.AioRpcError as exc:
                if self._token is not None and self._clock() < self._expires_at:
                    log.warning("service token refresh failed (%s); using the current token", exc.code().name)
                    return self._token
                raise
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the held token: the next call fetches a new one (after UNAUTHENTICATED)."""
        self._token = None
        self._refresh_at = self._expires_at = float("-inf")

    async def _fetch(self) -> None:
        from omni.identity.v1 import identity_service_pb2

        started = self._clock()
        request = identity_service_pb2.IssueServiceTokenRequest(
            client_id=self.client_id, client_secret=self._secret
        )
        response = await self._stub.IssueServiceToken(request, timeout=ISSUE_TIMEOUT_SECONDS)
        self.fetches += 1
        lifetime = float(response.expires_in.seconds) or 60.0
        self._token = response.access_token
        self._expires_at = started + lifetime
        self._refresh_at = started + lifetime - min(self._margin, lifetime / 5)
