"""What every benchmark scenario gets: embedded PostgreSQL and NATS, real signing keys, and a way
to drive load from a separate process."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.auth.tokens import SigningKey, issue_token
from omni_runtime.config import Settings
from omni_runtime.localinfra import EmbeddedNats, EmbeddedPostgres, free_port
from omni_runtime.testing.services import test_settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchEnv:
    root: Path
    postgres: EmbeddedPostgres = field(init=False)
    nats: EmbeddedNats = field(init=False)
    signing_key: SigningKey = field(default_factory=lambda: SigningKey.generate("bench-key"))
    _databases: int = 0
    _probe: Any = None
    _probe_service: Any = None

    def __post_init__(self) -> None:
        self.postgres = EmbeddedPostgres(self.root / "pg", free_port(), durable=True)
        self.nats = EmbeddedNats(self.root / "nats", free_port())

    def start(self) -> None:
        self.postgres.start()
        self.nats.start()

    def stop(self) -> None:
        self.nats.stop()
        self.postgres.stop()

    @property
    def key_source(self) -> StaticKeySource:
        return StaticKeySource({self.signing_key.kid: self.signing_key.private_key.public_key()})

    def token(self, subject: str, roles: Sequence[str] = ("customer",), **kw: Any) -> str:
        return issue_token(self.signing_key, subject=subject, roles=roles, ttl_seconds=3600, **kw)

    def new_database(self, hint: str) -> str:
        self._databases += 1
        return self.postgres.create_database(f"bench{self._databases}_{hint}")

    def settings(self, service: str, database_url: str, **overrides: Any) -> Settings:
        return test_settings(service, database_url=database_url, nats_url=self.nats.url, **overrides)

    async def ping_target(self) -> str:
        """The shared no-op baseline: the probe service's Ping through the full runtime (every
        stage, with a database and events like any service), started once per bench run in
        this process, beside the services under test."""
        if self._probe is None:
            from omni_runtime.testing.probe import probe_definition
            from omni_runtime.testing.services import running_service

            settings = self.settings("probe", self.new_database("ping"))
            self._probe = running_service(probe_definition(), settings, key_source=self.key_source)
            self._probe_service = await self._probe.__aenter__()
        assert self._probe_service is not None
        return self._probe_service.target

    def ping_arm(self, target: str, metadata: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """An arm calling Ping at ``target`` (from ``ping_target``) with ``metadata``."""
        from omni.probe.v1 import probe_pb2

        return grpc_arm("ping", target, PING, [probe_pb2.PingRequest()], metadata)

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.__aexit__(None, None, None)
            self._probe = None

    async def load(
        self,
        target: str,
        method: str,
        requests: Sequence[Message],
        *,
        concurrency: int,
        duration: float = 3.0,
        metadata: Sequence[tuple[str, str]] = (),
        warmup: float = 0.5,
    ) -> dict[str, Any]:
        """Closed-loop load of one gRPC method from a child process; its latency summary."""
        arm = grpc_arm("load", target, method, requests, metadata)
        answer = await self.compare([arm], concurrency=concurrency, duration=duration, warmup=warmup)
        return answer["load"]

    async def compare(
        self,
        arms: Sequence[dict[str, Any]],
        *,
        concurrency: int,
        duration: float = 3.0,
        rounds: int = 1,
        warmup: float = 0.5,
    ) -> dict[str, dict[str, Any]]:
        """Closed-loop load of several arms (``grpc_arm``/``http_arm``) from one child process
        (bench/load.py): they take turns for ``rounds`` rounds, ``duration`` seconds each in
        all. Returns each arm's summary by name; ``ratio`` compares two of them."""
        job = {
            "arms": list(arms),
            "concurrency": concurrency,
            "duration": duration,
            "rounds": rounds,
            "warmup": warmup,
        }
        return await run_child("bench.load", job)


PING = "/omni.probe.v1.ProbeService/Ping"


def grpc_arm(
    name: str,
    target: str,
    method: str,
    requests: Sequence[Message],
    metadata: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A load arm calling a gRPC method with these requests, round robin."""
    return {
        "name": name,
        "kind": "grpc",
        "target": target,
        "method": method,
        "requests": [base64.b64encode(r.SerializeToString()).decode() for r in requests],
        "metadata": [list(m) for m in metadata],
    }


def http_arm(
    name: str, port: int, method: str, path: str, headers: Sequence[tuple[str, str]], body: str = ""
) -> dict[str, Any]:
    """A load arm sending one HTTP/1.1 request to 127.0.0.1:``port`` over kept-alive connections."""
    return {
        "name": name,
        "kind": "http",
        "host": "127.0.0.1",
        "port": port,
        "method": method,
        "path": path,
        "headers": [list(h) for h in headers],
        "body": body,
    }


def ratio(measured: dict[str, Any], baseline: dict[str, Any], key: str = "rps") -> float | None:
    """``measured[key] / baseline[key]`` rounded, or None when the baseline has nothing."""
    return round(measured[key] / baseline[key], 3) if baseline.get(key) else None


async def run_child(module: str, job: dict[str, Any]) -> Any:
    """Run ``python -m <module>`` with ``job`` as JSON on stdin; its JSON answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(json.dumps(job).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed: {err.decode()[-2000:]}")
    return json.loads(out)
