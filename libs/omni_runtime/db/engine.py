"""The database of one service: an async SQLAlchemy engine over asyncpg and its sessions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

_AFTER_COMMIT = "omni_after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run ``callback`` once the transaction of ``session`` (from ``Database.transaction``) has
    committed, and never if it rolls back.

    For effects that must describe only what was really written: counting domain metrics,
    pushing a change to in-process watchers. Code that runs inside a transaction it does not
    own (the work of ``idempotency.once``, a consumer's handler) has no "after" of its own; this
    is it. Callbacks run in the order registered; they must be quick and must not fail.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


class Database:
    """Owns the connection pool; hands out sessions whose transaction commits on success.

    ``expire_on_commit=False`` because domain code returns ORM objects after commit to build
    responses; reloading them would cost a round trip per object.
    """

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10, echo: bool = False) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=True,
            pool_recycle=1800,
            echo=echo,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.
        Callbacks registered with ``after_commit`` run after the commit."""
        async with self.sessions() as session:
            async with session.begin():
                yield session
            for callback in session.info.pop(_AFTER_COMMIT, ()):
                callback()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self.engine.dispose()
