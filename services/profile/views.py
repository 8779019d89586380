"""GetCustomerView: the agent's one read. Profile's own part comes from its database; the
active cart and last orders (cart), the open conversation (messaging) and the consents
(preferences) are fetched in parallel within the caller's deadline. A source that does not
answer in time (or fails, or is not deployed) leaves its part empty and is named in
``unavailable_sources``: the view degrades, it does not fail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2
from sqlalchemy import func, select

from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime.interceptors.deadlines import remaining
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto, utcnow
from services.profile import convert, metrics
from services.profile.adapters.peers import Peers
from services.profile.config import ProfileConfig
from services.profile.profiles import load
from services.profile.store import addresses, interactions, segment_members, segments

log = logging.getLogger("omni.profile.views")


class Views:
    def __init__(self, runtime: Runtime, config: ProfileConfig, peers: Peers) -> None:
        assert runtime.db is not None
        self.db = runtime.db
        self.config = config
        self.peers = peers

    async def view(self, customer: str, recent: int, window: timedelta, orders: int) -> r.CustomerView:
        name = f"customers/{customer}"
        budget = max(0.0, min(self.config.view_source_timeout, remaining() - self.config.view_reserve))
        sources: dict[str, Callable[[], Awaitable[Any]]] = {}
        if "cart" in self.config.peers:
            sources["cart"] = lambda: asyncio.gather(
                self.peers.active_cart(name, budget), self.peers.recent_orders(name, orders, budget)
            )
        if "messaging" in self.config.peers:
            sources["messaging"] = lambda: self.peers.open_conversation(name, budget)
        if "preferences" in self.config.peers:
            sources["preferences"] = lambda: self.peers.consents(name, budget)
        tasks = {s: asyncio.create_task(self._timed(s, call)) for s, call in sources.items()}
        out = r.CustomerView(
            name=f"{name}/customerView",
            activity_window=duration_pb2.Duration(seconds=int(window.total_seconds())),
        )
        await self._own(out, customer, recent, window)
        if tasks:
            await asyncio.wait(tasks.values(), timeout=budget)
        unavailable = [s for s in ("cart", "messaging", "preferences") if s not in self.config.peers]
        for source, task in tasks.items():
            if not task.done():
                task.cancel()
                unavailable.append(source)
                continue
            result = task.result()
            if isinstance(result, BaseException):
                unavailable.append(source)
                continue
            if source == "cart":
                cart, last_orders = result
                if cart.lines:
                    out.active_cart.CopyFrom(cart)
                out.recent_orders.extend(last_orders)
            elif source == "messaging" and result is not None:
                out.open_conversation.CopyFrom(result)
            elif source == "preferences":
                out.consents.extend(result)
        for source in unavailable:
            metrics.VIEW_UNAVAILABLE.labels(source).inc()
        out.unavailable_sources.extend(sorted(unavailable))
        out.compute_time.CopyFrom(to_proto(utcnow()))
        return out

    async def _timed(self, source: str, call: Callable[[], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        try:
            return await call()
        except Exception as exc:  # a failed source degrades the view
            log.info("customer view source %s failed: %r", source, exc)
            return exc
        finally:
            metrics.VIEW_FANOUT_SECONDS.labels(source).observe(time.perf_counter() - start)

    async def _own(self, out: r.CustomerView, customer: str, recent: int, window: timedelta) -> None:
        since = utcnow() - window
        async with self.db.transaction() as session:
            out.profile.CopyFrom(await load(session, customer))
            rows = (
                await session.execute(
                    select(addresses)
                    .where(addresses.c.customer == customer)
                    .order_by(
                        (addresses.c.default_shipping | addresses.c.default_billing).desc(),
                        addresses.c.update_time.desc(),
                    )
                )
            ).all()
            out.addresses.extend(convert.address(row) for row in rows)
            rows = (
                await session.execute(
                    select(interactions)
                    .where(interactions.c.customer == customer)
                    .order_by(interactions.c.occur_time.desc(), interactions.c.id.desc())
                    .limit(recent)
                )
            ).all()
            out.recent_interactions.extend(convert.interaction(row) for row in rows)
            if rows:
                last = rows[0]
                out.last_channel.CopyFrom(
                    channel_pb2.ChannelContext(channel=last.channel, store=last.store, device=last.device)
                )
            in_window = (interactions.c.customer == customer, interactions.c.occur_time >= since)
            usage = (
                await session.execute(
                    select(
                        interactions.c.channel,
                        func.count().label("interaction_count"),
                        func.count()
                        .filter(interactions.c.type == r.Interaction.TYPE_ORDER_PLACED)
                        .label("order_count"),
                        func.min(interactions.c.occur_time).label("first_seen"),
                        func.max(interactions.c.occur_time).label("last_seen"),
                    )
                    .where(*in_window, interactions.c.channel != 0)
                    .group_by(interactions.c.channel)
                    .order_by(func.max(interactions.c.occur_time).desc())
                )
            ).all()
            out.recent_channel_usage.extend(convert.channel_usage(u) for u in usage)
            counts = (
                await session.execute(
                    select(interactions.c.type, func.count())
                    .where(*in_window)
                    .group_by(interactions.c.type)
                    .order_by(interactions.c.type)
                )
            ).all()
            out.recent_interaction_counts.extend(r.InteractionTypeCount(type=t, count=n) for t, n in counts)
            members = (
                await session.execute(
                    select(segments.c.id, segments.c.display_name, segment_members.c.join_time)
                    .join(segments, segments.c.id == segment_members.c.segment)
                    .where(segment_members.c.customer == customer)
                    .order_by(segments.c.display_name)
                )
            ).all()
            out.segments.extend(
                r.SegmentMembership(
                    segment=f"segments/{m.id}", display_name=m.display_name, join_time=to_proto(m.join_time)
                )
                for m in members
            )
