"""Seeding large data sets for benchmarks: one real row (made through the API) copied many times
in one SQL statement, so 100,000 rows take seconds and look like what the service writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, text

from omni_runtime.db.engine import Database


async def clone(
    database_url: str,
    table: Table,
    where: str,
    count: int,
    overrides: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
) -> None:
    """Insert ``count`` copies of the row of ``table`` matching ``where`` (SQL on alias ``t``).

    ``overrides`` gives SQL expressions for columns that must differ per copy; ``g`` is the
    copy's number (1..count), e.g. ``{"customer": "'bench-' || g"}``.
    """
    columns = [c.name for c in table.c]
    unknown = set(overrides) - set(columns)
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    chosen = ", ".join(overrides.get(c, f"t.{c}") for c in columns)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {chosen} FROM {table.name} t, generate_series(1, :count) g WHERE {where}"
    )
    db = Database(database_url, pool_size=1, max_overflow=0)
    try:
        async with db.transaction() as session:
            await session.execute(text(sql), {"count": count, **(params or {})})
            await session.execute(text(f"ANALYZE {table.name}"))
    finally:
        await db.close()


async def explain(database_url: str, sql: str, params: Mapping[str, Any]) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of one read: the plan lines, for the bench's notes."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    try:
        async with db.read() as conn:
            rows = await conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"), dict(params))
            return [str(r[0]) for r in rows]
    finally:
        await db.close()
