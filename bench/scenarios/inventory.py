"""Inventory: "is it in a store near me" for 20 SKUs, and reserve+commit on one hot SKU.

- ``availability_near``: CheckAvailability of 20 SKUs around a point (40 stores in the city,
  10 km radius, nearest 10 with stock), closed-loop from a separate process (``env.load``).
- ``hot_sku``: every caller loops CreateReservation(1 unit) → CommitReservation on the same
  (store, SKU) until the stock runs out, at 1, 8 and 64 concurrent callers. The stock is sized so
  it runs out within the run: the guard is exercised under contention, not just the happy
  path. ``oversold_units`` counts units committed beyond the stock (must be 0), and the level is
  checked afterwards: ``on_hand`` = stock − commits, nothing left reserved.
- The physical reference, beside each hot-SKU level: ``bare_update_per_s`` is the rate of the
  bare guarded single-row ``UPDATE … SET reserved = reserved + 1 WHERE … available >= 1`` (what one
  reservation needs of the hot row, each its own transaction) from as many connections, on the
  same embedded PostgreSQL and table (a row of its own), measured just before and just after the
  level. ``bare_update_ratio`` = reservations/s ÷ that: above 1 means grouping beats one update
  per buyer, although each of our reservations is also committed (a second change of the row),
  written with its movement and events, and answered over gRPC.

The hot-SKU driver and the bare updater run in their own process (``python -m
bench.scenarios.inventory``, a JSON job on stdin), so they never share the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import uuid
from typing import Any

import grpc

from bench.env import BenchEnv, grpc_arm, ratio, run_child
from bench.report import target
from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as res
from omni.type.v1 import address_pb2

CONCURRENCIES = (1, 8, 64)
ITEMS = 20
STORES = 40
CENTRE = (46.7700, 23.5900)
SERVICE = "/omni.inventory.v1.InventoryService"
# Units on the hot SKU per concurrency level: about 2 s of work on a small (2-core) machine, so
# the stock runs out during the run and the last units are fought over.
HOT_STOCK = {1: 60, 8: 300, 64: 600}
HOT_DEADLINE_S = 4.0
BARE_SECONDS = 1.0
BARE_SKU = "BARE-UPDATE"
BARE_LOCATION = "bench-bare-update"


def _percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


async def _seed(
    stub: inventory_service_pb2_grpc.InventoryServiceStub, md: tuple[tuple[str, str], ...]
) -> list[str]:
    """20 items and 40 stores scattered over ~25 km around the centre, most stocking most items."""
    rng = random.Random(42)
    skus = [f"BENCH-{i:03d}" for i in range(ITEMS)]
    await stub.BatchUpsertItems(
        svc.BatchUpsertItemsRequest(items=[res.Item(name=f"items/{s}", title=s, active=True) for s in skus]),
        metadata=md,
    )
    stores = []
    for i in range(STORES):
        distance_deg = rng.uniform(0.0, 0.22)
        angle = rng.uniform(0, 2 * math.pi)
        loc = await stub.CreateLocation(
            svc.CreateLocationRequest(
                location_id=f"bench-s{i:03d}",
                location=res.Location(
                    type=res.LOCATION_TYPE_STORE,
                    display_name=f"Store {i}",
                    address=address_pb2.PostalAddress(region_code="RO", locality="Cluj-Napoca"),
                    coordinates=address_pb2.GeoPoint(
                        latitude=CENTRE[0] + distance_deg * math.sin(angle),
                        longitude=CENTRE[1] + distance_deg * math.cos(angle) * 1.45,
                    ),
                    pickup_enabled=True,
                ),
            ),
            metadata=md,
        )
        stores.append(loc.name)
    gate = asyncio.Semaphore(32)

    async def receive(store: str, sku: str) -> None:
        async with gate:
            await stub.AdjustStock(
                svc.AdjustStockRequest(
                    name=f"{store}/stockLevels/{sku}",
                    delta=rng.randint(1, 20),
                    reason=res.ADJUSTMENT_REASON_RECEIPT,
                    request_id=str(uuid.uuid4()),
                ),
                metadata=md,
            )

    await asyncio.gather(*(receive(st, sku) for st in stores for sku in skus if rng.random() < 0.7))
    return skus


async def _hot_level(
    env: BenchEnv,
    stub: inventory_service_pb2_grpc.InventoryServiceStub,
    md: tuple[tuple[str, str], ...],
    target: str,
    concurrency: int,
    database_url: str,
) -> dict[str, Any]:
    sku = f"HOT-{concurrency}"
    store = f"locations/bench-hot-{concurrency}"
    stock = HOT_STOCK[concurrency]
    await stub.CreateItem(
        svc.CreateItemRequest(item_id=sku, item=res.Item(title=sku, active=True)), metadata=md
    )
    await stub.CreateLocation(
        svc.CreateLocationRequest(
            location_id=store.split("/")[1],
            location=res.Location(type=res.LOCATION_TYPE_WAREHOUSE, display_name="Hot", ship_from=True),
        ),
        metadata=md,
    )
    level_name = f"{store}/stockLevels/{sku}"
    await stub.AdjustStock(
        svc.AdjustStockRequest(
            name=level_name, delta=stock, reason=res.ADJUSTMENT_REASON_RECEIPT, request_id=str(uuid.uuid4())
        ),
        metadata=md,
    )
    job = {
        "kind": "drive",
        "target": target,
        "metadata": list(md),
        "item": f"items/{sku}",
        "location": store,
        "concurrency": concurrency,
        "deadline": HOT_DEADLINE_S,
    }
    bare_before = await _bare(database_url, concurrency)
    result: dict[str, Any] = await run_child("bench.scenarios.inventory", job)
    bare_after = await _bare(database_url, concurrency)
    level = await stub.GetStockLevel(svc.GetStockLevelRequest(name=level_name), metadata=md)
    commits = result["committed"]
    bare = round((bare_before["updates_per_s"] + bare_after["updates_per_s"]) / 2, 1)
    result.update(
        {
            "concurrency": concurrency,
            "stock": stock,
            "oversold_units": max(0, commits - stock),
            "final_on_hand": level.on_hand,
            "final_reserved": level.reserved,
            "ledger_consistent": level.on_hand == stock - commits
            and level.reserved == 0
            and level.on_hand >= 0,
            "bare_update_per_s": bare,
            "bare_update_runs": [bare_before, bare_after],
            "bare_update_ratio": round(result["reserve_commit_per_s"] / bare, 3) if bare else None,
        }
    )
    return result


async def run(env: BenchEnv) -> dict[str, Any]:
    from omni_runtime.testing.services import running_service
    from services.inventory.main import SERVICE as INVENTORY

    settings = env.settings("inventory", env.new_database("inventory"))
    md = (("authorization", f"Bearer {env.token('serviceClients/bench', roles=['service'])}"),)
    out: dict[str, Any] = {}
    async with running_service(INVENTORY, settings, key_source=env.key_source) as svc_:
        stub = inventory_service_pb2_grpc.InventoryServiceStub(svc_.channel)
        started = time.perf_counter()
        skus = await _seed(stub, md)
        out["seed_s"] = round(time.perf_counter() - started, 1)

        request = svc.CheckAvailabilityRequest(
            items=[f"items/{s}" for s in skus],
            near=svc.NearbyArea(
                point=address_pb2.GeoPoint(latitude=CENTRE[0], longitude=CENTRE[1]),
                radius_meters=10_000,
                max_locations=10,
            ),
            pickup_only=True,
        )
        sample = await stub.CheckAvailability(request, metadata=md)
        ping = env.ping_arm(await env.ping_target(), md)
        near = grpc_arm("availability", svc_.target, f"{SERVICE}/CheckAvailability", [request], md)
        levels = []
        for c in (16,):
            got = await env.compare([ping, near], concurrency=c, duration=2.0, rounds=2)
            levels.append(
                {
                    "concurrency": c,
                    **got["availability"],
                    "baseline_ping": got["ping"],
                    "throughput_ratio": ratio(got["availability"], got["ping"]),
                }
            )
        out["availability_near"] = {
            "method": f"{SERVICE}/CheckAvailability",
            "items": ITEMS,
            "stores_in_city": STORES,
            "stores_answered": len(sample.locations),
            "levels": levels,
        }
        await _bare_row(stub, md)
        hot = [await _hot_level(env, stub, md, svc_.target, c, settings.database_url) for c in CONCURRENCIES]
        out["hot_sku_reserve_commit"] = hot
        out["oversold_units_total"] = sum(r["oversold_units"] for r in hot)
    by_level = {r["concurrency"]: r for r in hot}
    top, mid, one = by_level[CONCURRENCIES[-1]], by_level[CONCURRENCIES[1]], by_level[CONCURRENCIES[0]]
    out["targets"] = [
        target("availability near a point vs Ping, rps", "c=16", levels[-1]["throughput_ratio"], 0.3),
        target("hot SKU reservations/s ÷ bare UPDATE/s", "c=64", top["bare_update_ratio"], 1.0),
        target(
            "hot SKU pairs/s at 64 ÷ at 8",
            "c=64",
            round(top["reserve_commit_per_s"] / mid["reserve_commit_per_s"], 3)
            if mid["reserve_commit_per_s"]
            else None,
            1.0,
        ),
        target(
            "hot SKU p99 at 64 ÷ p50 at 1",
            "c=64",
            round(top["pair_p99_ms"] / one["pair_p50_ms"], 2) if one["pair_p50_ms"] else None,
            10.0,
            at_most=True,
        ),
        target("hot SKU oversold units", "all", out["oversold_units_total"], 0, at_most=True),
    ]
    return out


async def _bare_row(
    stub: inventory_service_pb2_grpc.InventoryServiceStub, md: tuple[tuple[str, str], ...]
) -> None:
    """The bare updater's own level, stocked so it never runs out."""
    await stub.CreateItem(
        svc.CreateItemRequest(item_id=BARE_SKU, item=res.Item(title=BARE_SKU, active=True)), metadata=md
    )
    await stub.CreateLocation(
        svc.CreateLocationRequest(
            location_id=BARE_LOCATION,
            location=res.Location(type=res.LOCATION_TYPE_WAREHOUSE, display_name="Bare", ship_from=True),
        ),
        metadata=md,
    )
    await stub.AdjustStock(
        svc.AdjustStockRequest(
            name=f"locations/{BARE_LOCATION}/stockLevels/{BARE_SKU}",
            delta=1_000_000_000,
            reason=res.ADJUSTMENT_REASON_RECEIPT,
            request_id=str(uuid.uuid4()),
        ),
        metadata=md,
    )


async def _bare(database_url: str, concurrency: int) -> dict[str, Any]:
    """The guarded single-row UPDATE a reservation needs, autocommit, from N connections.

    In this process (idle meanwhile: the services wait for calls), straight through asyncpg:
    the client costs next to nothing, so the rate is PostgreSQL's on the hot row."""
    import asyncpg

    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    connections = [await asyncpg.connect(url) for _ in range(concurrency)]
    statement = (
        "UPDATE stock_levels SET reserved = reserved + 1, version = version + 1, update_time = now()"
        " WHERE location_id = $1 AND item_sku = $2 AND on_hand - reserved - safety_stock >= 1"
        " RETURNING on_hand, reserved"
    )
    done = 0

    async def worker(conn: Any, until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            await conn.fetchrow(statement, BARE_LOCATION, BARE_SKU)
            done += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, started + BARE_SECONDS) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    return {"updates": done, "elapsed_s": round(elapsed, 3), "updates_per_s": round(done / elapsed, 1)}


# --- the hot-SKU driver (child process) ------------------------------------------------------


async def _drive(job: dict[str, Any]) -> dict[str, Any]:
    md = tuple((k, v) for k, v in job["metadata"])
    concurrency = int(job["concurrency"])
    channels = [grpc.aio.insecure_channel(job["target"]) for _ in range(max(1, min(concurrency, 8)))]
    stubs = [inventory_service_pb2_grpc.InventoryServiceStub(ch) for ch in channels]
    line = res.ReservationLine(item=job["item"], quantity=1, location=job["location"])
    pairs: list[float] = []
    rejected = 0
    errors: dict[str, int] = {}
    last_success = 0.0
    sold_out = asyncio.Event()

    async def worker(index: int, until: float) -> None:
        nonlocal rejected, last_success
        stub = stubs[index % len(stubs)]
        while time.perf_counter() < until and not sold_out.is_set():
            start = time.perf_counter()
            try:
                made = await stub.CreateReservation(
                    svc.CreateReservationRequest(
                        reservation=res.Reservation(lines=[line]), request_id=str(uuid.uuid4())
                    ),
                    metadata=md,
                    timeout=10,
                )
                await stub.CommitReservation(
                    svc.CommitReservationRequest(name=made.name), metadata=md, timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
                    rejected += 1
                    sold_out.set()  # the stock is gone: every caller stops
                else:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                continue
            pairs.append(time.perf_counter() - start)
            last_success = time.perf_counter()

    try:
        for ch in channels:
            await ch.channel_ready()
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, started + float(job["deadline"])) for i in range(concurrency)))
    finally:
        for ch in channels:
            await ch.close()
    elapsed = max(1e-9, (last_success or time.perf_counter()) - started)
    ordered = sorted(pairs)
    return {
        "committed": len(pairs),
        "rejected_insufficient_stock": rejected,
        "errors": errors,
        "sold_out": sold_out.is_set(),
        "elapsed_s": round(elapsed, 3),
        "reserve_commit_per_s": round(len(pairs) / elapsed, 1),
        "pair_p50_ms": round(_percentile(ordered, 50) * 1000, 2),
        "pair_p99_ms": round(_percentile(ordered, 99) * 1000, 2),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_drive(json.load(sys.stdin)))))
