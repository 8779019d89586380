"""List methods' filter (AIP-160 subset), order_by (AIP-132) and page tokens (AIP-158).

The filter language supported is a conjunction of comparisons, which covers what the
identity contract documents: ``state = STATE_ACTIVE AND create_time > "2026-01-01T00:00:00Z"``,
``roles:ROLE_AGENT AND store = "locations/s1"``. Operators ``= != < <= > >=`` and ``:`` (has,
for repeated fields); values are enum names, ``true``/``false``, numbers or quoted strings
(RFC 3339 for timestamps). ``OR``, ``NOT`` and parentheses answer INVALID_ARGUMENT with a clear
message rather than being misread.

Page tokens are opaque to callers: an offset plus a fingerprint of the filter and ordering,
so a token cannot be replayed against a different query.
"""

from __future__ import annotations

import base64
import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, any_, literal

from omni_runtime.errors import FieldViolation, InvalidArgument

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|=|<|>|:)|(?P<word>[A-Za-z0-9_.\-+/@*]+)|(?P<bad>\S))"""
)


@dataclass(frozen=True, slots=True)
class FilterField:
    """How one filterable field maps to SQL.

    ``kind``: "enum" (``enum_names`` maps names to numbers), "bool", "str", "time", or
    "array_enum"/"array_str" for repeated fields (only ``:`` applies).
    """

    column: Any
    kind: str
    enum_names: Mapping[str, int] | None = None
    # Turns an enum number into the stored value (e.g. role numbers to role names).
    to_stored: Callable[[int], Any] | None = None


_COMPARE: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("filter", message, "INVALID_FILTER")])


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            continue
        value = match.group(kind)
        if kind == "bad":
            raise _bad(f"unexpected character {value!r}")
        out.append((kind, value))
    return out


def _value(field: FilterField, name: str, raw_kind: str, raw: str) -> Any:
    text = json.loads(raw) if raw_kind == "str" else raw
    if field.kind in ("enum", "array_enum"):
        assert field.enum_names is not None
        if text not in field.enum_names:
            raise _bad(f"{name} must be one of {', '.join(sorted(field.enum_names))}")
        number = field.enum_names[text]
        return field.to_stored(number) if field.to_stored else number
    if field.kind == "bool":
        if text not in ("true", "false"):
            raise _bad(f"{name} must be true or false")
        return text == "true"
    if field.kind == "time":
        try:
            return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise _bad(f"{name} must be an RFC 3339 timestamp in quotes") from None
    return str(text)


def parse_filter(text: str, fields: Mapping[str, FilterField]) -> tuple[list[ColumnElement[bool]], set[str]]:
    """SQL conditions for ``text`` and the set of field names it mentions."""
    tokens = _tokens(text)
    conditions: list[ColumnElement[bool]] = []
    mentioned: set[str] = set()
    i = 0
    while i < len(tokens):
        if conditions:
            if tokens[i] != ("word", "AND"):
                raise _bad("conditions must be joined with AND (OR and NOT are not supported)")
            i += 1
        if len(tokens) - i < 3:
            raise _bad("expected <field> <operator> <value>")
        (k1, name), (k2, op), (k3, raw) = tokens[i], tokens[i + 1], tokens[i + 2]
        i += 3
        if k1 != "word" or k2 != "op" or k3 not in ("word", "str"):
            raise _bad("expected <field> <operator> <value>")
        field = fields.get(name)
        if field is None:
            raise _bad(f"cannot filter on {name!r}; filterable fields: {', '.join(sorted(fields))}")
        mentioned.add(name)
        value = _value(field, name, k3, raw)
        column = field.column
        if field.kind.startswith("array"):
            if op != ":":
                raise _bad(f"{name} is repeated; use {name}:<value>")
            conditions.append(literal(value) == any_(column))
            continue
        if op == ":":
            op = "="
        if field.kind in ("enum", "bool") and op not in ("=", "!="):
            raise _bad(f"{name} supports only = and !=")
        conditions.append(_COMPARE[op](column, value))
    return conditions, mentioned


def parse_order(text: str, fields: Mapping[str, Any], default: str) -> list[Any]:
    """ORDER BY clauses for an AIP-132 ``order_by`` (``field [desc], …``)."""
    clauses: list[Any] = []
    for part in (text or default).split(","):
        words = part.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise InvalidArgument(
                [FieldViolation("order_by", f"cannot parse {part.strip()!r}", "INVALID_ORDER")]
            )
        column = fields.get(words[0])
        if column is None:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "order_by",
                        f"cannot order by {words[0]!r}; use one of {', '.join(sorted(fields))}",
                        "INVALID_ORDER",
                    )
                ]
            )
        descending = len(words) == 2 and words[1].lower() == "desc"
        clauses.append(column.desc() if descending else column.asc())
    return clauses


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def encode_page_token(offset: int, *query: str) -> str:
    payload = json.dumps({"o": offset, "q": _fingerprint(*query)}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(token: str, *query: str) -> int:
    """The offset a page token stands for; INVALID_ARGUMENT if it is foreign or forged."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = int(data["o"])
        same = data["q"] == _fingerprint(*query)
    except (ValueError, KeyError, TypeError):
        same, offset = False, 0
    if not same or offset < 0:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token of this query", "INVALID_PAGE_TOKEN")]
        )
    return offset
