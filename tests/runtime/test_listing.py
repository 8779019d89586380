"""The shared List-method mechanics: filter grammar, order_by, page tokens, and their SQL on PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from omni.cart.v1 import resources_pb2 as cart
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.engine import Database
from omni_runtime.errors import FieldViolation, InvalidArgument
from omni_runtime.listing import (
    AnyOf,
    Condition,
    Field,
    Kind,
    Listing,
    by_name,
    compare,
    decode_page_token,
    encode_page_token,
    nullable,
    parse_filter,
    parse_order_by,
    query_fingerprint,
)
from omni_runtime.validation import Checker

STAMP = datetime(2025, 1, 1, tzinfo=UTC)
FIELDS = {
    "title": Field(Kind.STRING),
    "active": Field(Kind.BOOL),
    "on_hand": Field(Kind.INT),
    "status": Field(Kind.ENUM, res.StockStatus),
    "update_time": Field(Kind.TIMESTAMP),
    "stores": Field(Kind.STRING, repeated=True),
    "states": Field(Kind.ENUM, cart.OrderState, repeated=True),
}
PREFIXES = {"attributes.": Field(Kind.STRING)}


def parse(text: str) -> list[Condition]:
    return parse_filter(text, FIELDS, prefixes=PREFIXES, domain="omni.test")


def violation(info: pytest.ExceptionInfo[InvalidArgument]) -> FieldViolation:
    (only,) = info.value.violations
    return only


# --- filter grammar --------------------------------------------------------------------------


def test_empty_filter_is_no_condition() -> None:
    assert parse("") == [] and parse("   ") == []


def test_filter_parses_conjunctions_of_typed_comparisons() -> None:
    conds = parse(
        'title = "Blue \\"mug\\"" AND active = true AND on_hand >= -3 AND status != STOCK_STATUS_LOW_STOCK'
        ' AND update_time < "2025-01-01T00:00:00Z" AND attributes.colour = "red"'
    )
    assert [(c.field, c.op) for c in conds] == [
        ("title", "="),
        ("active", "="),
        ("on_hand", ">="),
        ("status", "!="),
        ("update_time", "<"),
        ("attributes.colour", "="),
    ]
    assert conds[0].value == 'Blue "mug"'
    assert conds[1].value is True
    assert conds[2].value == -3
    assert conds[3].value == res.STOCK_STATUS_LOW_STOCK
    assert conds[4].value == STAMP
    assert (conds[5].prefix, conds[5].key, conds[5].value) == ("attributes.", "colour", "red")


def test_or_binds_tighter_than_and_and_parentheses_group_alternatives() -> None:
    """AIP-160: `a AND b OR c` is `a AND (b OR c)`; the listing's filter is a conjunction of
    disjunctions (what ListInteractions' `(type = A OR type = B)` needs)."""
    first, second = parse('active = true AND title = "Cup" OR title = "Jug"')
    assert isinstance(first, Condition) and first.field == "active"
    assert isinstance(second, AnyOf) and [c.value for c in second.conditions] == ["Cup", "Jug"]
    grouped = parse(
        "(status = STOCK_STATUS_IN_STOCK OR status = STOCK_STATUS_LOW_STOCK) AND (on_hand > 3) "
        'AND attributes.colour = "red" OR attributes.colour = "blue"'
    )
    assert [type(t).__name__ for t in grouped] == ["AnyOf", "Condition", "AnyOf"]
    assert isinstance(grouped[0], AnyOf)
    assert [c.value for c in grouped[0].conditions] == [res.STOCK_STATUS_IN_STOCK, res.STOCK_STATUS_LOW_STOCK]
    # An OR of a group and a comparison is still one term.
    (term,) = parse('(title = "a" OR title = "b") OR active = false')
    assert isinstance(term, AnyOf) and len(term.conditions) == 3
    query = THINGS.parse(Request(filter='title = "Cup" OR state = STOCK_STATUS_IN_STOCK'))
    assert query.mentions("state") and query.mentions("title") and not query.mentions("rank")


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_numbers_and_times_take_every_comparison(op: str) -> None:
    (number,) = parse(f"on_hand {op} 7")
    (stamp,) = parse(f'update_time {op} "2025-01-01T02:00:00+02:00"')
    assert (number.op, number.value) == (op, 7)
    assert (stamp.op, stamp.value) == (op, STAMP)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('title = "plain"', "plain"),
        ('title = ""', ""),
        ('title = "tab\\there \\u00e9"', "tab\there é"),
        ('title = "back\\\\slash"', "back\\slash"),
        ("active = false", False),
        ("status = STOCK_STATUS_IN_STOCK", res.STOCK_STATUS_IN_STOCK),
        ("on_hand = 2147483647", 2**31 - 1),
        ("on_hand = -2147483648", -(2**31)),
        ('update_time = "2025-01-01T00:00:00.5z"', STAMP + timedelta(milliseconds=500)),
        ('stores:"locations/s1"', "locations/s1"),
        ("states:ORDER_STATE_PLACED", cart.ORDER_STATE_PLACED),
    ],
)
def test_every_value_kind(text: str, value: Any) -> None:
    (cond,) = parse(text)
    assert cond.value == value and type(cond.value) is type(value)


def test_has_is_the_only_operator_of_repeated_fields() -> None:
    (cond,) = parse('stores : "locations/s1"')
    assert (cond.field, cond.op) == ("stores", ":")


def test_an_enum_field_may_accept_only_some_values() -> None:
    fields = {"roles": Field(Kind.ENUM, {"ROLE_AGENT": 2, "ROLE_ADMIN": 5}, repeated=True)}
    assert parse_filter("roles:ROLE_ADMIN", fields)[0].value == 5
    with pytest.raises(InvalidArgument) as info:
        parse_filter("roles:ROLE_CUSTOMER", fields)
    assert violation(info).description == "roles takes one of ROLE_AGENT, ROLE_ADMIN"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour = 1", "unknown field 'colour'; filterable fields are active, on_hand"),
        ('title > "a"', "title supports only =, !="),
        ('on_hand = "3"', 'on_hand takes an integer, not "3"'),
        ("title = red", 'title takes a quoted string such as "text", not red'),
        ("active = yes", "active takes true or false, not yes"),
        ('active = "true"', "active takes true or false"),
        ("status = IN_STOCK", "status takes one of STOCK_STATUS_IN_STOCK"),
        ("status = STOCK_STATUS_UNSPECIFIED", "status takes one of"),
        ("status = 2", "status takes one of"),
        ('status = "STOCK_STATUS_IN_STOCK"', "status takes one of"),
        ('update_time > "yesterday"', "update_time takes an RFC 3339 time"),
        ('update_time > "2025-01-01T00:00:00"', "update_time takes an RFC 3339 time"),
        ("update_time > 2025", "update_time takes a quoted RFC 3339 time"),
        ("on_hand = 2147483648", "on_hand: 2147483648 is out of range"),
        ('title = "a" active = true', "must be joined by AND or OR"),
        ("NOT active = true", "NOT and '-' are not supported"),
        ('title = "a" OR NOT active = true', "NOT and '-' are not supported"),
        ("-active = true", "NOT and '-' are not supported"),
        ('(title = "a" AND active = true)', "parentheses group comparisons joined by OR"),
        ('title = "a" AND (active = true', "parentheses group comparisons joined by OR"),
        ('((title = "a"))', "parentheses group comparisons joined by OR"),
        ('title = "a")', "parentheses group comparisons joined by OR"),
        ('title = "a" OR', "expected `field operator value` after OR"),
        ("title = OR", "expected a value after `title =`"),
        ("title = ", "expected `field operator value`"),
        ('title = "a" AND', "expected `field operator value` after AND"),
        ("title", "expected `field operator value`"),
        ('title "a" = b', "expected an operator after 'title'"),
        ("on_hand = = 1", "expected a value after `on_hand =`"),
        ('= "a" x', "expected `field operator value` near '='"),
        ('attributes.Colour = "red"', "unknown field 'attributes.Colour'"),
        ('attributes. = "red"', "unknown field"),
        ('stores = "locations/s1"', "stores is repeated; use stores:<value>"),
        ("states != ORDER_STATE_PLACED", "states is repeated; use states:<value>"),
        ('title:"a"', "title is not repeated; compare it with = or !="),
        ("on_hand ~ 1", "unexpected character at position 8: '~ 1'"),
        ('title = "a\\q"', "has an escape that is not"),
        ('title = "unterminated', "unexpected character"),
        ("x" * 2001, "must be at most 2000 characters"),
    ],
)
def test_filter_rejects_what_it_does_not_understand(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(text)
    bad = violation(info)
    assert (bad.field, bad.reason, info.value.domain) == ("filter", "INVALID_FILTER", "omni.test")
    assert says in bad.description


def test_cart_filters_that_needed_not_or_juxtaposition_are_refused_clearly() -> None:
    """Cart's own compiler accepted NOT, '-', any parentheses and juxtaposition; the shared
    grammar is AND of terms, a term one comparison or OR-ed ones, and says so."""
    fields = {
        "state": Field(Kind.ENUM, cart.OrderState),
        "pickup_stores": Field(Kind.STRING, repeated=True),
        "create_time": Field(Kind.TIMESTAMP),
    }
    text = 'pickup_stores:"locations/s1" AND state = ORDER_STATE_PLACED AND create_time > "2026-01-01T00:00Z"'
    conds = parse_filter(text, fields)
    assert [c.op for c in conds] == [":", "=", ">"]
    for bad in (
        'pickup_stores:"locations/s1" AND (state = ORDER_STATE_PLACED OR NOT state = 2)',
        'state = ORDER_STATE_PLACED create_time > "2026-01-01T00:00:00Z"',
        "colour = red",
        "state = NOPE",
        "state > ORDER_STATE_PLACED",
        'create_time > "yesterday"',
        "state =",
        "pickup_stores = (",
        'state = ORDER_STATE_PLACED "x"',
    ):
        with pytest.raises(InvalidArgument) as info:
            parse_filter(bad, fields)
        assert violation(info).field == "filter"


# --- order_by --------------------------------------------------------------------------------


def test_order_by() -> None:
    allowed = ["name", "title"]
    assert parse_order_by("title desc, name", allowed, [("name", False)]) == [
        ("title", True),
        ("name", False),
    ]
    assert parse_order_by(" title  DESC ,name asc", allowed) == [("title", True), ("name", False)]
    assert parse_order_by("", allowed, [("name", False)]) == [("name", False)]
    for bad, says in (
        ("price", "cannot order by 'price'; use one of name, title"),
        ("Title", "cannot order by 'Title'"),
        ("title sideways", "cannot parse 'title sideways'"),
        ("title desc name", "cannot parse"),
        ("title,", "cannot parse ''"),
        ("title, title desc", "title is named twice"),
    ):
        with pytest.raises(InvalidArgument) as info:
            parse_order_by(bad, allowed, domain="omni.test")
        only = violation(info)
        assert (only.field, only.reason, info.value.domain) == ("order_by", "INVALID_ORDER_BY", "omni.test")
        assert says in only.description


# --- page tokens -----------------------------------------------------------------------------


def test_page_token_round_trip() -> None:
    fp = query_fingerprint("items", "x", "")
    keys = ["a", 3, -1.5, True, STAMP, datetime.min.replace(tzinfo=UTC)]
    token = encode_page_token(keys, fp)
    assert "=" not in token and base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert decode_page_token(token, fp, 6) == keys
    assert decode_page_token(token, fp) == keys
    assert decode_page_token("", fp) is None
    with pytest.raises(ValueError, match="NULL"):
        encode_page_token([None], fp)  # type: ignore[list-item]


def test_a_token_of_another_query_is_refused() -> None:
    token = encode_page_token(["a"], query_fingerprint("items", "x", ""))
    assert query_fingerprint("items", "x", "") != query_fingerprint("items", "y", "")
    assert query_fingerprint("a", "b") != query_fingerprint("ab", "")
    with pytest.raises(InvalidArgument) as info:
        decode_page_token(token, query_fingerprint("items", "y", ""), domain="omni.test")
    bad = violation(info)
    assert (bad.field, bad.reason, info.value.domain) == ("page_token", "INVALID_PAGE_TOKEN", "omni.test")
    assert "different query" in bad.description


def test_a_tampered_or_foreign_token_is_refused() -> None:
    fp = query_fingerprint("items")
    token = encode_page_token(["a", 3, STAMP], fp)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    edited = raw.replace('"a"', '"b"')  # a readable edit of the key, checksum left as it was
    forged = base64.urlsafe_b64encode(edited.encode()).decode()
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (forged, tampered, "not-a-token", "zz", token + "x", "AAAA" + token, "€"):
        with pytest.raises(InvalidArgument) as info:
            decode_page_token(bad, fp, 3)
        assert violation(info).reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        decode_page_token(token, fp, 2)  # a sort key of another width


# --- a List method -----------------------------------------------------------------------------


@dataclass
class Request:
    page_size: int = 0
    page_token: str = ""
    filter: str = ""
    order_by: str = ""


metadata = MetaData()
things = Table(
    "listing_things",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("stores", ARRAY(Text), nullable=False),
    Column("attributes", JSONB, nullable=False),
    Column("start_time", DateTime(timezone=True)),
    Column("version", BigInteger, nullable=False),
)
T = things.c
THINGS = Listing(
    fields={
        "name": Field(Kind.STRING, sql=by_name(T.id, "things/")),
        "title": Field(Kind.STRING, sql=T.title),
        "rank": Field(Kind.INT, sql=T.rank),
        "state": Field(Kind.ENUM, res.StockStatus, sql=T.state),
        "active": Field(Kind.BOOL, sql=T.active),
        "stores": Field(Kind.STRING, repeated=True, sql=T.stores),
        "start_time": Field(Kind.TIMESTAMP, sql=T.start_time),
    },
    prefixes={
        "attributes.": Field(Kind.STRING, sql=lambda c: compare(T.attributes[c.key].astext, c.op, c.value))
    },
    order_by={
        "name": T.id,
        "title": T.title,
        "rank": T.rank,
        "start_time": nullable(T.start_time, STAMP, nulls_first=True),
        "start_time_nulls_last": nullable(T.start_time, STAMP, nulls_first=False),
        "title_rank": (T.title, T.rank),
    },
    default_order="name",
    tiebreak=[T.id],
    unique={"name"},
    domain="omni.test",
    max_page_size=50,
)


def test_parse_reports_every_problem_at_once_in_the_listing_domain() -> None:
    request = Request(page_size=-1, page_token="zz", filter="colour = 1", order_by="price")
    with pytest.raises(InvalidArgument) as info:
        THINGS.parse(request)
    assert info.value.domain == "omni.test"
    assert {(v.field, v.reason) for v in info.value.violations} == {
        ("page_size", "OUT_OF_RANGE"),
        ("filter", "INVALID_FILTER"),
        ("order_by", "INVALID_ORDER_BY"),
        ("page_token", "INVALID_PAGE_TOKEN"),
    }
    check = Checker()
    check.fail("parent", "is required", "REQUIRED")
    THINGS.parse(request, check)  # gathered for the caller to raise with its own violations
    assert [v.field for v in check.violations] == ["parent", "page_size", "filter", "order_by", "page_token"]


def test_parse_defaults_caps_and_binds_tokens_to_the_scope() -> None:
    query = THINGS.parse(Request(page_size=500, filter="rank > 1"), scope=("shelves/a",))
    assert (query.page_size, query.order, query.after) == (50, [("name", False)], None)
    assert query.mentions("rank") and not query.mentions("title")
    assert THINGS.parse(Request()).page_size == 50
    token = encode_page_token(["x"], query.fingerprint)
    assert THINGS.parse(Request(filter="rank > 1", page_token=token), scope=("shelves/a",)).after == ["x"]
    for other, scope in (
        (Request(filter="rank > 1", page_token=token), ("shelves/b",)),
        (Request(filter="rank > 2", page_token=token), ("shelves/a",)),
        (Request(filter="rank > 1", order_by="title", page_token=token), ("shelves/a",)),
    ):
        with pytest.raises(InvalidArgument) as info:
            THINGS.parse(other, scope=scope)
        assert "different query" in violation(info).description


def test_sort_keys_end_with_the_tiebreak_in_the_last_direction() -> None:
    def keys(order_by: str) -> list[tuple[str, bool]]:
        return [(str(e), d) for e, d in THINGS.parse(Request(order_by=order_by)).sort_keys()]

    assert keys("") == [("listing_things.id", False)]
    assert keys("rank desc") == [("listing_things.rank", True), ("listing_things.id", True)]
    assert keys("title, rank desc") == [
        ("listing_things.title", False),
        ("listing_things.rank", True),
        ("listing_things.id", True),
    ]
    assert keys("title_rank desc, name") == [
        ("listing_things.title", True),
        ("listing_things.rank", True),
        ("listing_things.id", False),
    ]
    with pytest.raises(ValueError, match="cannot order by"):
        Listing(fields={}, order_by={"name": T.id}, default_order="nmae")


# --- SQL, on PostgreSQL ------------------------------------------------------------------------

ROWS = [
    # id, title, rank, state, active, stores, attributes, start_time
    ("a", "Cup", 3, res.STOCK_STATUS_IN_STOCK, True, ["locations/s1"], {"colour": "red"}, STAMP),
    ("b", "Bowl", 1, res.STOCK_STATUS_LOW_STOCK, False, [], {"colour": "blue"}, None),
    ("c", "Cup", 2, res.STOCK_STATUS_OUT_OF_STOCK, True, ["locations/s1", "locations/s2"], {}, STAMP),
    ("d", "Plate", 3, res.STOCK_STATUS_IN_STOCK, True, ["locations/s2"], {"colour": "red"}, None),
    ("e", "Jug", -4, res.STOCK_STATUS_IN_STOCK, False, [], {}, STAMP + timedelta(days=1)),
    ("f", "Cup", 3, res.STOCK_STATUS_OVERSOLD, True, [], {"colour": "green"}, STAMP - timedelta(days=1)),
    ("g", "Saucer", 0, res.STOCK_STATUS_IN_STOCK, True, ["locations/s3"], {}, None),
]


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with database.transaction() as session:
        keys = ("id", "title", "rank", "state", "active", "stores", "attributes", "start_time")
        await session.execute(
            things.insert(), [{**dict(zip(keys, row, strict=True)), "version": 1} for row in ROWS]
        )
    yield database
    await database.close()


async def ids(db: Database, filter_text: str) -> list[str]:
    query = THINGS.parse(Request(filter=filter_text))
    async with db.transaction() as session:
        rows, token = await query.page(session, select(things))
        assert await query.count(session, things) == len(rows)
    assert token == ""
    return [row.id for row in rows]


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("", "abcdefg"),
        ('title = "Cup"', "acf"),
        ('title != "Cup"', "bdeg"),
        ("rank = 3", "adf"),
        ("rank != 3", "bceg"),
        ("rank < 1", "eg"),
        ("rank <= 1", "beg"),
        ("rank > 2", "adf"),
        ("rank >= -4", "abcdefg"),
        ("state = STOCK_STATUS_IN_STOCK", "adeg"),
        ("state != STOCK_STATUS_IN_STOCK", "bcf"),
        ("active = false", "be"),
        ('stores:"locations/s1"', "ac"),
        ('stores:"locations/s9"', ""),
        ('start_time >= "2025-01-01T00:00:00Z"', "ace"),
        ('start_time < "2025-01-01T00:00:00Z"', "f"),
        ('attributes.colour = "red"', "ad"),
        ('attributes.colour != "red"', "bf"),
        ('name = "things/c"', "c"),
        ('name != "things/c"', "abdefg"),
        ('name = "others/c"', ""),
        ('name != "others/c"', "abcdefg"),
        ('title = "Cup" AND rank = 3 AND active = true AND stores:"locations/s1"', "a"),
        ('title = "Bowl" OR title = "Jug"', "be"),
        ("(rank = 3 OR rank < 0) AND active = true", "adf"),
        ("rank = 3 OR rank < 0 AND active = true", "adf"),
        ('active = false OR stores:"locations/s3" AND title != "Jug"', "bg"),
        ('name = "things/c" OR name = "others/a"', "c"),
        ('attributes.colour = "red" OR attributes.colour = "green"', "adf"),
    ],
)
async def test_conditions_select_the_right_rows(db: Database, filter_text: str, expected: str) -> None:
    assert "".join(await ids(db, filter_text)) == expected


def expected_order(order_by: str) -> list[str]:
    """The order PostgreSQL should produce, computed in Python from the same rules."""

    def key(row: tuple[Any, ...]) -> list[Any]:
        # No start time sorts first in ascending order (and last in descending order).
        start = (row[7] is not None, row[7] or STAMP)
        values = {
            "name": row[0],
            "title": row[1],
            "rank": row[2],
            "start_time": start,
            "start_time_nulls_last": (row[7] is None, row[7] or STAMP),
        }
        return [values[f.split()[0]] for f in order_by.split(",")] + [row[0]]

    directions = [f.split()[1:] == ["desc"] for f in order_by.split(",")]
    out = list(ROWS)
    # Sort by the tiebreak (in the last direction), then by each field from the last to the first.
    out.sort(key=lambda r: r[0], reverse=directions[-1])
    for i in reversed(range(len(directions))):
        out.sort(key=lambda r, i=i: key(r)[i], reverse=directions[i])
    return [row[0] for row in out]


@pytest.mark.parametrize(
    "order_by",
    [
        "name",
        "name desc",
        "title",
        "rank desc",
        "title, rank desc",
        "start_time",
        "start_time desc",
        "title desc, start_time",
        "start_time_nulls_last",
        "start_time_nulls_last desc, rank",
    ],
)
@pytest.mark.parametrize("page_size", [1, 2, 3, 7])
async def test_pages_cover_every_row_once_in_order(db: Database, order_by: str, page_size: int) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(len(ROWS) + 1):
        query = THINGS.parse(Request(page_size=page_size, order_by=order_by, page_token=token))
        async with db.transaction() as session:
            rows, token = await query.page(session, select(things))
        assert len(rows) <= page_size
        seen += [row.id for row in rows]
        if not token:
            break
    assert seen == expected_order(order_by)


async def test_a_page_respects_the_statements_own_conditions(db: Database) -> None:
    query = THINGS.parse(Request(page_size=1, filter='title = "Cup"', order_by="rank desc"))
    async with db.transaction() as session:
        statement = select(things).where(T.active.is_(True))
        first, token = await query.page(session, statement)
        assert await query.count(session, things, T.active.is_(True)) == 3
        nxt = THINGS.parse(
            Request(page_size=5, filter='title = "Cup"', order_by="rank desc", page_token=token)
        )
        rest, last = await nxt.page(session, statement)
    assert [r.id for r in [*first, *rest]] == ["f", "a", "c"] and last == ""


async def test_a_token_of_another_width_is_refused_when_paging(db: Database) -> None:
    fingerprint = THINGS.parse(Request(order_by="rank")).fingerprint
    query = THINGS.parse(Request(order_by="rank", page_token=encode_page_token([1], fingerprint)))
    async with db.transaction() as session:
        with pytest.raises(InvalidArgument) as info:
            await query.page(session, select(things))
    assert violation(info).reason == "INVALID_PAGE_TOKEN" and info.value.domain == "omni.test"
