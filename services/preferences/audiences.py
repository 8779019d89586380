"""ListOptedInCustomers: every customer who GRANTED consent for a topic, for campaigns.

A customer opts in on a channel through the exact topic or the channel's "*" consent, unless the
exact topic says otherwise (an exact topic wins over "*"). The query reads two ranges of the
partial index ``consents_granted (topic, customer_id, channel) WHERE state = GRANTED`` — the
topic's and "*"'s — each already in customer order; PostgreSQL merges them (Merge Append),
groups per customer as they stream past and stops after one page. Paging is by customer id
(keyset), so the hundredth page costs what the first does, however large the audience.
Customers merged away or erased are left out. Consent only: quiet hours, caps and contact points
are per contact, for DecideContact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, union_all
from sqlalchemy.orm import aliased

from omni.preferences.v1 import preferences_service_pb2 as svc
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


async def list_opted_in(
    unit: Unit, request: svc.ListOptedInCustomersRequest, page_size: int, after: str | None
) -> svc.ListOptedInCustomersResponse:
    granted_after = (
        request.granted_after.ToDatetime(tzinfo=UTC) if request.HasField("granted_after") else None
    )
    branches = [_branch(request.topic, request.topic, request.channel, granted_after, after)]
    if request.topic != "*":
        branches.append(_branch("*", request.topic, request.channel, granted_after, after))
    merged = union_all(*(b.order_by(c.c.customer_id) for b in branches)).subquery()
    statement = (
        select(merged.c.customer_id, func.array_agg(merged.c.channel).label("channels"))
        .group_by(merged.c.customer_id)
        .order_by(merged.c.customer_id)
        .limit(page_size + 1)
    )
    p = store.preferences
    async with unit.db.transaction() as session:
        rows = (await session.execute(statement)).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        ids = [r.customer_id for r in rows]
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
    for r in rows:
        ranking = [*preferred.get(r.customer_id, []), *order]

        def rank(ch: int, ranking: list[int] = ranking) -> tuple[int, int]:
            return (ranking.index(ch), ch) if ch in ranking else (len(ranking), ch)

        out.customers.add(
            customer=convert.customer_name(r.customer_id), channels=sorted(set(r.channels), key=rank)
        )
    if more and rows:
        out.next_page_token = encode_page_token([rows[-1].customer_id], fingerprint(request))
    return out
