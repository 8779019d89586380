"""A closed-loop HTTP/1.1 load generator, the HTTP twin of bench/load.py: ``python -m bench.http_load``
reads a JSON job on stdin and prints JSON results in the same shape.

It writes one pre-built request per call on kept-alive connections (one per worker) and parses
only the status line and Content-Length, so the client's own cost stays close to grpc.aio's and
the gateway-vs-gRPC ratio measures the server side, not a heavy HTTP client library.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.load import summarize


def build_request(job: dict[str, Any]) -> bytes:
    body = (job.get("body") or "").encode()
    lines = [f"{job['method']} {job['path']} HTTP/1.1", f"Host: {job['host']}:{job['port']}"]
    lines += [f"{k}: {v}" for k, v in job.get("headers", [])]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
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


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    request = build_request(job)
    concurrency = int(job["concurrency"])
    duration = float(job["duration"])
    warmup = float(job.get("warmup", 0.5))
    connections = [await asyncio.open_connection(job["host"], int(job["port"])) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def worker(index: int, until: float, record: bool) -> None:
        reader, writer = connections[index]
        while time.perf_counter() < until:
            start = time.perf_counter()
            status = await call(reader, writer, request)
            if not record:
                continue
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    try:
        await asyncio.gather(*(worker(i, time.perf_counter() + warmup, False) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, started + duration, True) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for _, writer in connections:
            writer.close()
    return summarize(latencies, errors, elapsed)


def main() -> None:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run_job(job))))


if __name__ == "__main__":
    main()
