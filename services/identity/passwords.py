"""Argon2id password and client-secret hashing, off the event loop.

Hashing is deliberately slow (tens of milliseconds, tens of MiB); done on the event loop it
would stall every other call of the process, so it runs in the default thread pool (the
argon2 C code releases the GIL). Unknown accounts are "verified" against a dummy hash made
with the same parameters, so a log-in for an account that does not exist costs the same time
as one for an account that does.

At most ``cpu_count // parallelism`` hashes run at once (each uses ``parallelism`` threads);
the rest wait their turn. Letting every concurrent log-in start its own hash would only make
them all slower together, thrash memory (64 MiB each) and starve the event loop's thread.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.identity import metrics
from services.identity.config import IdentityConfig

T = TypeVar("T")


class Passwords:
    def __init__(self, config: IdentityConfig) -> None:
        self._hasher = PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            type=Type.ID,
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._slots = asyncio.Semaphore(max(1, (os.cpu_count() or 1) // config.argon2_parallelism))

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        async with self._slots:
            return await asyncio.to_thread(func, *args)

    def hash_sync(self, secret: str) -> str:
        return self._hasher.hash(secret)

    async def hash(self, secret: str) -> str:
        started = time.perf_counter()
        try:
            return await self._run(self._hasher.hash, secret)
        finally:
            metrics.PASSWORD_HASH_SECONDS.labels("hash").observe(time.perf_counter() - started)

    def _verify(self, stored: str | None, secret: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, secret) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, secret: str) -> bool:
        """True when ``secret`` matches ``stored``; with ``stored`` None, burns the same time."""
        started = time.perf_counter()
        try:
            return await self._run(self._verify, stored, secret)
        finally:
            metrics.PASSWORD_HASH_SECONDS.labels("verify").observe(time.perf_counter() - started)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters (they were raised since)."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True
