"""ListOptedInCustomers: every customer who GRANTED consent for a topic, for campaigns.

A customer opts in on a channel through the exact topic or the channel's "*" consent, unless the
exact topic says otherwise (an exact topic wins over "*"). The query reads two ranges of the
partial index ``consents_granted (topic, customer_id, channel) WHERE state = GRANTED`` — the
topic's and "*"'s — each in customer order and each bounded to about one page of entries (an
exact-topic refusal that overrides "*" is an index probe per row), then groups per customer
here. Paging is by customer id (keyset), so the last page costs what the first does, however
large the audience. A page may hold fewer than ``page_size`` customers when customers opted in
on several channels (AIP-158 allows it); a next_page_token then still follows.
Customers merged away or erased are left out. Consent only: quiet hours, caps and contact points
are per contact, for DecideContact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, literal, select, union_all
from sqlalchemy.orm import aliased

from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.listing import decode_page_token, encode_page_token, query_fingerprint
from services.preferences import convert, store
from services.preferences.domain import DOMAIN
from services.preferences.txn import Unit

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000
c = store.consents


def _branch(
    topic_value: str, topic: str, channel: int, granted_after: datetime | None, after: str | None
) -> Any:
    exact = aliased(c)
    cs = store.customer_states
    q = select(c.c.customer_id, c.c.channel).where(c.c.topic == topic_value, c.c.state == store.GRANTED)
    if after is not None:
        q = q.where(c.c.customer_id > after)
    if channel:
        q = q.where(c.c.channel == channel)
    if granted_after is not None:
        q = q.where(c.c.grant_time >= granted_after)
    if topic_value == "*":
        q = q.where(
            ~exists().where(
                and_(
                    exact.c.customer_id == c.c.customer_id,
                    exact.c.channel == c.c.channel,
                    exact.c.topic == topic,
                )
            )
        )
    return q.where(~exists().where(cs.c.customer_id == c.c.customer_id))


def fingerprint(request: svc.ListOptedInCustomersRequest) -> str:
    granted_after = request.granted_after.ToJsonString() if request.HasField("granted_after") else ""
    return query_fingerprint("optedIn", request.topic, int(request.channel), granted_after)


def page_position(request: svc.ListOptedInCustomersRequest) -> str | None:
    """The customer id the page starts after (INVALID_ARGUMENT for a token of another query)."""
    keys = decode_page_token(request.page_token, fingerprint(request), domain=DOMAIN, width=1)
    return None if keys is None else str(keys[0])


def page_statement(
    request: svc.ListOptedInCustomersRequest, page_size: int, after: str | None
) -> tuple[Any, int, list[str]]:
    """The statement of one page, the row limit of each branch, and the branches' topics."""
    granted_after = (
        request.granted_after.ToDatetime(tzinfo=UTC) if request.HasField("granted_after") else None
    )
    topics = [request.topic] if request.topic == "*" else [request.topic, "*"]
    # Each branch reads at most `limit` index entries in customer order. A customer has at most
    # one row per channel in a branch, so a branch that comes back full has read every row of
    # the customers before its last one: those are complete, the last one may not be.
    limit = max(page_size + 1, len(ch.Channel.values()) + 1)
    branches = [
        _branch(value, request.topic, request.channel, granted_after, after)
        .add_columns(literal(i).label("branch"))
        .order_by(c.c.customer_id, c.c.channel)
        .limit(limit)
        for i, value in enumerate(topics)
    ]
    merged = union_all(*branches).subquery()
    return select(merged).order_by(merged.c.customer_id), limit, topics


async def list_opted_in(
    unit: Unit, request: svc.ListOptedInCustomersRequest, page_size: int, after: str | None
) -> svc.ListOptedInCustomersResponse:
    statement, limit, topics = page_statement(request, page_size, after)
    p = store.preferences
    # Two statements without a transaction: the channel order of a page may be one change newer.
    async with unit.db.read() as session:
        rows = (await session.execute(statement)).all()
        per_branch = [[r for r in rows if r.branch == i] for i in range(len(topics))]
        full = [b[-1].customer_id for b in per_branch if len(b) == limit]
        cut = min(full) if full else None
        channels: dict[str, set[int]] = {}
        for r in rows:
            if cut is None or r.customer_id < cut:
                channels.setdefault(r.customer_id, set()).add(r.channel)
        ids = sorted(channels)[:page_size]
        more = cut is not None or len(channels) > page_size
        preferred = (
            {
                r.customer_id: list(r.preferred_channels)
                for r in await session.execute(
                    select(p.c.customer_id, p.c.preferred_channels).where(p.c.customer_id.in_(ids))
                )
            }
            if ids
            else {}
        )
    order = unit.config.channel_order
    out = svc.ListOptedInCustomersResponse()
    for customer_id in ids:
        ranking = [*preferred.get(customer_id, []), *order]

        def rank(channel: int, ranking: list[int] = ranking) -> tuple[int, int]:
            return (ranking.index(channel), channel) if channel in ranking else (len(ranking), channel)

        out.customers.add(
            customer=convert.customer_name(customer_id), channels=sorted(channels[customer_id], key=rank)
        )
    if more and ids:
        out.next_page_token = encode_page_token([ids[-1]], fingerprint(request))
    return out
