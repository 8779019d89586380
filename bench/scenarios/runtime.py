"""No-op unary RPC through the full runtime (every stage) vs a bare grpc.aio server.

Same servicer, same client process, same run, the two taking turns (bench/load.py): the
throughput ratio is the runtime's per-call overhead. Target: >= 0.8 at every concurrency.
"""

from __future__ import annotations

from typing import Any

import grpc

from bench.env import PING, BenchEnv, grpc_arm, ratio
from bench.report import target
from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime.localinfra import free_port
from omni_runtime.testing.probe import ProbeServicer

CONCURRENCIES = (1, 8, 64)
DURATION = 3.0
ROUNDS = 3


async def run(env: BenchEnv) -> dict[str, Any]:
    bare = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    probe_pb2_grpc.add_ProbeServiceServicer_to_server(ProbeServicer(), bare)
    bare_port = bare.add_insecure_port(f"127.0.0.1:{free_port()}")
    await bare.start()
    request = [probe_pb2.PingRequest()]
    metadata = [("x-omni-channel", "web")]
    out: dict[str, Any] = {"method": PING, "levels": [], "targets": []}
    try:
        full_target = await env.ping_target()
        for concurrency in CONCURRENCIES:
            got = await env.compare(
                [
                    grpc_arm("bare", f"127.0.0.1:{bare_port}", PING, request, metadata),
                    grpc_arm("runtime", full_target, PING, request, metadata),
                ],
                concurrency=concurrency,
                duration=DURATION,
                rounds=ROUNDS,
            )
            level = {
                "concurrency": concurrency,
                **got,
                "throughput_ratio": ratio(got["runtime"], got["bare"]),
                "p50_ratio": ratio(got["runtime"], got["bare"], "p50_ms"),
                "p99_ratio": ratio(got["runtime"], got["bare"], "p99_ms"),
            }
            out["levels"].append(level)
            out["targets"].append(
                target(
                    "full chain vs bare grpc.aio, throughput",
                    f"c={concurrency}",
                    level["throughput_ratio"],
                    0.8,
                )
            )
    finally:
        await bare.stop(0)
    return out
