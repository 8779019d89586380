"""Omni access tokens: EdDSA-signed JWTs issued by identity, verified by every service.

Ed25519 keeps verification cheap (it runs on every call) and keys small enough to rotate
often. Claims: ``sub`` (the principal's resource name), ``roles``, ``store`` (store scope of a
store associate), ``sid`` (session), ``ch`` (channel the session was opened from).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omni_runtime.auth.keys import KeySource, b64url_encode
from omni_runtime.context import Principal
from omni_runtime.errors import Unauthenticated

ISSUER = "omni.identity"
AUDIENCE = "omni"
ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or uuid.uuid4().hex[:16], Ed25519PrivateKey.generate())

    def jwk(self) -> dict[str, str]:
        from cryptography.hazmat.primitives import serialization

        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(raw),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }


def issue_token(
    key: SigningKey,
    *,
    subject: str,
    roles: Iterable[str],
    ttl_seconds: int = 900,
    store: str = "",
    session: str = "",
    channel: str = "",
    now: float | None = None,
) -> str:
    """Sign an access token. Used by identity, and by tests to act as a real caller."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "roles": sorted(set(roles)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if store:
        claims["store"] = store
    if session:
        claims["sid"] = session
    if channel:
        claims["ch"] = channel
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


class TokenVerifier:
    """Checks signature, issuer, audience and expiry; returns the caller as a Principal.

    Verified tokens are remembered until their own ``exp`` (bounded LRU): a channel client sends
    the same token on every call, and the signature check is most of the per-call cost of
    authentication. Only a fully verified token is ever remembered, keyed by the whole token
    (signature included), so a forged or altered token never hits the cache; and a remembered
    token is honoured only while its signing key is still published, so retiring a key ends
    its tokens at once, as it does without the cache.
    """

    def __init__(self, keys: KeySource, *, cache_size: int = 10_000) -> None:
        self._keys = keys
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[Principal, float, str]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        found = self._verified.get(token)
        if found is not None:
            principal, expires, kid = found
            if time.time() < expires + LEEWAY_SECONDS and await self._keys.key(kid) is not None:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, expires, kid = await self._verify(token)
        if self._cache_size:
            self._verified[token] = (principal, expires, kid)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is malformed", reason="TOKEN_MALFORMED") from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise Unauthenticated("the access token is not signed by Omni identity", reason="TOKEN_INVALID")
        key = await self._keys.key(kid)
        if key is None:
            raise Unauthenticated("the access token's signing key is unknown", reason="TOKEN_INVALID")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID") from None
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the access token's roles are malformed", reason="TOKEN_INVALID")
        principal = Principal(
            subject=str(claims["sub"]),
            roles=frozenset(roles),
            store=str(claims.get("store", "")),
            session=str(claims.get("sid", "")),
            token_channel=str(claims.get("ch", "")),
        )
        return principal, float(claims["exp"]), kid
