"""The runtime's Database against PostgreSQL: reads outside transactions, and what a dropped
connection costs now that the pool does not ping before every checkout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from omni_runtime import errors
from omni_runtime.db.engine import Database
from omni_runtime.interceptors.errors import translate


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2)
    yield database
    await database.close()


async def test_each_statement_of_a_read_is_its_own_transaction(db: Database) -> None:
    async with db.read() as session:
        first = (await session.execute(text("SELECT txid_current()"))).scalar_one()
        second = (await session.execute(text("SELECT txid_current()"))).scalar_one()
    assert first != second  # autocommit: no BEGIN held the two together
    async with db.transaction() as session:
        one = (await session.execute(text("SELECT txid_current()"))).scalar_one()
        two = (await session.execute(text("SELECT txid_current()"))).scalar_one()
    assert one == two


async def test_a_read_sees_what_was_committed_and_leaves_its_connection_in_transaction_mode(
    db: Database,
) -> None:
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS read_probe (v int)"))
        await session.execute(text("INSERT INTO read_probe VALUES (7)"))
    async with db.read() as session:
        assert (await session.execute(text("SELECT max(v) FROM read_probe"))).scalar_one() == 7
    # The pooled connection is back in transaction mode: a failed transaction writes nothing.
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO read_probe VALUES (8)"))
            raise ZeroDivisionError
    async with db.read() as session:
        assert (await session.execute(text("SELECT max(v) FROM read_probe"))).scalar_one() == 7


async def test_a_dropped_connection_fails_one_call_as_unavailable_then_the_pool_recovers(
    db: Database, database_url: str
) -> None:
    async with db.read() as session:  # a pooled connection now exists
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    other = Database(database_url)
    try:
        async with other.read() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.close()
    with pytest.raises(Exception) as failed:  # whatever asyncpg raises for a dead socket
        async with db.read() as session:
            await session.execute(text("SELECT 1"))
    assert isinstance(translate(failed.value), errors.Unavailable)
    async with db.read() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
