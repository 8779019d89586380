"""A small AIP-160 filter compiler for ListOrders and ListPromotions.

Supports comparisons (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``), the has-operator ``:`` on
repeated fields, ``AND``, ``OR``, ``NOT`` and parentheses, over a fixed set of fields per listing.
Values are quoted strings, enum value names, numbers or ``true``/``false``; timestamps are quoted
RFC 3339. Anything else is INVALID_ARGUMENT naming the filter field, so clients learn at once
what they wrote wrong rather than getting a silently different list.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, not_, or_
from sqlalchemy.sql.elements import ColumnElement

from omni.type.v1 import channel_pb2
from omni_runtime.errors import FieldViolation, InvalidArgument

CHANNEL_ENUM = channel_pb2.Channel
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|=|<|>|:)|(?P<paren>[()])|(?P<word>[A-Za-z0-9_.\-/+]+))'
)
_COMPARE = {"=", "!=", "<", "<=", ">", ">="}


class Kind(enum.Enum):
    TEXT = "text"
    ENUM = "enum"
    BOOL = "bool"
    TIME = "time"
    INT = "int"
    TEXT_ARRAY = "text[]"
    ENUM_ARRAY = "enum[]"


@dataclass(frozen=True)
class Field:
    column: Any
    kind: Kind
    enum: Any = None  # a protobuf EnumTypeWrapper for ENUM kinds


class FilterError(Exception):
    pass


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"unexpected character at position {pos}: {text[pos : pos + 10]!r}")
        kind = match.lastgroup or ""
        out.append(_Token(kind, match.group(kind)))
        pos = match.end()
    return out


class FieldSet:
    """The fields one listing may be filtered on."""

    def __init__(self, fields: dict[str, Field]) -> None:
        self.fields = fields

    def compile(self, text: str, field_name: str = "filter") -> list[ColumnElement[bool]]:
        """SQL conditions for a filter (empty list for an empty filter)."""
        if not text.strip():
            return []
        try:
            parser = _Parser(_tokens(text), self.fields)
            condition = parser.expression()
            if parser.pos != len(parser.tokens):
                raise FilterError(f"unexpected {parser.tokens[parser.pos].text!r}")
        except FilterError as exc:
            raise InvalidArgument(
                [
                    FieldViolation(
                        field_name,
                        f"{exc}; filterable fields: {', '.join(sorted(self.fields))}",
                        "INVALID_FILTER",
                    )
                ]
            ) from None
        return [condition]


class _Parser:
    def __init__(self, tokens: list[_Token], fields: dict[str, Field]) -> None:
        self.tokens = tokens
        self.fields = fields
        self.pos = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise FilterError("the filter ends too early")
        self.pos += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text == word:
            self.pos += 1
            return True
        return False

    def expression(self) -> ColumnElement[bool]:
        parts = [self._conjunction()]
        while self._keyword("OR"):
            parts.append(self._conjunction())
        return parts[0] if len(parts) == 1 else or_(*parts)

    def _conjunction(self) -> ColumnElement[bool]:
        parts = [self._term()]
        while True:
            if self._keyword("AND"):
                parts.append(self._term())
                continue
            token = self._peek()
            # AIP-160: juxtaposition means AND.
            if (
                token is not None
                and ((token.kind == "paren" and token.text == "(") or token.kind == "word")
                and (token.text not in ("OR", "AND"))
            ):
                parts.append(self._term())
                continue
            break
        return parts[0] if len(parts) == 1 else and_(*parts)

    def _term(self) -> ColumnElement[bool]:
        if self._keyword("NOT"):
            return not_(self._term())
        token = self._next()
        if token.kind == "op" and token.text == "-":
            return not_(self._term())
        if token.kind == "paren" and token.text == "(":
            inner = self.expression()
            closing = self._next()
            if closing.text != ")":
                raise FilterError("missing ')'")
            return inner
        if token.kind != "word":
            raise FilterError(f"expected a field name, got {token.text!r}")
        field = self.fields.get(token.text)
        if field is None:
            raise FilterError(f"unknown field {token.text!r}")
        op = self._next()
        if op.kind != "op":
            raise FilterError(f"expected an operator after {token.text}")
        value = self._next()
        if value.kind not in ("str", "word"):
            raise FilterError(f"expected a value after {token.text} {op.text}")
        return _condition(token.text, field, op.text, _unquote(value))


def _unquote(token: _Token) -> str:
    if token.kind == "str":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    return token.text


def _enum_value(name: str, field: Field, value: str) -> int:
    wrapper = field.enum
    try:
        return int(value) if value.isdigit() else int(wrapper.Value(value))
    except ValueError:
        raise FilterError(f"{value!r} is not a value of {name}") from None


def _condition(name: str, field: Field, op: str, value: str) -> ColumnElement[bool]:
    col = field.column
    if field.kind in (Kind.TEXT_ARRAY, Kind.ENUM_ARRAY):
        if op not in (":", "="):
            raise FilterError(f"{name} is repeated: use {name}:<value>")
        element: Any = value if field.kind is Kind.TEXT_ARRAY else _enum_value(name, field, value)
        return col.contains([element])  # type: ignore[no-any-return]
    if op == ":":
        op = "="
    if field.kind is Kind.TIME:
        try:
            typed: Any = datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(f"{name} needs an RFC 3339 time in quotes, got {value!r}") from None
        if typed.tzinfo is None:
            raise FilterError(f"{name}: the time needs a zone (Z or an offset)")
    elif field.kind is Kind.ENUM:
        typed = _enum_value(name, field, value)
    elif field.kind is Kind.BOOL:
        if value not in ("true", "false"):
            raise FilterError(f"{name} is true or false")
        typed = value == "true"
    elif field.kind is Kind.INT:
        try:
            typed = int(value)
        except ValueError:
            raise FilterError(f"{name} needs an integer") from None
    else:
        typed = value
    if field.kind in (Kind.ENUM, Kind.BOOL, Kind.TEXT) and op not in ("=", "!="):
        raise FilterError(f"{name} supports only = and !=")
    if op not in _COMPARE:
        raise FilterError(f"unknown operator {op!r}")
    ops = {
        "=": col.__eq__,
        "!=": col.__ne__,
        "<": col.__lt__,
        "<=": col.__le__,
        ">": col.__gt__,
        ">=": col.__ge__,
    }
    return ops[op](typed)  # type: ignore[no-any-return]
