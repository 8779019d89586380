"""Profile: the agent's read, the timeline's ingestion, segments and journeys at scale.

- ``customer_view``: GetCustomerView (profile, 10 recent interactions, channel usage, segments,
  and the fan-out to the real cart service for the active cart and the last orders) at 1 and 16
  callers, the runtime's no-op Ping taking turns with it in the same load process.
- ``ingestion``: 20,000 cart events (line added / order placed, 2,000 customers) waiting in
  JetStream when the profile service starts; events/s until the last one is on the timeline,
  beside the bare rate of inserting the same interaction rows from one connection (asyncpg,
  one transaction per 256 rows, into a copy of the table with the same indexes), same run.
- ``segment_update``: a dynamic segment's member joining on the event that crosses its rule:
  time from publishing one OrderPlacedEvent to receiving its SegmentMembershipChangedEvent,
  30 times one after another (p50 / p95 / max).
- ``scale``: 100,000 profiles and 1,000,000 interactions (and their purchases) written with
  set-based SQL, then RecomputeSegment of a segment over lifetime figures and GetJourneyReport
  over a 30-day window, each timed at the caller.

Profile gets a NATS server of its own, so its consumers see only these events (not the other
scenarios' carts); cart and inventory run on the shared one.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from bench.env import BenchEnv, grpc_arm, ratio
from bench.report import target
from omni.cart.v1 import events_pb2 as cart_ev
from omni.cart.v1 import resources_pb2 as cart_r
from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import profile_service_pb2_grpc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2, money_pb2
from omni_runtime.events.bus import EventBus, subject_for
from omni_runtime.events.outbox import EVENT_TYPE_HEADER, MSG_ID_HEADER
from omni_runtime.localinfra import EmbeddedNats, free_port
from omni_runtime.testing.services import running_service, test_settings
from omni_runtime.timestamps import to_proto
from services.cart.main import SERVICE as CART
from services.inventory.main import SERVICE as INVENTORY
from services.profile.main import SERVICE as PROFILE

VIEW = "/omni.profile.v1.ProfileService/GetCustomerView"
CONCURRENCIES = (1, 16)
DURATION = 2.0
ROUNDS = 2
EVENTS = 20_000
CUSTOMERS = 2_000
BATCH = 256
SEGMENT_SAMPLES = 30
SCALE_PROFILES = 100_000
SCALE_INTERACTIONS = 1_000_000


def _events(now: datetime) -> list[Any]:
    """Half line-added cart changes, half orders, spread over the customers and the last year."""
    out: list[Any] = []
    for i in range(EVENTS):
        customer = f"customers/bp{i % CUSTOMERS}"
        when = to_proto(now - timedelta(minutes=i))
        channel = channel_pb2.ChannelContext(
            channel=(channel_pb2.CHANNEL_WEB, channel_pb2.CHANNEL_MOBILE_APP)[i % 2]
        )
        if i % 2:
            out.append(
                cart_ev.CartUpdatedEvent(
                    cart=f"{customer}/cart",
                    kind=cart_r.CART_CHANGE_KIND_LINE_ADDED,
                    line_ids=[f"l{i}"],
                    channel=channel,
                    occur_time=when,
                )
            )
        else:
            out.append(_order(customer, f"O-{i}", 2500 + i % 5000, channel, when))
    return out


def _order(
    customer: str, number: str, total: int, channel: channel_pb2.ChannelContext, when: Any
) -> cart_ev.OrderPlacedEvent:
    return cart_ev.OrderPlacedEvent(
        customer=customer,
        order=cart_r.Order(
            name=f"{customer}/orders/{number}",
            order_number=number,
            currency_code="EUR",
            total=money_pb2.Money(currency_code="EUR", minor_units=total),
            channel=channel,
        ),
        occur_time=when,
    )


async def _publish(bus: EventBus, messages: list[Any]) -> None:
    async def one(message: Any) -> None:
        name = message.DESCRIPTOR.full_name
        await bus.js.publish(
            subject_for(name),
            message.SerializeToString(),
            headers={MSG_ID_HEADER: str(uuid.uuid4()), EVENT_TYPE_HEADER: name},
        )

    for start in range(0, len(messages), 500):
        await asyncio.gather(*(one(m) for m in messages[start : start + 500]))


def _asyncpg_url(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _until(check: Any, timeout: float = 600.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def _count(conn: Any, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


COLUMNS = (
    "customer, origin, type, channel, store, device, occur_time, subject, summary, attributes,"
    " staff_member, visit_id, recorded_by"
)


async def _bare_insert(conn: Any) -> float:
    """Events/s of inserting the timeline's rows again, one connection, BATCH rows a transaction."""
    await conn.execute("CREATE TABLE bench_interactions (LIKE interactions INCLUDING ALL)")
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM interactions ORDER BY id")
    statement = (
        f"INSERT INTO bench_interactions ({COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )
    values = [tuple(row) for row in rows]
    started = time.perf_counter()
    for start in range(0, len(values), BATCH):
        async with conn.transaction():
            await conn.executemany(statement, values[start : start + BATCH])
    elapsed = time.perf_counter() - started
    await conn.execute("DROP TABLE bench_interactions")
    return len(values) / elapsed


async def _segment_latency(nats_url: str, stub: Any, md: Any) -> dict[str, Any]:
    segment = await stub.CreateSegment(
        svc.CreateSegmentRequest(
            segment=r.Segment(
                display_name="Spent 50 EUR", rule=r.SegmentRule(filter="lifetime.total_spend.EUR >= 5000")
            )
        ),
        metadata=md,
    )

    async def ready() -> bool:
        got = await stub.GetSegment(svc.GetSegmentRequest(name=segment.name), metadata=md)
        return bool(got.state == r.Segment.STATE_READY)

    await _until(ready)
    bus = EventBus(nats_url, name="bench-profile-segments")
    await bus.start()
    await bus.wait_connected(10)
    joined: dict[str, float] = {}
    arrived = asyncio.Event()

    async def on_change(msg: Any) -> None:
        change = ev.SegmentMembershipChangedEvent.FromString(msg.data)
        if change.segment == segment.name and change.change == ev.SegmentMembershipChangedEvent.CHANGE_JOINED:
            joined[change.customer] = time.perf_counter()
            arrived.set()

    subscription = await bus.nc.subscribe(
        subject_for(ev.SegmentMembershipChangedEvent.DESCRIPTOR.full_name), cb=on_change
    )
    samples: list[float] = []
    try:
        for k in range(SEGMENT_SAMPLES):
            customer = f"customers/seg-{uuid.uuid4().hex[:8]}"
            arrived.clear()
            sent = time.perf_counter()
            await _publish(
                bus,
                [_order(customer, f"S-{k}", 6000, channel_pb2.ChannelContext(), to_proto(datetime.now(UTC)))],
            )
            async with asyncio.timeout(30):
                while customer not in joined:
                    await arrived.wait()
                    arrived.clear()
            samples.append((joined[customer] - sent) * 1000)
    finally:
        await subscription.unsubscribe()
        await bus.close()
    ordered = sorted(samples)
    return {
        "samples": len(samples),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        "max_ms": round(ordered[-1], 1),
    }


SEED_PROFILES = """
INSERT INTO profiles (customer, state, given_name, family_name, display_name, language_code,
  birthday_year, birthday_month, birthday_day, traits, contact_points, contact_kinds, version,
  create_time, update_time, order_count, spend, spend_orders, avg_days_between, channels)
SELECT 'sc' || g, 1, '', '', 'Customer ' || g, 'ro', 0, 0, 0,
  jsonb_build_object('tier', CASE WHEN g % 10 = 0 THEN 'gold' ELSE 'basic' END), '[]', '{}', 1,
  now() - interval '400 days', now(), 0, '{}', '{}', 0, '{}'
FROM generate_series(1::bigint, :profiles) AS g
"""
# 10 interactions per customer over the last 60 days on 4 channels; every 5th one an order.
SEED_INTERACTIONS = """
INSERT INTO interactions (customer, origin, type, channel, occur_time, subject, summary, recorded_by)
SELECT 'sc' || (1 + g % :profiles), 'sc' || (1 + g % :profiles),
  CASE WHEN g % 5 = 0 THEN 6 ELSE 1 END, 1 + (g / :profiles + g) % 4,
  now() - make_interval(mins => ((g * 7919) % 86400)), 'o' || g, '', 'bench'
FROM generate_series(1::bigint, :interactions) AS g
"""
SEED_PURCHASES = """
INSERT INTO purchases
  (order_key, customer, origin, currency, total, refunded, channel, placed_time, cancelled)
SELECT subject, customer, origin, 'EUR', 1000 + id % 20000, 0, channel, occur_time, false
FROM interactions WHERE type = 6 AND recorded_by = 'bench'
"""
SEED_FIGURES = """
UPDATE profiles p SET order_count = f.n, spend = jsonb_build_object('EUR', f.total),
  spend_orders = jsonb_build_object('EUR', f.n), first_purchase_time = f.first,
  last_purchase_time = f.last, last_interaction_time = f.last
FROM (SELECT customer, count(*) AS n, sum(total) AS total, min(placed_time) AS first,
             max(placed_time) AS last FROM purchases GROUP BY customer) f
WHERE p.customer = f.customer
"""


async def _scale(database_url: str, stub: Any, md: Any) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_url(database_url))
    started = time.perf_counter()
    try:
        params = {"profiles": SCALE_PROFILES, "interactions": SCALE_INTERACTIONS}
        for sql in (SEED_PROFILES, SEED_INTERACTIONS, SEED_PURCHASES, SEED_FIGURES):
            text = sql
            for key, value in params.items():
                text = text.replace(f":{key}", str(value))
            await conn.execute(text)
        await conn.execute("ANALYZE")
        seeded = {t: await _count(conn, t) for t in ("profiles", "interactions", "purchases")}
    finally:
        await conn.close()
    seed_s = time.perf_counter() - started
    segment = await stub.CreateSegment(
        svc.CreateSegmentRequest(
            segment=r.Segment(
                display_name="Gold repeat buyers",
                mode=r.Segment.MODE_SNAPSHOT,
                rule=r.SegmentRule(filter='lifetime.order_count >= 3 AND traits.tier = "gold"'),
            )
        ),
        metadata=md,
        timeout=300,
    )
    started = time.perf_counter()
    recomputed = await stub.RecomputeSegment(
        svc.RecomputeSegmentRequest(name=segment.name, request_id=str(uuid.uuid4())), metadata=md, timeout=300
    )
    recompute_s = time.perf_counter() - started
    now = datetime.now(UTC)
    started = time.perf_counter()
    report = await stub.GetJourneyReport(
        svc.GetJourneyReportRequest(start_time=to_proto(now - timedelta(days=30)), end_time=to_proto(now)),
        metadata=md,
        timeout=300,
    )
    journey_s = time.perf_counter() - started
    return {
        "seeded": seeded,
        "seed_s": round(seed_s, 1),
        "recompute_s": round(recompute_s, 2),
        "recompute_members": recomputed.member_count,
        "journey_report_s": round(journey_s, 2),
        "journey_purchases": report.purchase_count,
        "journey_top_path": (
            " → ".join(
                channel_pb2.Channel.Name(c).removeprefix("CHANNEL_").lower() for c in report.paths[0].channels
            )
            if report.paths
            else ""
        ),
    }


async def run(env: BenchEnv) -> dict[str, Any]:
    import asyncpg

    token = env.token("staffMembers/bench", roles=["admin"])
    md = (("authorization", f"Bearer {token}"), ("x-omni-channel", "call_center"))
    out: dict[str, Any] = {"targets": [], "events": EVENTS, "customers": CUSTOMERS}
    nats = EmbeddedNats(env.root / "nats-profile", free_port())
    nats.start()
    ping = await env.ping_target()
    try:
        bus = EventBus(nats.url, name="bench-profile")
        await bus.start()
        await bus.wait_connected(10)
        await bus.ensure_stream("cart")
        await _publish(bus, _events(datetime.now(UTC)))
        await bus.close()

        inventory_settings = env.settings("inventory", env.new_database("profile_inventory"))
        async with running_service(INVENTORY, inventory_settings, key_source=env.key_source) as inventory:
            cart_settings = env.settings(
                "cart", env.new_database("profile_cart"), targets={"inventory": inventory.target}
            )
            async with running_service(CART, cart_settings, key_source=env.key_source) as cart:
                database_url = env.new_database("profile")
                settings = test_settings(
                    "profile",
                    database_url=database_url,
                    nats_url=nats.url,
                    targets={"cart": cart.target},
                    extra={"OMNI_PROFILE_PEERS": "cart"},
                )
                conn = await asyncpg.connect(_asyncpg_url(database_url))
                async with running_service(PROFILE, settings, key_source=env.key_source) as profile:
                    started = time.perf_counter()

                    async def ingested() -> bool:
                        return await _count(conn, "interactions") >= EVENTS

                    await _until(ingested)
                    ingest_rate = EVENTS / (time.perf_counter() - started)
                    bare_rate = await _bare_insert(conn)
                    await conn.close()
                    out["ingestion"] = {
                        "events_per_s": round(ingest_rate),
                        "bare_insert_rows_per_s": round(bare_rate),
                        "ratio": round(ingest_rate / bare_rate, 3),
                    }
                    out["targets"].append(
                        target("ingestion vs bare inserts, events/s", "-", out["ingestion"]["ratio"], 0.5)
                    )

                    assert profile.host.runtime is not None
                    service_token = env.token("serviceClients/omni-profile", roles=["service"])

                    async def provider() -> str:
                        return service_token

                    profile.host.runtime.peers.token_provider = provider
                    stub = profile_service_pb2_grpc.ProfileServiceStub(profile.channel)
                    requests = [
                        svc.GetCustomerViewRequest(name=f"customers/bp{i}/customerView") for i in range(64)
                    ]
                    check = await stub.GetCustomerView(requests[0], metadata=md)
                    out["view_check"] = {
                        "recent_interactions": len(check.recent_interactions),
                        "unavailable_sources": list(check.unavailable_sources),
                    }
                    views: list[dict[str, Any]] = []
                    for c in CONCURRENCIES:
                        got = await env.compare(
                            [env.ping_arm(ping, md), grpc_arm("view", profile.target, VIEW, requests, md)],
                            concurrency=c,
                            duration=DURATION,
                            rounds=ROUNDS,
                        )
                        row = {
                            "concurrency": c,
                            "baseline_ping": got["ping"],
                            "view": got["view"],
                            "throughput_ratio": ratio(got["view"], got["ping"]),
                        }
                        views.append(row)
                        out["targets"].append(
                            target("GetCustomerView vs Ping, rps", f"c={c}", row["throughput_ratio"], 0.3)
                        )
                    out["customer_view"] = views
                    out["segment_update"] = await _segment_latency(nats.url, stub, md)
                    try:  # the figures above stay in the result when the 1M-row part fails
                        out["scale"] = await _scale(database_url, stub, md)
                    except (grpc.aio.AioRpcError, OSError, RuntimeError, ValueError) as exc:
                        out["scale"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    except grpc.aio.AioRpcError as exc:
        raise RuntimeError(f"profile bench: {exc.code().name} {exc.details()}") from None
    finally:
        nats.stop()
    return out
