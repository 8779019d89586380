"""List methods, once for every service: AIP-160 ``filter``, AIP-132 ``order_by``, AIP-158 page tokens.

A service declares each List method as a :class:`Listing` (its filterable fields, its orderings,
and the SQL they map to) and calls ``LISTING.parse(request, check)`` in the servicer; the
returned :class:`ListQuery` then fetches one page with :meth:`ListQuery.page`. Every List RPC of
Omni therefore accepts the same language, answers the same errors and pages the same way.

Filter grammar (deliberately small)::

    filter     := term ( "AND" term )*
    term       := factor ( "OR" factor )*
    factor     := comparison | "(" comparison ( "OR" comparison )* ")"
    comparison := FIELD OP VALUE
    OP         := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
    VALUE      := "quoted string" | integer | true | false | ENUM_VALUE_NAME

Each field has a type, and each type takes one form of value, so a filter means one thing:
strings take quoted strings, integers take integers, booleans ``true``/``false``, enums the name
of a value (``STATE_ACTIVE``), timestamps a quoted RFC 3339 time with a zone
(``"2025-01-01T00:00:00Z"``). Strings, booleans and enums compare with ``=`` and ``!=``;
integers and timestamps with every comparison. A repeated field takes only ``:`` ("has":
``roles:ROLE_AGENT``), a field that is not repeated never does. As in AIP-160, ``OR`` binds
tighter than ``AND``: ``a AND b OR c`` is ``a AND (b OR c)``, and parentheses group OR-ed
comparisons (``type = TYPE_CALL AND (channel = CHANNEL_WEB OR channel = CHANNEL_STORE_POS)``).
A filter is therefore always a conjunction of disjunctions, which every index can serve and
every listing compiles the same way. ``NOT``, ``-`` and parentheses around anything but OR-ed
comparisons are refused with a message that says so rather than misread, and an unknown field
is refused rather than ignored, so a typo never widens a result.

Page tokens are keyset tokens: the sort key of the last row returned plus a fingerprint of the
query (parent, filter, order) they were issued for, with a checksum. They are opaque (base64url)
and checked: a token edited by hand, or replayed with another filter or order, is INVALID_ARGUMENT
instead of silently returning the wrong page. Keyset rather than offset paging because a row
inserted or deleted between two pages then neither repeats nor skips a row, and because a deep
page costs an index seek rather than a scan of every row before it.

Errors are ``InvalidArgument`` with one ``FieldViolation`` each on ``filter`` (INVALID_FILTER),
``order_by`` (INVALID_ORDER_BY) and ``page_token`` (INVALID_PAGE_TOKEN), in the ErrorInfo domain
of the service; ``Listing.parse`` reports all of them, with ``page_size``, in one answer.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from google.protobuf.descriptor import EnumDescriptor
from sqlalchemy import Row, Select, and_, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, FromClause
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.sqltypes import NullType

from omni_runtime.errors import FieldViolation, InvalidArgument
from omni_runtime.validation import MAX_PAGE_SIZE, Checker

MAX_FILTER_LENGTH = 2000
INVALID_FILTER = "INVALID_FILTER"
INVALID_ORDER_BY = "INVALID_ORDER_BY"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 (an error reason, not a secret)

# --------------------------------------------------------------------------------------------
# Fields and conditions
# --------------------------------------------------------------------------------------------


class Kind(enum.Enum):
    """The type of a filterable field; it decides which values and operators the field takes."""

    STRING = "string"
    INT = "integer"
    BOOL = "boolean"
    ENUM = "enum"
    TIMESTAMP = "timestamp"


Value: TypeAlias = str | int | bool | datetime
_ORDERED = frozenset({"=", "!=", "<", "<=", ">", ">="})
_EQUALITY = frozenset({"=", "!="})
_HAS = frozenset({":"})
_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", ":")
_INT32 = range(-(2**31), 2**31)


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``field op value`` of a filter, with ``value`` already of the field's type.

    ``prefix`` is set for a field matched by a prefix (``attributes.`` of ``attributes.colour``);
    ``key`` is then the rest of the name (``colour``).
    """

    field: str
    op: str
    value: Value
    prefix: str = ""

    @property
    def key(self) -> str:
        return self.field.removeprefix(self.prefix)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Comparisons joined by ``OR`` (a filter's term that holds when one of them holds)."""

    conditions: tuple[Condition, ...]


# One term of a parsed filter: the filter holds when every term holds.
Term: TypeAlias = Condition | AnyOf


# How a condition becomes SQL: a column (or any SQL expression) compared with ``compare``, or
# a function of the whole condition for fields stored differently from how they are named.
Compiler: TypeAlias = Callable[[Condition], ColumnElement[bool]]
SqlTarget: TypeAlias = ColumnElement[Any] | Compiler


class ProtoEnum(Protocol):
    """A generated protobuf enum (``res.LocationType``): its descriptor lists the value names."""

    @property
    def DESCRIPTOR(self) -> EnumDescriptor: ...


@dataclass(frozen=True, slots=True)
class Field:
    """A filterable field: its type, and optionally the SQL it maps to.

    ``enum`` (for ``Kind.ENUM``) is a generated protobuf enum, or a mapping of the accepted
    value names to numbers when only some values of an enum make sense. The ``*_UNSPECIFIED``
    value (number 0) is never accepted: no stored row has it. ``repeated`` fields take only
    ``:`` (has). ``sql`` is a column or expression compared with :func:`compare`, or a
    :data:`Compiler` of the condition.
    """

    kind: Kind
    enum: ProtoEnum | Mapping[str, int] | None = None
    repeated: bool = False
    sql: SqlTarget | None = None
    names: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind is Kind.ENUM and self.enum is None:
            raise TypeError("an ENUM field needs its enum")
        if self.enum is None or isinstance(self.enum, Mapping):
            names = {k: v for k, v in (self.enum or {}).items() if v}
        else:
            names = {v.name: v.number for v in self.enum.DESCRIPTOR.values if v.number}
        object.__setattr__(self, "names", names)

    @property
    def operators(self) -> frozenset[str]:
        """The operators the field takes (see the module docstring)."""
        if self.repeated:
            return _HAS
        return _ORDERED if self.kind in (Kind.INT, Kind.TIMESTAMP) else _EQUALITY


def _violation(field_name: str, description: str, reason: str, domain: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field_name, description, reason)], domain=domain)


# --------------------------------------------------------------------------------------------
# Filter
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|!=|=|<|>|:)
      | (?P<number>-?\d+)(?![\w.])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<paren>[()])
    )""",
    re.VERBOSE,
)
_PREFIX_KEY = re.compile(r"[a-z][a-z0-9_]*")
_JOIN = "comparisons must be joined by AND or OR (NOT and '-' are not supported)"
_GROUP = "parentheses group comparisons joined by OR, such as (type = A OR type = B)"


class _FilterError(Exception):
    """A problem with the filter text; becomes one INVALID_FILTER violation."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            rest = text[pos:].lstrip()
            if rest.startswith("-"):
                raise _FilterError(_JOIN)
            at = len(text) - len(rest)
            raise _FilterError(f"unexpected character at position {at}: {rest[:10]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 time with a zone (``Z`` or an offset); None for anything else."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _unquote(raw: str) -> str:
    if "\\" not in raw:
        return raw[1:-1]
    try:
        return str(json.loads(raw))
    except ValueError:
        raise _FilterError(f'{raw} has an escape that is not \\" \\\\ \\n \\t or \\uXXXX') from None


def _value(name: str, spec: Field, kind: str, raw: str) -> Value:
    if spec.kind is Kind.STRING and kind == "string":
        return _unquote(raw)
    if spec.kind is Kind.TIMESTAMP and kind == "string":
        stamp = parse_timestamp(_unquote(raw))
        if stamp is None:
            raise _FilterError(f'{name} takes an RFC 3339 time such as "2025-01-01T00:00:00Z"')
        return stamp
    if spec.kind is Kind.INT and kind == "number":
        number = int(raw)
        if number not in _INT32:
            raise _FilterError(f"{name}: {raw} is out of range")
        return number
    if spec.kind is Kind.BOOL and kind == "word" and raw in ("true", "false"):
        return raw == "true"
    if spec.kind is Kind.ENUM:
        if kind == "word" and raw in spec.names:
            return spec.names[raw]
        raise _FilterError(f"{name} takes one of {', '.join(spec.names)}")
    expected = {
        Kind.STRING: 'a quoted string such as "text"',
        Kind.TIMESTAMP: 'a quoted RFC 3339 time such as "2025-01-01T00:00:00Z"',
        Kind.INT: "an integer",
        Kind.BOOL: "true or false",
    }[spec.kind]
    raise _FilterError(f"{name} takes {expected}, not {raw}")


def _listed(operators: frozenset[str]) -> list[str]:
    return [op for op in _OPERATORS if op in operators]


def _field(name: str, fields: Mapping[str, Field], prefixes: Mapping[str, Field]) -> tuple[Field, str]:
    spec = fields.get(name)
    if spec is not None:
        return spec, ""
    for prefix, prefixed in prefixes.items():
        if name.startswith(prefix) and _PREFIX_KEY.fullmatch(name.removeprefix(prefix)):
            return prefixed, prefix
    known = ", ".join([*sorted(fields), *(f"{p}<key>" for p in prefixes)])
    raise _FilterError(f"unknown field {name!r}; filterable fields are {known}")


def _comparison(
    tokens: list[tuple[str, str]], fields: Mapping[str, Field], prefixes: Mapping[str, Field]
) -> Condition:
    (k1, name), (k2, op), (k3, raw) = tokens
    if k1 == "paren":
        raise _FilterError(_GROUP)
    if k1 != "word" or name in ("NOT", "OR", "AND"):
        raise _FilterError(_JOIN if name == "NOT" else f"expected `field operator value` near {name!r}")
    if k2 != "op":
        raise _FilterError(f"expected an operator after {name!r}")
    if k3 not in ("string", "number", "word") or raw in ("AND", "OR", "NOT"):
        raise _FilterError(f"expected a value after `{name} {op}`")
    spec, prefix = _field(name, fields, prefixes)
    if op not in spec.operators:
        if spec.repeated:
            raise _FilterError(f"{name} is repeated; use {name}:<value>")
        if op == ":":
            raise _FilterError(
                f"{name} is not repeated; compare it with {' or '.join(_listed(spec.operators))}"
            )
        raise _FilterError(f"{name} supports only {', '.join(_listed(spec.operators))}")
    return Condition(name, op, _value(name, spec, k3, raw), prefix)


class _Terms:
    """The recursive-descent reader of a filter's tokens (see the grammar above)."""

    def __init__(
        self, tokens: list[tuple[str, str]], fields: Mapping[str, Field], prefixes: Mapping[str, Field]
    ) -> None:
        self.tokens, self.fields, self.prefixes, self.i = tokens, fields, prefixes, 0

    def at(self, token: tuple[str, str]) -> bool:
        if self.i < len(self.tokens) and self.tokens[self.i] == token:
            self.i += 1
            return True
        return False

    def comparison(self, after: str) -> Condition:
        if self.i + 3 > len(self.tokens):
            raise _FilterError("expected `field operator value`" + (f" after {after}" if after else ""))
        found = _comparison(self.tokens[self.i : self.i + 3], self.fields, self.prefixes)
        self.i += 3
        return found

    def term(self, after: str) -> Term:
        alternatives: list[Condition] = []
        while True:
            if self.at(("paren", "(")):
                alternatives.append(self.comparison(after))
                while self.at(("word", "OR")):
                    alternatives.append(self.comparison("OR"))
                if not self.at(("paren", ")")):
                    raise _FilterError(_GROUP)
            else:
                alternatives.append(self.comparison(after))
            if not self.at(("word", "OR")):
                break
            after = "OR"
        return alternatives[0] if len(alternatives) == 1 else AnyOf(tuple(alternatives))


def parse_filter(
    text: str,
    fields: Mapping[str, Field],
    *,
    prefixes: Mapping[str, Field] | None = None,
    domain: str = "omni",
) -> list[Term]:
    """The terms of ``text`` (all of which must hold); INVALID_ARGUMENT on anything else.

    ``prefixes`` declares families of fields such as ``attributes.<key>`` (keys in snake case).
    """
    if not text.strip():
        return []
    try:
        if len(text) > MAX_FILTER_LENGTH:
            raise _FilterError(f"must be at most {MAX_FILTER_LENGTH} characters")
        reader = _Terms(_tokens(text), fields, prefixes or {})
        out: list[Term] = [reader.term("")]
        while reader.i < len(reader.tokens):
            if not reader.at(("word", "AND")):
                raise _FilterError(_GROUP if reader.tokens[reader.i] == ("paren", ")") else _JOIN)
            out.append(reader.term("AND"))
        return out
    except _FilterError as exc:
        raise _violation("filter", str(exc), INVALID_FILTER, domain) from None


# --------------------------------------------------------------------------------------------
# Order
# --------------------------------------------------------------------------------------------

Order: TypeAlias = list[tuple[str, bool]]


def parse_order_by(
    text: str,
    allowed: Collection[str],
    default: Sequence[tuple[str, bool]] = (),
    *,
    domain: str = "omni",
) -> Order:
    """``"title desc, name"`` → ``[("title", True), ("name", False)]``; ``default`` when empty.

    ``asc``/``desc`` may be written in any case; field names exactly.
    """
    if not text.strip():
        return list(default)
    out: Order = []
    for part in text.split(","):
        words = part.split()
        direction = words[1].lower() if len(words) == 2 else "asc"
        if not words or len(words) > 2 or direction not in ("asc", "desc"):
            raise _violation(
                "order_by",
                f"cannot parse {part.strip()!r}; use `field` or `field desc`",
                INVALID_ORDER_BY,
                domain,
            )
        if words[0] not in allowed:
            raise _violation(
                "order_by",
                f"cannot order by {words[0]!r}; use one of {', '.join(allowed)}",
                INVALID_ORDER_BY,
                domain,
            )
        if any(words[0] == f for f, _ in out):
            raise _violation("order_by", f"{words[0]} is named twice", INVALID_ORDER_BY, domain)
        out.append((words[0], direction == "desc"))
    return out


# --------------------------------------------------------------------------------------------
# Page tokens
# --------------------------------------------------------------------------------------------

KeyValue: TypeAlias = str | int | float | bool | datetime


def query_fingerprint(*parts: object) -> str:
    """What a page token is bound to: the parent (or other scope), filter and order of its query."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _encode_value(value: KeyValue) -> object:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if value is None:
        # A NULL sort key cannot be paged past; see ``nullable``.
        raise ValueError("a page token key cannot be NULL")
    return value


def _decode_value(value: object) -> KeyValue:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        # As the database gave it (a ``timestamp without time zone`` key stays naive).
        return datetime.fromisoformat(value["t"])
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError("bad key")


def encode_page_token(keys: Sequence[KeyValue], fingerprint: str) -> str:
    """An opaque token for the page after the row whose sort key is ``keys``."""
    body = json.dumps({"k": [_encode_value(v) for v in keys], "q": fingerprint}, separators=(",", ":"))
    check = hashlib.sha256(body.encode()).hexdigest()[:8]
    return base64.urlsafe_b64encode(f"{check}{body}".encode()).decode().rstrip("=")


def decode_page_token(
    token: str, fingerprint: str, width: int | None = None, *, domain: str = "omni"
) -> list[KeyValue] | None:
    """The sort key a token carries (None for no token).

    INVALID_ARGUMENT if it was not issued by this server, was edited, or belongs to another
    query; ``width``, when given, is the number of sort keys the query has.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        check, body = raw[:8], raw[8:]
        if hashlib.sha256(body.encode()).hexdigest()[:8] != check:
            raise ValueError("checksum")
        data = json.loads(body)
        keys = [_decode_value(v) for v in data["k"]]
        same_query = data["q"] == fingerprint
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _violation(
            "page_token", "is not a page token this server issued", INVALID_PAGE_TOKEN, domain
        ) from None
    if not same_query:
        raise _violation(
            "page_token",
            "belongs to a different query; keep the parent, filter and order of the first page",
            INVALID_PAGE_TOKEN,
            domain,
        )
    if width is not None and len(keys) != width:
        raise _violation("page_token", "is not a page token of this query", INVALID_PAGE_TOKEN, domain)
    return keys


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------


def compare(expr: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    """``expr <op> value``; ``:`` is array containment (``expr @> ARRAY[value]``, GIN-indexable)."""
    result: ColumnElement[bool]
    if op == ":":
        result = expr.contains([value])
    elif op == "=":
        result = expr == value
    elif op == "!=":
        result = expr != value
    elif op == "<":
        result = expr < value
    elif op == "<=":
        result = expr <= value
    elif op == ">":
        result = expr > value
    elif op == ">=":
        result = expr >= value
    else:
        raise ValueError(f"unknown operator {op!r}")
    return result


def by_name(expr: ColumnElement[Any], prefix: str) -> Compiler:
    """A filter on a resource name stored as its bare id (``items/A`` ↔ ``A``)."""

    def compile_(cond: Condition) -> ColumnElement[bool]:
        text = str(cond.value)
        if not text.startswith(prefix):
            # A name of another collection equals nothing (and differs from everything).
            return literal(cond.op == "!=")
        return compare(expr, cond.op, text.removeprefix(prefix))

    return compile_


def _sql(cond: Condition, fields: Mapping[str, Field]) -> ColumnElement[bool]:
    target = fields[cond.prefix or cond.field].sql
    if target is None:
        raise TypeError(f"filter field {cond.field!r} has no SQL mapping")
    return compare(target, cond.op, cond.value) if isinstance(target, ColumnElement) else target(cond)


def where(terms: Sequence[Term], fields: Mapping[str, Field]) -> list[ColumnElement[bool]]:
    """SQL for parsed terms, through each field's ``sql`` (prefixed fields by their prefix):
    one condition per term, an OR of its comparisons for an ``AnyOf``."""
    return [
        or_(*(_sql(c, fields) for c in term.conditions)) if isinstance(term, AnyOf) else _sql(term, fields)
        for term in terms
    ]


SortKeys: TypeAlias = list[tuple[ColumnElement[Any], bool]]


def _bound(expr: ColumnElement[Any], value: Any) -> ColumnElement[Any]:
    return literal(value) if isinstance(expr.type, NullType) else literal(value, expr.type)


def after(keys: SortKeys, values: Sequence[Any]) -> ColumnElement[bool]:
    """ "Strictly after the row whose sort key is ``values``" in the order ``keys``.

    One row-value comparison when every key runs the same way (PostgreSQL turns it into an
    index range), the expanded OR of ANDs when directions are mixed.
    """
    exprs = [expr for expr, _ in keys]
    bound = [_bound(expr, value) for expr, value in zip(exprs, values, strict=True)]
    directions = {desc for _, desc in keys}
    if len(directions) == 1:
        left = exprs[0] if len(keys) == 1 else tuple_(*exprs)
        right = bound[0] if len(keys) == 1 else tuple_(*bound)
        return left < right if directions == {True} else left > right
    clauses: list[ColumnElement[bool]] = []
    for i, (expr, desc) in enumerate(keys):
        equal = [exprs[j] == bound[j] for j in range(i)]
        clauses.append(and_(*equal, expr < bound[i] if desc else expr > bound[i]))
    return or_(*clauses)


def nullable(
    expr: ColumnElement[Any], filler: Any, *, nulls_first: bool
) -> tuple[ColumnElement[bool], ColumnElement[Any]]:
    """Sort expressions for a nullable column, for ``Listing.order_by``.

    A NULL cannot be paged past (``x > NULL`` is never true), so the key is (is it NULL?, the
    value with NULL replaced by ``filler``): NULLs first in ascending order and last in
    descending order with ``nulls_first``, the reverse without. ``filler`` is any value of the
    column's type; it only ever ties NULL rows with each other.
    """
    flag = expr.is_not(None) if nulls_first else expr.is_(None)
    return flag, func.coalesce(expr, filler)


def order_clauses(keys: SortKeys) -> list[UnaryExpression[Any]]:
    return [expr.desc() if desc else expr.asc() for expr, desc in keys]


# --------------------------------------------------------------------------------------------
# A List method
# --------------------------------------------------------------------------------------------

SortColumns: TypeAlias = ColumnElement[Any] | Sequence[ColumnElement[Any]]
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"
AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"


class ListRequest(Protocol):
    """The AIP-132 fields every List request has."""

    @property
    def page_size(self) -> int: ...
    @property
    def page_token(self) -> str: ...
    @property
    def filter(self) -> str: ...
    @property
    def order_by(self) -> str: ...


@dataclass(frozen=True)
class Listing:
    """What one List method accepts and how it maps to SQL; declare once, next to the table.

    ``order_by`` maps each orderable field to its sort expression(s); ``default_order`` is an
    ``order_by`` string. ``tiebreak`` (the row's unique key) is appended to every order so that
    a page boundary is exact, in the direction of the last ordered field (so that an index on
    ``(field, id)`` serves both directions), unless the order names a field in ``unique``.
    A nullable sort column goes through :func:`nullable` (a NULL cannot be paged past).
    """

    fields: Mapping[str, Field]
    order_by: Mapping[str, SortColumns]
    default_order: str
    domain: str = "omni"
    prefixes: Mapping[str, Field] = field(default_factory=dict)
    tiebreak: Sequence[ColumnElement[Any]] = ()
    unique: Collection[str] = ()
    max_page_size: int = MAX_PAGE_SIZE

    def __post_init__(self) -> None:
        try:  # a typo fails at import, not on every call
            parse_order_by(self.default_order, self.order_by)
        except InvalidArgument as exc:
            raise ValueError(f"default_order: {exc.message}") from None

    def parse(
        self, request: ListRequest, check: Checker | None = None, *, scope: Sequence[object] = ()
    ) -> ListQuery:
        """The validated page size, filter, order and page position of ``request``.

        With ``check``, every problem is added to it for the caller to raise with its other
        violations; without, they are raised here, together, in this listing's domain.
        ``scope`` is what else the result depends on (the parent, the caller's store): a page
        token is valid only for the same scope, filter and order.
        """
        own = check if check is not None else Checker()
        page_size = min(own.page_size("page_size", request.page_size), self.max_page_size)
        fingerprint = query_fingerprint(*scope, request.filter, request.order_by)
        conditions: list[Term] = []
        order = parse_order_by(self.default_order, self.order_by)
        position: list[KeyValue] | None = None
        try:
            conditions = parse_filter(request.filter, self.fields, prefixes=self.prefixes, domain=self.domain)
        except InvalidArgument as exc:
            own.violations.extend(exc.violations)
        try:
            order = parse_order_by(request.order_by, self.order_by, order, domain=self.domain)
        except InvalidArgument as exc:
            own.violations.extend(exc.violations)
        try:
            position = decode_page_token(request.page_token, fingerprint, domain=self.domain)
        except InvalidArgument as exc:
            own.violations.extend(exc.violations)
        if check is None and own.violations:
            raise InvalidArgument(own.violations, domain=self.domain)
        return ListQuery(self, page_size, conditions, order, position, fingerprint)


@dataclass(frozen=True)
class ListQuery:
    """A parsed List request: what to select, in which order, from where, how many."""

    listing: Listing
    page_size: int
    conditions: list[Term]
    order: Order
    after: list[KeyValue] | None
    fingerprint: str

    def mentions(self, name: str) -> bool:
        """Whether the filter has a condition on ``name`` (for defaults such as "only ACTIVE"),
        alone or among alternatives."""
        return any(
            c.field == name
            for term in self.conditions
            for c in (term.conditions if isinstance(term, AnyOf) else (term,))
        )

    def where(self) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions."""
        return where(self.conditions, {**self.listing.fields, **self.listing.prefixes})

    def sort_keys(self) -> SortKeys:
        """The full sort key: the ordered fields' expressions, then the tiebreak."""
        keys: SortKeys = []
        for name, desc in self.order:
            columns = self.listing.order_by[name]
            keys += [(c, desc) for c in (columns if isinstance(columns, Sequence) else [columns])]
        if not any(name in self.listing.unique for name, _ in self.order):
            desc = self.order[-1][1] if self.order else False
            keys += [(c, desc) for c in self.listing.tiebreak]
        return keys

    def _invalid_token(self) -> InvalidArgument:
        return _violation(
            "page_token", "is not a page token of this query", INVALID_PAGE_TOKEN, self.listing.domain
        )

    async def page(self, session: AsyncSession, statement: AnySelect) -> tuple[list[AnyRow], str]:
        """One page of ``statement`` (filtered, ordered, after the token) and the next page's token.

        ``statement`` is the select with the method's own conditions (parent, scope); the filter
        is added here. Rows carry extra ``page_key_<n>`` columns (the sort key).
        """
        keys = self.sort_keys()
        labels = [expr.label(f"page_key_{i}") for i, (expr, _) in enumerate(keys)]
        statement = statement.where(*self.where()).add_columns(*labels)
        if self.after is not None:
            if len(self.after) != len(keys):
                raise self._invalid_token()
            statement = statement.where(after(keys, self.after))
        statement = statement.order_by(*order_clauses(keys)).limit(self.page_size + 1)
        rows = list((await session.execute(statement)).all())
        if len(rows) <= self.page_size:
            return rows, ""
        rows = rows[: self.page_size]
        last = rows[-1]._mapping
        return rows, encode_page_token([last[label.name] for label in labels], self.fingerprint)

    async def count(self, session: AsyncSession, table: FromClause, *conditions: ColumnElement[bool]) -> int:
        """How many rows of ``table`` match the filter and ``conditions`` (AIP-132 total_size)."""
        statement = select(func.count()).select_from(table).where(*self.where(), *conditions)
        return int((await session.execute(statement)).scalar_one())
