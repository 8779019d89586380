"""The segment rule language (the contract's SegmentRule.filter): AIP-160 over a Profile.

Grammar::

    expr       := term ( "OR" term )*
    term       := factor ( "AND"? factor )*        (juxtaposition is AND, as in AIP-160)
    factor     := "NOT" factor | "-" factor | "(" expr ")" | comparison
    comparison := FIELD OP VALUE | "days_since(" FIELD ")" OP INTEGER
    OP         := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"

Unlike list filters (``omni_runtime.listing``, AND only), rules need OR, NOT and parentheses
("VIPs or big spenders") and the ``days_since`` function, so they have their own small parser;
values are typed the same way (quoted strings, integers, enum value names, quoted RFC 3339
times). The parsed rule is a tree that ``segments.py`` compiles to one SQL predicate, so a
rule is evaluated by PostgreSQL for one profile (incremental updates) or all (recompute).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime.listing import parse_timestamp

MAX_RULE_LENGTH = 4000
MAX_DEPTH = 20


class RuleError(ValueError):
    """The rule does not parse or names something unknown; the message says what."""


class Type(enum.Enum):
    STRING = "a quoted string"
    INT = "an integer"
    NUMBER = "a number"
    ENUM = "an enum value name"
    TIMESTAMP = 'a quoted RFC 3339 time such as "2026-01-01T00:00:00Z"'


@dataclass(frozen=True)
class FieldSpec:
    type: Type
    has: bool = False  # a repeated field: only ``:``
    enum: dict[str, int] | None = None


def _names(descriptor: object) -> dict[str, int]:
    values = getattr(descriptor, "values")  # noqa: B009 - an EnumDescriptor
    return {v.name: v.number for v in values if v.number}


FIELDS: dict[str, FieldSpec] = {
    "given_name": FieldSpec(Type.STRING),
    "family_name": FieldSpec(Type.STRING),
    "display_name": FieldSpec(Type.STRING),
    "language_code": FieldSpec(Type.STRING),
    "birthday.month": FieldSpec(Type.INT),
    "birthday.day": FieldSpec(Type.INT),
    "state": FieldSpec(Type.ENUM, enum=_names(r.Profile.State.DESCRIPTOR)),
    "contact_points.kind": FieldSpec(Type.ENUM, has=True, enum=_names(r.ContactPoint.Kind.DESCRIPTOR)),
    "lifetime.order_count": FieldSpec(Type.INT),
    "lifetime.first_purchase_time": FieldSpec(Type.TIMESTAMP),
    "lifetime.last_purchase_time": FieldSpec(Type.TIMESTAMP),
    "lifetime.last_interaction_time": FieldSpec(Type.TIMESTAMP),
    "lifetime.average_days_between_purchases": FieldSpec(Type.NUMBER),
    "lifetime.channels_used.channel": FieldSpec(
        Type.ENUM, has=True, enum=_names(channel_pb2.Channel.DESCRIPTOR)
    ),
}
TRAIT_PREFIX = "traits."
SPEND_PREFIX = "lifetime.total_spend."
TIMESTAMP_FIELDS = tuple(name for name, spec in FIELDS.items() if spec.type is Type.TIMESTAMP)
_ORDERED = ("=", "!=", "<", "<=", ">", ">=")

Value: TypeAlias = str | int | float | datetime


@dataclass(frozen=True)
class Compare:
    field: str  # as written: "traits.vip", "lifetime.total_spend.EUR"
    op: str
    value: Value


@dataclass(frozen=True)
class DaysSince:
    field: str  # a timestamp field
    op: str
    days: int


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class All:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    operands: tuple[Node, ...]


Node: TypeAlias = Compare | DaysSince | Not | All | Any_

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|!=|=|<|>|:)
      | (?P<number>-?\d+(?:\.\d+)?)(?![\w.])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<paren>[()])
      | (?P<minus>-)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise RuleError(f"unexpected character at position {at}: {text[at : at + 10]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.i += 1
        return token

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"nested more than {MAX_DEPTH} levels deep")
        terms = [self.term()]
        while self.peek() == ("word", "OR"):
            self.take()
            terms.append(self.term())
        self.depth -= 1
        return terms[0] if len(terms) == 1 else Any_(tuple(terms))

    def term(self) -> Node:
        factors = [self.factor()]
        while True:
            token = self.peek()
            if token == ("word", "AND"):
                self.take()
            elif token[0] == "end" or token in (("paren", ")"), ("word", "OR")):
                break
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else All(tuple(factors))

    def factor(self) -> Node:
        kind, text = self.peek()
        if (kind, text) == ("word", "NOT") or kind == "minus":
            self.take()
            return Not(self.factor())
        if (kind, text) == ("paren", "("):
            self.take()
            inner = self.expr()
            if self.take() != ("paren", ")"):
                raise RuleError("a parenthesis is not closed")
            return inner
        if kind == "word" and text == "days_since" and self.peek(1) == ("paren", "("):
            return self.days_since()
        return self.comparison()

    def days_since(self) -> DaysSince:
        self.take()
        self.take()
        kind, name = self.take()
        if kind != "word" or name not in TIMESTAMP_FIELDS:
            raise RuleError(f"days_since takes one of {', '.join(TIMESTAMP_FIELDS)}")
        if self.take() != ("paren", ")"):
            raise RuleError("days_since( takes one field and a closing parenthesis")
        op = self.take()
        if op[0] != "op" or op[1] not in _ORDERED:
            raise RuleError("days_since(...) is compared with =, !=, <, <=, > or >=")
        value = self.take()
        if value[0] != "number" or "." in value[1]:
            raise RuleError("days_since(...) is compared with a whole number of days")
        return DaysSince(name, op[1], int(value[1]))

    def comparison(self) -> Compare:
        kind, name = self.take()
        if kind != "word" or name in ("AND", "OR", "NOT"):
            raise RuleError(f"expected `field operator value`, found {name or 'the end'!r}")
        spec = field_spec(name)
        kind, op = self.take()
        if kind != "op":
            raise RuleError(f"expected an operator after {name!r}")
        if spec.has and op != ":":
            raise RuleError(f"{name} is repeated; use {name}:<value>")
        if not spec.has and op == ":":
            raise RuleError(f"{name} is not repeated; compare it with = or another operator")
        if spec.type in (Type.STRING, Type.ENUM) and op not in ("=", "!=", ":"):
            raise RuleError(f"{name} supports only = and !=")
        vkind, raw = self.take()
        return Compare(name, op, _value(name, spec, vkind, raw))


def field_spec(name: str) -> FieldSpec:
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    if name.startswith(TRAIT_PREFIX) and re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name[len(TRAIT_PREFIX) :]):
        return FieldSpec(Type.STRING)
    if name.startswith(SPEND_PREFIX) and re.fullmatch(r"[A-Z]{3}", name[len(SPEND_PREFIX) :]):
        return FieldSpec(Type.INT)
    known = ", ".join(
        [*FIELDS, "traits.<key>", "lifetime.total_spend.<CURRENCY>", "days_since(<time field>)"]
    )
    raise RuleError(f"unknown field {name!r}; rules use {known}")


def _value(name: str, spec: FieldSpec, kind: str, raw: str) -> Value:
    if spec.type is Type.STRING and kind == "string":
        return _unquote(raw)
    if spec.type is Type.TIMESTAMP and kind == "string":
        stamp = parse_timestamp(_unquote(raw))
        if stamp is not None:
            return stamp
    if spec.type is Type.INT and kind == "number" and "." not in raw:
        return int(raw)
    if spec.type is Type.NUMBER and kind == "number":
        return float(raw)
    if spec.type is Type.ENUM and kind == "word" and spec.enum and raw in spec.enum:
        return spec.enum[raw]
    if spec.type is Type.ENUM and spec.enum:
        raise RuleError(f"{name} takes one of {', '.join(spec.enum)}")
    raise RuleError(f"{name} takes {spec.type.value}, not {raw or 'nothing'}")


def _unquote(raw: str) -> str:
    try:
        return str(json.loads(raw))
    except ValueError:
        raise RuleError(f'{raw} has an escape that is not \\" \\\\ \\n \\t or \\uXXXX') from None


def parse(text: str) -> Node:
    """The rule's tree; RuleError with a readable message for anything else."""
    if not text.strip():
        raise RuleError("is required")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"must be at most {MAX_RULE_LENGTH} characters")
    parser = _Parser(_tokens(text))
    tree = parser.expr()
    if parser.peek()[0] != "end":
        raise RuleError(f"unexpected {parser.peek()[1]!r} after a complete rule")
    return tree


def time_fields(node: Node) -> set[str]:
    """The timestamp fields the rule compares with days_since (what the daily pass watches)."""
    if isinstance(node, DaysSince):
        return {node.field}
    if isinstance(node, Not):
        return time_fields(node.operand)
    if isinstance(node, All | Any_):
        return set().union(*(time_fields(n) for n in node.operands))
    return set()


def days_since_atoms(node: Node) -> list[DaysSince]:
    if isinstance(node, DaysSince):
        return [node]
    if isinstance(node, Not):
        return days_since_atoms(node.operand)
    if isinstance(node, All | Any_):
        return [a for n in node.operands for a in days_since_atoms(n)]
    return []
