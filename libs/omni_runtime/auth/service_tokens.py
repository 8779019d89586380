"""Client-credentials tokens for calls between services (a ``TokenProvider`` for PeerChannels).

A service configured with OMNI_SERVICE_CLIENT_ID / OMNI_SERVICE_CLIENT_SECRET asks identity's
IssueServiceToken for an access token, keeps it, and asks again shortly before it expires, so
service-to-service calls cost one token fetch per token lifetime rather than one per call.
Concurrent callers share a single fetch. If a refresh fails while the held token is still
valid, the held token is used (identity being briefly unreachable must not fail calls that
could still be authenticated); once it has expired the failure propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

log = logging.getLogger("omni.auth")

# Ask for a new token this long before the current one expires (at most a fifth of its life).
REFRESH_MARGIN_SECONDS = 60.0
ISSUE_TIMEOUT_SECONDS = 5.0


class ServiceTokenProvider:
    """``await provider()`` → a valid access token for this service's client credentials."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client_id: str,
        client_secret: str,
        *,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``channel`` reaches identity and must not itself carry this provider (IssueServiceToken
        is public; a provider that needed a token to get a token would never start)."""
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
