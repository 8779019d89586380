"""The database of one service: an async SQLAlchemy engine over asyncpg and its sessions."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from sqlalchemy import Table, event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

from omni_runtime import metrics
from omni_runtime.db import bulk

# What query helpers read through: a transaction's session or a ``Database.read`` connection.
Reader = AsyncSession | AsyncConnection

_AFTER_COMMIT = "omni_after_commit"
_DEFERRED = "omni_deferred_inserts"
_DEFERRED_SQL = "omni_deferred_statements"


def defer_insert(session: AsyncSession, table: Table, rows: bulk.Rows) -> None:
    """Insert ``rows`` into ``table`` at the end of the transaction, together with every other
    deferred insert (and ``idempotency.once``'s stored answer) in one statement.

    For rows nothing reads back in the same transaction: outbox events, ledger movements. A
    transaction that fails never writes them."""
    if rows:
        # Rows of one table (and columns) stay one part, in the order deferred: the parts of one
        # statement run in no defined order, and an outbox row's sequence number is its order.
        pending: dict[tuple[str, tuple[str, ...]], tuple[Table, list[bulk.Row]]] = session.info.setdefault(
            _DEFERRED, {}
        )
        key = (table.name, tuple(rows[0]))
        pending.setdefault(key, (table, []))[1].extend(rows)


def defer_statement(session: AsyncSession, sql: str, params: Mapping[str, Any]) -> None:
    """Run ``sql`` (a write of rows nothing else in the transaction touches afterwards: a cart
    document's final save) with the deferred inserts, in the transaction's last statement."""
    session.info.setdefault(_DEFERRED_SQL, []).append((sql, params))


async def flush_deferred(session: AsyncSession, tail: bulk.Tail | None = None) -> None:
    """Write the deferred inserts and statements now (and run ``tail`` in the same round trip)."""
    parts = list(session.info.pop(_DEFERRED, {}).values())
    statements = session.info.pop(_DEFERRED_SQL, [])
    if parts or statements or tail is not None:
        if tail is None and not parts:  # the last deferred statement closes the round trip
            *statements, tail = statements
        sql, params = bulk.statement(parts, tail, before=statements)
        await session.execute(sql, params)


def after_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run ``callback`` once the transaction of ``session`` (from ``Database.transaction``) has
    committed, and never if it rolls back.

    For effects that must describe only what was really written: counting domain metrics,
    pushing a change to in-process watchers. Code that runs inside a transaction it does not
    own (the work of ``idempotency.once``, a consumer's handler) has no "after" of its own; this
    is it. Callbacks run in the order registered; they must be quick and must not fail.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


class MeasuredPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, timing every wait for a connection.

    The pool's events say when a connection is lent and returned, but not how long a caller
    waited for one; that wait is the whole of ``connect``, so it is measured around it.
    """

    omni_service = ""

    def connect(self) -> PoolProxiedConnection:
        waiting = metrics.DB_POOL_WAITING.labels(self.omni_service)
        waiting.inc()
        start = time.perf_counter()
        try:
            return super().connect()
        except exc.TimeoutError:
            metrics.DB_POOL_TIMEOUTS.labels(self.omni_service).inc()
            raise
        finally:
            waiting.dec()
            metrics.DB_POOL_WAIT_SECONDS.labels(self.omni_service).observe(time.perf_counter() - start)

    def recreate(self) -> MeasuredPool:
        fresh = super().recreate()
        assert isinstance(fresh, MeasuredPool)
        fresh.omni_service = self.omni_service
        return fresh


def _observe_pool(engine: AsyncEngine, service: str) -> None:
    """Export the pool's state as ``omni_db_pool_*{service}``: checked-out connections from the
    pool's checkout/checkin events, idle and maximum connections read from the pool itself."""
    pool = engine.sync_engine.pool
    assert isinstance(pool, MeasuredPool)
    pool.omni_service = service
    checked_out = metrics.DB_POOL_CHECKED_OUT.labels(service)

    def lent(*_: Any) -> None:
        checked_out.inc()

    def returned(*_: Any) -> None:
        checked_out.dec()

    event.listen(pool, "checkout", lent)
    event.listen(pool, "checkin", returned)
    # Read through the engine: dispose() replaces the pool object.
    metrics.DB_POOL_IDLE.labels(service).set_function(lambda: engine.sync_engine.pool.checkedin())  # type: ignore[attr-defined]  # noqa: PLW0108
    limit = pool.size() + max(pool._max_overflow, 0)  # the configured overflow is not exposed
    metrics.DB_POOL_MAX.labels(service).set(limit)
    metrics.initialise(metrics.DB_POOL_TIMEOUTS, [(service,)])
    metrics.initialise(metrics.DB_POOL_WAIT_SECONDS, [(service,)])
    metrics.initialise(metrics.DB_POOL_WAITING, [(service,)])


class Database:
    """Owns the connection pool; hands out sessions whose transaction commits on success.

    ``expire_on_commit=False`` because domain code returns ORM objects after commit to build
    responses; reloading them would cost a round trip per object. With ``service`` set, the
    pool is exported as ``omni_db_pool_*{service}`` metrics.

    No ``pool_pre_ping``: with asyncpg it costs three round trips (BEGIN, a ping, ROLLBACK) on
    every checkout, more than most of the calls it precedes. A connection the server dropped
    instead fails its statement once; SQLAlchemy then invalidates the whole pool (every older
    connection is replaced on its next checkout) and the call answers UNAVAILABLE, which callers
    retry. ``pool_recycle`` still retires connections before server-side idle timeouts.
    """

    def __init__(
        self,
        url: str,
        *,
        service: str = "",
        pool_size: int = 20,
        max_overflow: int = 10,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            poolclass=MeasuredPool,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=1800,
            echo=echo,
        )
        if service:
            _observe_pool(self.engine, service)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # The same pool, its connections in autocommit while lent out for ``read``.
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.
        Deferred inserts (``defer_insert``) are written just before the commit, callbacks
        registered with ``after_commit`` run after it."""
        async with self.sessions() as session:
            async with session.begin():
                yield session
                await flush_deferred(session)
            for callback in session.info.pop(_AFTER_COMMIT, ()):
                callback()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads outside any transaction: no BEGIN and no COMMIT, so a read
        that is one statement costs one round trip (and no ORM session is built for it). Each
        statement sees what was committed when it started; reads that must agree with each
        other belong in one statement or in ``transaction``. Writing through it is a mistake
        (each statement would commit alone). Query helpers that serve both take a ``Reader``."""
        async with self._reader.connect() as connection:
            yield connection

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self.engine.dispose()
