"""List queries: a small AIP-160 filter language, ``order_by`` and opaque page tokens.

Filter grammar (deliberately small; anything else is INVALID_ARGUMENT naming ``filter``)::

    filter     := comparison ( "AND" comparison )*
    comparison := FIELD OP VALUE
    OP         := "=" | "!=" | "<" | "<=" | ">" | ">="
    VALUE      := "quoted string" | integer | true | false | ENUM_VALUE_NAME

Strings, names, booleans and enums accept ``=`` and ``!=``; numbers and timestamps (RFC 3339
strings such as ``"2025-01-01T00:00:00Z"``) accept every operator. Each list declares its own
fields; an unknown field is refused rather than ignored, so a typo never widens a result.

Page tokens are keyset tokens: the sort key of the last row returned, plus a fingerprint of the
query they belong to. They are opaque (base64) and checked: a token edited by hand, or reused
with another filter or order, is refused instead of silently returning the wrong page.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from omni_runtime.errors import FieldViolation, InvalidArgument
from services.inventory.domain import DOMAIN


class Kind(enum.Enum):
    STRING = "string"
    INT = "integer"
    BOOL = "boolean"
    ENUM = "enum"
    TIMESTAMP = "timestamp"


_ORDERED = frozenset({"=", "!=", "<", "<=", ">", ">="})
_EQUALITY = frozenset({"=", "!="})


@dataclass(frozen=True, slots=True)
class Field:
    kind: Kind
    # The generated enum wrapper (``Value(name)``, ``keys()``) of an ENUM field.
    enum: Any = None

    @property
    def operators(self) -> frozenset[str]:
        return _ORDERED if self.kind in (Kind.INT, Kind.TIMESTAMP) else _EQUALITY


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str
    value: str | int | bool | datetime


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<number>-?\d+)(?![\w.])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


def _bad(field: str, description: str, reason: str = "INVALID_FILTER") -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description, reason)], domain=DOMAIN)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _bad("filter", f"unexpected character at position {pos}: {text[pos : pos + 10]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def parse_timestamp(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _value(name: str, spec: Field, kind: str, raw: str) -> str | int | bool | datetime:
    if kind == "string":
        text = json.loads(raw) if "\\" in raw else raw[1:-1]
        if spec.kind is Kind.STRING:
            return str(text)
        if spec.kind is Kind.TIMESTAMP:
            stamp = parse_timestamp(str(text))
            if stamp is None:
                raise _bad("filter", f'{name} takes an RFC 3339 time such as "2025-01-01T00:00:00Z"')
            return stamp
    elif kind == "number" and spec.kind is Kind.INT:
        number = int(raw)
        if not -(2**31) <= number < 2**31:
            raise _bad("filter", f"{name}: {raw} is out of range")
        return number
    elif kind == "word":
        if spec.kind is Kind.BOOL and raw in ("true", "false"):
            return raw == "true"
        if spec.kind is Kind.ENUM and spec.enum is not None:
            try:
                return int(spec.enum.Value(raw))
            except ValueError:
                pass
            names = ", ".join(spec.enum.keys()[1:])
            raise _bad("filter", f"{name} takes one of {names}")
    raise _bad("filter", f"{name} takes a {spec.kind.value} value, not {raw}")


def parse_filter(
    text: str, fields: Mapping[str, Field], *, prefixes: Mapping[str, Field] | None = None
) -> list[Condition]:
    """The conditions of ``text`` (joined by AND); INVALID_ARGUMENT on anything unknown."""
    if not text.strip():
        return []
    if len(text) > 2000:
        raise _bad("filter", "must be at most 2000 characters")
    tokens = _tokens(text)
    out: list[Condition] = []
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise _bad("filter", "expected `field operator value`")
        (k1, name), (k2, op), (k3, raw) = tokens[i : i + 3]
        if k1 != "word" or k2 != "op":
            raise _bad("filter", f"expected `field operator value` near {name!r}")
        spec = fields.get(name)
        if spec is None:
            for prefix, prefixed in (prefixes or {}).items():
                key = name.removeprefix(prefix)
                if name.startswith(prefix) and re.fullmatch(r"[a-z][a-z0-9_]*", key):
                    spec = prefixed
                    break
        if spec is None:
            known = ", ".join([*sorted(fields), *(f"{p}<key>" for p in prefixes or {})])
            raise _bad("filter", f"unknown field {name!r}; filterable fields are {known}")
        if op not in spec.operators:
            raise _bad("filter", f"{name} supports only {', '.join(sorted(spec.operators))}")
        out.append(Condition(name, op, _value(name, spec, k3, raw)))
        i += 3
        if i == len(tokens):
            return out
        if tokens[i] != ("word", "AND"):
            raise _bad("filter", "comparisons must be joined by AND (OR and parentheses are not supported)")
        i += 1


def parse_order_by(
    text: str, allowed: Sequence[str], default: Sequence[tuple[str, bool]]
) -> list[tuple[str, bool]]:
    """``"title desc, name"`` → ``[("title", True), ("name", False)]``; INVALID_ARGUMENT if unknown."""
    if not text.strip():
        return list(default)
    out: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise _bad(
                "order_by", f"cannot parse {part.strip()!r}; use `field` or `field desc`", "INVALID_ORDER_BY"
            )
        if words[0] not in allowed:
            raise _bad(
                "order_by",
                f"cannot order by {words[0]!r}; use one of {', '.join(allowed)}",
                "INVALID_ORDER_BY",
            )
        if any(words[0] == f for f, _ in out):
            raise _bad("order_by", f"{words[0]} is named twice", "INVALID_ORDER_BY")
        out.append((words[0], len(words) == 2 and words[1] == "desc"))
    return out


def query_fingerprint(*parts: object) -> str:
    """What a page token is bound to: the parent, filter and order of its query."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _encode_value(value: object) -> object:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(value: object) -> object:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        stamp = parse_timestamp(value["t"])
        if stamp is None:
            raise ValueError("bad timestamp")
        return stamp
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError("bad key")


def encode_page_token(keys: Sequence[object], fingerprint: str) -> str:
    body = json.dumps({"k": [_encode_value(v) for v in keys], "q": fingerprint}, separators=(",", ":"))
    check = hashlib.sha256(body.encode()).hexdigest()[:8]
    return base64.urlsafe_b64encode(f"{check}{body}".encode()).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str, width: int) -> list[object] | None:
    """The sort key a token carries (None for no token); INVALID_ARGUMENT if it was tampered with."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        check, body = raw[:8], raw[8:]
        if hashlib.sha256(body.encode()).hexdigest()[:8] != check:
            raise ValueError("checksum")
        data = json.loads(body)
        keys = [_decode_value(v) for v in data["k"]]
        if data["q"] != fingerprint:
            raise _bad(
                "page_token",
                "belongs to a different query; keep the filter and order of the first page",
                "INVALID_PAGE_TOKEN",
            )
        if len(keys) != width:
            raise ValueError("width")
    except InvalidArgument:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _bad("page_token", "is not a page token this server issued", "INVALID_PAGE_TOKEN") from None
    return keys
