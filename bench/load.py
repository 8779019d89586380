"""The closed-loop load generator, run as its own process so it never shares the server's CPU
time slice or event loop: ``python -m bench.load`` reads a JSON job on stdin, prints JSON results.

A job names one or more *arms* (what to call: a gRPC method, or an HTTP route) and how many
rounds to run. The arms take turns, round after round (A, B, A, B, …), each round a slice of
the duration, and each arm's latencies are merged over its rounds. On a machine shared with
other work, load that comes and goes then hits every arm alike, so the ratio of two arms
measured in one job is much steadier than two measurements taken one after the other.

gRPC arms send pre-serialized request bytes through a generic stub, so the same client measures
any method of any service. HTTP arms write one pre-built HTTP/1.1 request per call on kept-alive
connections (one per worker) and parse only the status line and Content-Length, so the client's
own cost stays close to grpc.aio's and an HTTP-vs-gRPC ratio measures the server side.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Awaitable, Callable
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


# One call of an arm by worker ``index``; returns an error label, or None on success.
Caller = Callable[[int], Awaitable[str | None]]


class GrpcArm:
    def __init__(self, spec: dict[str, Any], concurrency: int) -> None:
        self.payloads = [base64.b64decode(p) for p in spec["requests"]]
        self.metadata = tuple((k, v) for k, v in spec.get("metadata", []))
        self.channels = [
            grpc.aio.insecure_channel(spec["target"]) for _ in range(max(1, min(concurrency, 8)))
        ]
        self.calls = [
            ch.unary_unary(spec["method"], request_serializer=None, response_deserializer=None)
            for ch in self.channels
        ]
        self.counter = 0

    async def open(self) -> None:
        for ch in self.channels:
            await ch.channel_ready()

    async def call(self, index: int) -> str | None:
        payload = self.payloads[self.counter % len(self.payloads)]
        self.counter += 1
        try:
            await self.calls[index % len(self.calls)](payload, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return None

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


def build_request(spec: dict[str, Any]) -> bytes:
    body = (spec.get("body") or "").encode()
    lines = [f"{spec['method']} {spec['path']} HTTP/1.1", f"Host: {spec['host']}:{spec['port']}"]
    lines += [f"{k}: {v}" for k, v in spec.get("headers", [])]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def http_call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


class HttpArm:
    def __init__(self, spec: dict[str, Any], concurrency: int) -> None:
        self.spec = spec
        self.request = build_request(spec)
        self.concurrency = concurrency
        self.connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self) -> None:
        self.connections = [
            await asyncio.open_connection(self.spec["host"], int(self.spec["port"]))
            for _ in range(self.concurrency)
        ]

    async def call(self, index: int) -> str | None:
        reader, writer = self.connections[index]
        status = await http_call(reader, writer, self.request)
        return None if status == 200 else str(status)

    async def close(self) -> None:
        for _, writer in self.connections:
            writer.close()


async def _drive(
    arm: GrpcArm | HttpArm, concurrency: int, seconds: float, record: bool
) -> tuple[list[float], dict[str, int], float]:
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def worker(index: int, until: float) -> None:
        while time.perf_counter() < until:
            start = time.perf_counter()
            failed = await arm.call(index)
            if not record:
                continue
            if failed is None:
                latencies.append(time.perf_counter() - start)
            else:
                errors[failed] = errors.get(failed, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, started + seconds) for i in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run every arm of ``job`` in alternating rounds; one merged summary per arm name."""
    concurrency = int(job["concurrency"])
    duration = float(job["duration"])
    rounds = max(1, int(job.get("rounds", 1)))
    warmup = float(job.get("warmup", 0.5))
    specs: list[dict[str, Any]] = job["arms"]
    arms = [(HttpArm if s.get("kind") == "http" else GrpcArm)(s, concurrency) for s in specs]
    merged: list[tuple[list[float], dict[str, int], float]] = [([], {}, 0.0) for _ in arms]
    try:
        for arm in arms:
            await arm.open()
            await _drive(arm, concurrency, warmup, record=False)
        for _ in range(rounds):
            for i, arm in enumerate(arms):
                latencies, errors, elapsed = await _drive(arm, concurrency, duration / rounds, record=True)
                total_lat, total_err, total_s = merged[i]
                total_lat.extend(latencies)
                for key, n in errors.items():
                    total_err[key] = total_err.get(key, 0) + n
                merged[i] = (total_lat, total_err, total_s + elapsed)
    finally:
        for arm in arms:
            await arm.close()
    out: dict[str, Any] = {}
    for spec, (latencies, errors, elapsed) in zip(specs, merged, strict=True):
        out[spec["name"]] = {**summarize(latencies, errors, elapsed), "concurrency": concurrency}
    return out


def main() -> None:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run_job(job))))


if __name__ == "__main__":
    main()
