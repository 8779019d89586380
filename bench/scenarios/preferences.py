"""Preferences: DecideContact (the hot path) beside the runtime's no-op Ping, and audiences.

- ``decide_contact``: DecideContact for marketing about "offers" without a channel (the service
  walks the customer's preferred channels: consents, contact points, quiet hours, caps), over
  256 customers, at 1 and 16 concurrent callers, taking turns with the probe's Ping in the same
  run (bench/load.py). Target: throughput >= 0.5x Ping.
- ``audience``: ListOptedInCustomers over 100,000 customers (seeded with set-based SQL, not
  RPCs: e-mail "offers" granted by 90 %, refused by the rest; push "*" granted by a third, with
  an exact "offers" refusal for some of them; preferred channels for half), paged to the end at
  500 and 5000 per page: pages/s, total time, and the cost of the last page against the first
  (keyset paging: a deep page must cost what the first does). The query plan is recorded.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench.env import BenchEnv, grpc_arm, ratio
from bench.report import target
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import preferences_service_pb2_grpc
from omni_runtime.db.engine import Database
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.services import running_service
from services.preferences.main import SERVICE as PREFERENCES

SERVICE = "/omni.preferences.v1.PreferencesService"
CUSTOMERS = 100_000
DECIDE_CUSTOMERS = 256
CONCURRENCIES = (1, 16)
DURATION = 3.0
ROUNDS = 3
NOON_UTC = 1_781_082_000  # 2026-06-10 09:00 UTC: outside the seeded quiet hours

SEED = [
    """
    INSERT INTO consents (id, customer_id, channel, topic, state, legal_basis, recorded_by,
                          grant_time, create_time, update_time)
    SELECT 'e' || i, 'bench-' || lpad(i::text, 6, '0'), 9, 'offers',
           CASE WHEN i % 10 = 0 THEN 2 ELSE 1 END, 1, 'customers/bench-' || lpad(i::text, 6, '0'),
           now(), now(), now()
    FROM generate_series(1, :n) AS i
    """,
    """
    INSERT INTO consents (id, customer_id, channel, topic, state, legal_basis, recorded_by,
                          grant_time, create_time, update_time)
    SELECT 'p' || i, 'bench-' || lpad(i::text, 6, '0'), 11, '*', 1, 1,
           'customers/bench-' || lpad(i::text, 6, '0'), now(), now(), now()
    FROM generate_series(1, :n) AS i WHERE i % 3 = 0
    """,
    """
    INSERT INTO consents (id, customer_id, channel, topic, state, legal_basis, recorded_by,
                          create_time, update_time)
    SELECT 'q' || i, 'bench-' || lpad(i::text, 6, '0'), 11, 'offers', 2, 1,
           'customers/bench-' || lpad(i::text, 6, '0'), now(), now()
    FROM generate_series(1, :n) AS i WHERE i % 12 = 0
    """,
    """
    INSERT INTO contact_points (customer_id, origin, channel, value, verified, is_primary)
    SELECT 'bench-' || lpad(i::text, 6, '0'), 'profile', 9, 'c' || i || '@example.com', true, true
    FROM generate_series(1, :n) AS i
    """,
    """
    INSERT INTO contact_points (customer_id, origin, channel, value, verified, is_primary)
    SELECT 'bench-' || lpad(i::text, 6, '0'), 'profile', 11, 'push-' || i, true, true
    FROM generate_series(1, :n) AS i WHERE i % 3 = 0
    """,
    """
    INSERT INTO preferences (customer_id, preferred_channels, quiet_hours, time_zone, frequency_caps,
                             update_time)
    SELECT 'bench-' || lpad(i::text, 6, '0'), '{11,9}',
           '[{"start": 79200, "end": 28800, "days": [], "channels": []}]', 'Europe/Bucharest',
           '[{"channel": 9, "topic": "", "max_count": 3, "seconds": 604800}]', now()
    FROM generate_series(1, :n) AS i WHERE i % 2 = 0
    """,
    "ANALYZE",
]


async def _seed(url: str) -> float:
    started = time.perf_counter()
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        for statement in SEED:
            async with db.transaction() as session:
                await session.execute(text(statement), {"n": CUSTOMERS} if ":n" in statement else {})
    finally:
        await db.close()
    return round(time.perf_counter() - started, 1)


async def _plan(url: str) -> list[str]:
    """The plan of the service's own audience statement for a page after the middle customer."""
    from sqlalchemy.dialects import postgresql

    from services.preferences.audiences import page_statement

    statement, _, _ = page_statement(svc.ListOptedInCustomersRequest(topic="offers"), 500, "bench-050000")
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        async with db.transaction() as session:
            return [r[0] for r in await session.execute(text(f"EXPLAIN (COSTS OFF) {sql}"))]
    finally:
        await db.close()


async def _page_through(stub: Any, md: Any, page_size: int) -> dict[str, Any]:
    request = svc.ListOptedInCustomersRequest(topic="offers", page_size=page_size)
    pages, customers, times = 0, 0, []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        page = await stub.ListOptedInCustomers(request, metadata=md, timeout=60)
        times.append(time.perf_counter() - t0)
        pages += 1
        customers += len(page.customers)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    total = time.perf_counter() - started
    first, last = times[0], times[-2] if len(times) > 1 else times[-1]
    return {
        "page_size": page_size,
        "pages": pages,
        "customers": customers,
        "total_s": round(total, 2),
        "pages_per_s": round(pages / total, 1),
        "customers_per_s": round(customers / total),
        "first_page_ms": round(first * 1000, 1),
        "last_full_page_ms": round(last * 1000, 1),
        "median_page_ms": round(sorted(times)[len(times) // 2] * 1000, 1),
        "deep_over_first": round(last / first, 2) if first else None,
    }


async def run(env: BenchEnv) -> dict[str, Any]:
    out: dict[str, Any] = {"targets": []}
    url = env.new_database("preferences")
    settings = env.settings("preferences", url)
    md = (*bearer(env.token("serviceClients/bench", roles=["service"])), ("x-omni-channel", "web"))
    async with running_service(PREFERENCES, settings, key_source=env.key_source) as prefs:
        out["seed_s"] = await _seed(url)
        out["customers"] = CUSTOMERS
        stub = preferences_service_pb2_grpc.PreferencesServiceStub(prefs.channel)

        decides = [
            svc.DecideContactRequest(
                name=f"customers/bench-{i:06d}/preferences",
                topic="offers",
                evaluate_time={"seconds": NOON_UTC},
            )
            for i in range(1, DECIDE_CUSTOMERS + 1)
        ]
        sample = await stub.DecideContact(
            decides[1], metadata=md
        )  # bench-000002: push first, allowed? no push
        out["decide_contact_sample"] = {"allowed": sample.allowed, "channel": int(sample.channel)}
        ping_arm = env.ping_arm(await env.ping_target(), md)
        levels = []
        for concurrency in CONCURRENCIES:
            got = await env.compare(
                [ping_arm, grpc_arm("decide", prefs.target, f"{SERVICE}/DecideContact", decides, md)],
                concurrency=concurrency,
                duration=DURATION,
                rounds=ROUNDS,
            )
            level = {
                "concurrency": concurrency,
                "baseline_ping": got["ping"],
                "decide_contact": got["decide"],
                "throughput_ratio": ratio(got["decide"], got["ping"]),
                "p99_ratio": ratio(got["decide"], got["ping"], "p99_ms"),
            }
            levels.append(level)
            out["targets"].append(
                target("DecideContact vs Ping, rps", f"c={concurrency}", level["throughput_ratio"], 0.5)
            )
        out["decide_contact"] = levels

        audience = [await _page_through(stub, md, size) for size in (500, 5000)]
        out["audience"] = audience
        out["audience_plan"] = await _plan(url)
        expected = (
            CUSTOMERS
            - CUSTOMERS // 10
            + len([i for i in range(1, CUSTOMERS + 1) if i % 10 == 0 and i % 3 == 0 and i % 12 != 0])
        )
        out["audience_expected_customers"] = expected
        for run_ in audience:
            level = f"page_size={run_['page_size']}"
            out["targets"].append(
                target("audience: every opted-in customer listed", level, run_["customers"], expected)
            )
            out["targets"].append(
                target(
                    "audience: last page / first page time", level, run_["deep_over_first"], 3.0, at_most=True
                )
            )
    return out
