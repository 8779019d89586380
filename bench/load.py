"""A closed-loop unary load generator, run as its own process so it never shares the server's CPU
time slice or event loop: ``python -m bench.load`` reads a JSON job on stdin, prints JSON results.

It sends pre-serialized request bytes through a generic stub, so the same client measures any
method of any service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from typing import Any

import grpc


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(latencies: list[float], errors: dict[str, int], elapsed: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(ordered, 50) * 1000, 3),
        "p90_ms": round(percentile(ordered, 90) * 1000, 3),
        "p99_ms": round(percentile(ordered, 99) * 1000, 3),
        "max_ms": round((ordered[-1] if ordered else 0.0) * 1000, 3),
    }


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    payloads = [base64.b64decode(p) for p in job["requests"]]
    metadata = tuple((k, v) for k, v in job.get("metadata", []))
    concurrency = int(job["concurrency"])
    duration = float(job["duration"])
    warmup = float(job.get("warmup", 0.5))
    channels = [grpc.aio.insecure_channel(job["target"]) for _ in range(max(1, min(concurrency, 8)))]
    calls = [
        ch.unary_unary(job["method"], request_serializer=None, response_deserializer=None) for ch in channels
    ]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = 0

    async def worker(index: int, until: float, record: bool) -> None:
        nonlocal counter
        call = calls[index % len(calls)]
        while time.perf_counter() < until:
            payload = payloads[counter % len(payloads)]
            counter += 1
            start = time.perf_counter()
            try:
                await call(payload, metadata=metadata, timeout=10)
                if record:
                    latencies.append(time.perf_counter() - start)
            except grpc.aio.AioRpcError as exc:
                if record:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1

    try:
        for ch in channels:
            await ch.channel_ready()
        await asyncio.gather(*(worker(i, time.perf_counter() + warmup, False) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, started + duration, True) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for ch in channels:
            await ch.close()
    return summarize(latencies, errors, elapsed)


def main() -> None:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run_job(job))))


if __name__ == "__main__":
    main()
