"""No-op unary RPC through the full runtime (every interceptor) vs a bare grpc.aio server.

Same servicer, same client process, same run: the ratio is the runtime's per-call overhead.
"""

from __future__ import annotations

from typing import Any

import grpc

from bench.env import BenchEnv
from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime.localinfra import free_port
from omni_runtime.testing.probe import ProbeServicer, probe_definition
from omni_runtime.testing.services import running_service

CONCURRENCIES = (1, 8, 64)
METHOD = "/omni.probe.v1.ProbeService/Ping"


async def run(env: BenchEnv) -> dict[str, Any]:
    bare = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    probe_pb2_grpc.add_ProbeServiceServicer_to_server(ProbeServicer(), bare)
    bare_port = bare.add_insecure_port(f"127.0.0.1:{free_port()}")
    await bare.start()
    request = [probe_pb2.PingRequest()]
    metadata = [("x-omni-channel", "web")]
    out: dict[str, Any] = {"method": METHOD, "levels": []}
    try:
        settings = env.settings("probe", env.new_database("runtime"))
        async with running_service(probe_definition(), settings, key_source=env.key_source) as svc:
            for concurrency in CONCURRENCIES:
                base = await env.load(
                    f"127.0.0.1:{bare_port}", METHOD, request, concurrency=concurrency, metadata=metadata
                )
                full = await env.load(svc.target, METHOD, request, concurrency=concurrency, metadata=metadata)
                out["levels"].append(
                    {
                        "concurrency": concurrency,
                        "bare": base,
                        "runtime": full,
                        "throughput_ratio": round(full["rps"] / base["rps"], 3) if base["rps"] else None,
                        "p50_ratio": round(full["p50_ms"] / base["p50_ms"], 3) if base["p50_ms"] else None,
                        "p99_ratio": round(full["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None,
                    }
                )
    finally:
        await bare.stop(0)
    return out
