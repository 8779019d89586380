"""Where token verification keys come from.

Identity publishes its public keys as a JWKS; every other service fetches and caches it,
refetching when a token names a ``kid`` it has not seen (key rotation keeps two keys live, so
a new key is always announced before it signs). Identity itself verifies with its own keys.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger("omni.auth")

# A JWK as a plain mapping (kty, crv, x, kid, alg, use).
Jwk = Mapping[str, str]


class KeySource(Protocol):
    async def key(self, kid: str) -> Ed25519PublicKey | None:
        """The public key for ``kid``, or None if there is no such key."""


def b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key_from_jwk(jwk: Jwk) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError(f"unsupported key type {jwk.get('kty')}/{jwk.get('crv')}")
    return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))


class StaticKeySource:
    """A fixed set of keys: identity's own keys, known in-process."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)


class JwksKeySource:
    """Keys fetched from identity's JWKS, cached for ``ttl`` seconds.

    An unknown ``kid`` triggers one refetch, rate-limited to ``min_refresh`` seconds so a flood
    of forged kids cannot turn into a flood of JWKS calls.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[list[Jwk]]],
        *,
        ttl: float = 300.0,
        min_refresh: float = 5.0,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if (not force and age < self._ttl) or (force and age < self._min_refresh):
                return
            jwks = await self._fetch()
            keys: dict[str, Ed25519PublicKey] = {}
            for jwk in jwks:
                try:
                    keys[jwk["kid"]] = public_key_from_jwk(jwk)
                except (KeyError, ValueError) as exc:
                    log.warning("ignoring unusable JWK %s: %s", jwk.get("kid"), exc)
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        if time.monotonic() - self._fetched_at >= self._ttl:
            await self._refresh(force=False)
        found = self._keys.get(kid)
        if found is None:
            await self._refresh(force=True)
            found = self._keys.get(kid)
        return found
