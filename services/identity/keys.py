"""Identity's token signing keys (Ed25519): which key signs, which keys are published in the JWKS.

Two sources, chosen at start-up:

- ``DirectoryKeyRing`` (production): every ``*.pem`` (PKCS#8 Ed25519 private key) in
  ``OMNI_JWT_PRIVATE_KEYS_DIR``, a mounted Kubernetes Secret. The newest by file name signs;
  all are published. Rotation: add a file whose name sorts last (e.g. ``2026-12-01.pem``),
  wait until every verifier has refetched the JWKS, then remove the old file once the tokens
  it signed have expired (access-token TTL). The directory is re-read periodically, so the
  Secret can change without a restart. The ``kid`` is the file name without ``.pem``.
- ``DatabaseKeyRing`` (local mode): keys generated on demand and kept in identity's own
  ``identity_signing_keys`` table (unencrypted: acceptable for a developer's machine only),
  rotated when the current key is older than OMNI_IDENTITY_SIGNING_KEY_ROTATE_SECONDS. The
  previous key stays published until every token it can have signed has expired.

Either ring is also identity's own ``KeySource``: identity verifies tokens with the keys it
holds in memory, never by calling its own JWKS. An unknown ``kid`` makes the ring re-read its
source (rate-limited), so a key another replica just created is found at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete, select, text, update

from omni_runtime.auth.tokens import LEEWAY_SECONDS, SigningKey
from omni_runtime.db.engine import Database
from services.identity import metrics, store

log = logging.getLogger("omni.identity.keys")

# Serialises rotation across identity replicas sharing one database.
ROTATION_LOCK_ID = 0x1D0E7


class KeyRing(ABC):
    """The signing key and every key still needed to verify unexpired tokens."""

    #: How often ``run`` re-reads the source and rotates if due.
    refresh_interval: float = 60.0
    #: Minimum seconds between re-reads triggered by unknown kids (forged kids cost nothing).
    min_reload_interval: float = 0.25

    def __init__(self) -> None:
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey | None = None
        self._last_reload = float("-inf")
        self._lock = asyncio.Lock()

    # -- what the service uses ----------------------------------------------------------------

    def current(self) -> SigningKey:
        if self._current is None:
            raise RuntimeError("the key ring has not been loaded")
        return self._current

    def jwks(self) -> list[dict[str, str]]:
        """Every published public key as a JWK, the signing key first."""
        current = self.current()
        others = [k for kid, k in sorted(self._keys.items()) if kid != current.kid]
        return [key.jwk() for key in (current, *others)]

    def kids(self) -> list[str]:
        return sorted(self._keys)

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        """KeySource: the public key for ``kid``; an unknown kid triggers one rate-limited reload."""
        found = self._keys.get(kid)
        if found is None and time.monotonic() - self._last_reload >= self.min_reload_interval:
            await self.reload()
            found = self._keys.get(kid)
        return found.private_key.public_key() if found is not None else None

    async def reload(self) -> None:
        async with self._lock:
            keys, current = await self._load()
            self._install(keys, current)

    def _install(self, keys: Mapping[str, SigningKey], current: SigningKey) -> None:
        self._keys = dict(keys)
        self._current = current
        self._last_reload = time.monotonic()
        # Set on every load (start-up, refresh, rotation), not when the JWKS is first fetched:
        # a gauge that reads 0 until someone asks for the keys pages the on-call at every start.
        metrics.SIGNING_KEYS.set(len(self._keys))

    async def run(self) -> None:
        """Background loop: keep the ring in step with its source (and rotate when due)."""
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.maintain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("signing keys could not be refreshed: %s", exc)

    async def maintain(self) -> None:
        await self.reload()

    @abstractmethod
    async def _load(self) -> tuple[dict[str, SigningKey], SigningKey]:
        """Read the source: every live key and the one that signs."""


def load_pem(data: bytes, kid: str) -> SigningKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key {kid!r} is not an Ed25519 private key")
    return SigningKey(kid, key)


def pem_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_new_key(directory: Path, name: str) -> Path:
    """Create ``<directory>/<name>.pem`` with a fresh Ed25519 key (for operators and tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pem"
    path.write_bytes(pem_bytes(Ed25519PrivateKey.generate()))
    path.chmod(0o600)
    return path


class DirectoryKeyRing(KeyRing):
    """Keys from PEM files in a directory (a Kubernetes Secret mount)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    async def _load(self) -> tuple[dict[str, SigningKey], SigningKey]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> tuple[dict[str, SigningKey], SigningKey]:
        # Kubernetes mounts Secret keys as symlinks into a hidden ``..data`` folder; glob skips
        # the hidden entries and follows the visible links.
        files = sorted(p for p in self.directory.glob("*.pem") if not p.name.startswith("."))
        if not files:
            raise RuntimeError(f"no *.pem signing keys in {self.directory}")
        keys = {p.stem: load_pem(p.read_bytes(), p.stem) for p in files}
        return keys, keys[files[-1].stem]


class DatabaseKeyRing(KeyRing):
    """Keys generated and rotated by identity itself, kept in its database (local mode)."""

    def __init__(self, db: Database, *, rotate_after: timedelta, verify_window: timedelta) -> None:
        """``verify_window``: how long a superseded key stays published (longest token TTL)."""
        super().__init__()
        self.db = db
        self.rotate_after = rotate_after
        self.verify_window = verify_window + timedelta(seconds=LEEWAY_SECONDS)
        self.refresh_interval = max(1.0, min(60.0, rotate_after.total_seconds() / 4))

    async def _load(self) -> tuple[dict[str, SigningKey], SigningKey]:
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(store.signing_keys)
                    .where(
                        (store.signing_keys.c.retire_time.is_(None))
                        | (store.signing_keys.c.retire_time > datetime.now(UTC))
                    )
                    .order_by(store.signing_keys.c.create_time, store.signing_keys.c.kid)
                )
            ).all()
        if not rows:
            raise LookupError("no signing key yet")
        keys: dict[str, SigningKey] = {}
        for row in rows:
            private = serialization.load_der_private_key(row.private_key, password=None)
            assert isinstance(private, Ed25519PrivateKey)
            keys[row.kid] = SigningKey(row.kid, private)
        return keys, keys[rows[-1].kid]

    async def start(self) -> None:
        """Load the keys, creating or rotating the signing key if needed."""
        await self.rotate(force=False)

    async def maintain(self) -> None:
        await self.rotate(force=False)

    async def rotate(self, *, force: bool = True) -> SigningKey:
        """Make a new signing key if the current one is due (or ``force``); the old one stays live.

        Safe to call from several replicas at once: an advisory lock serialises them and the
        second finds the key the first created.
        """
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ROTATION_LOCK_ID})
            newest = (
                await session.execute(
                    select(store.signing_keys.c.kid, store.signing_keys.c.create_time)
                    .where(store.signing_keys.c.retire_time.is_(None))
                    .order_by(store.signing_keys.c.create_time.desc())
                    .limit(1)
                )
            ).first()
            due = newest is None or now - newest.create_time >= self.rotate_after
            if force or due:
                fresh = SigningKey.generate()
                await session.execute(
                    update(store.signing_keys)
                    .where(store.signing_keys.c.retire_time.is_(None))
                    .values(retire_time=now + self.verify_window)
                )
                await session.execute(
                    store.signing_keys.insert().values(
                        kid=fresh.kid,
                        private_key=fresh.private_key.private_bytes(
                            serialization.Encoding.DER,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption(),
                        ),
                        create_time=now,
                    )
                )
                log.info("new token signing key %s", fresh.kid)
            await session.execute(
                delete(store.signing_keys).where(store.signing_keys.c.retire_time <= now - timedelta(days=1))
            )
        await self.reload()
        return self.current()
