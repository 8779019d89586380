"""Many rows into several tables in one round trip, with SQL text that does not depend on the
number of rows.

A multi-row ``INSERT … VALUES (…), (…)`` has one text per row count, and with asyncpg every new
text is prepared before it runs (one more round trip) and crowds the per-connection statement
cache. Here each column travels as one array and ``unnest`` turns the arrays back into rows, so
the text depends only on the tables and columns: prepared once per connection, whatever the
count. Several tables go into one statement as data-modifying CTEs (``WITH a AS (INSERT …)
INSERT …``): the movements of a ledger change and their outbox events, for one round trip.

Only for plain inserts that do not depend on each other (PostgreSQL runs the parts of one
statement in no defined order), plus statements of any kind on other rows (``before``, each
with parameters of its own) and one last statement (``tail``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

Row = Mapping[str, Any]
Rows = Sequence[Row]


def _sql_type(table: Table, name: str) -> str:
    return str(table.c[name].type.compile(dialect=_DIALECT)).lower()


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type, JSON)


# A statement of its own to run last in the same round trip: (SQL text, its parameters), its
# parameter names distinct from the parts' (``p<n>_<column>``).
Tail = tuple[str, Mapping[str, Any]]


def statement(
    parts: Sequence[tuple[Table, Rows]], tail: Tail | None = None, *, before: Sequence[Tail] = ()
) -> tuple[TextClause, dict[str, Any]]:
    """The one statement inserting every part's rows (then running ``tail``), and its
    parameters. Every row of a part has the same keys (the columns written); parts without rows
    are left out."""
    pieces: list[str] = []
    params: dict[str, Any] = {}
    for index, (table, rows) in enumerate(p for p in parts if p[1]):
        columns = list(rows[0])
        arrays = []
        for column in columns:
            key = f"p{index}_{column}"
            values = [row[column] for row in rows]
            if _is_json(table, column):
                # JSON travels as text (one codec for every driver) and is cast back per row.
                params[key] = [None if v is None else json.dumps(v) for v in values]
                arrays.append(f"CAST(:{key} AS text[])")
            else:
                params[key] = values
                arrays.append(f"CAST(:{key} AS {_sql_type(table, column)}[])")
        selected = ", ".join(
            f"CAST(u.{c} AS {_sql_type(table, c)})" if _is_json(table, c) else f"u.{c}" for c in columns
        )
        # Names come from the Table's metadata (unknown ones raise above), values are bound.
        pieces.append(
            f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
            f"SELECT {selected} FROM unnest({', '.join(arrays)}) AS u({', '.join(columns)})"
        )
    for index, (sql, bound) in enumerate(before):
        pieces.append(_renamed(sql, f"s{index}_"))
        params.update({f"s{index}_{k}": v for k, v in bound.items()})
    if tail is not None:
        pieces.append(tail[0])
        params.update(tail[1])
    if not pieces:
        raise ValueError("nothing to insert")
    *first, last = pieces
    ctes = ", ".join(f"w{i} AS ({piece})" for i, piece in enumerate(first))
    return text(f"WITH {ctes} {last}" if ctes else last), params


def _renamed(sql: str, prefix: str) -> str:
    """``sql`` with every ``:name`` parameter renamed ``:<prefix>name`` (``::type`` casts kept)."""
    return re.sub(r"(?<![:\w]):(\w+)", lambda m: f":{prefix}{m.group(1)}", sql)


async def insert_all(session: AsyncSession, parts: Sequence[tuple[Table, Rows]]) -> None:
    """Insert every part's rows in one statement (nothing happens when there are none)."""
    if any(rows for _, rows in parts):
        sql, params = statement(parts)
        await session.execute(sql, params)
