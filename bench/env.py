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
        """Closed-loop load from a child process (see bench/load.py); returns its latency summary."""
        job = {
            "target": target,
            "method": method,
            "requests": [base64.b64encode(r.SerializeToString()).decode() for r in requests],
            "metadata": list(metadata),
            "concurrency": concurrency,
            "duration": duration,
            "warmup": warmup,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load",
            cwd=str(ROOT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(json.dumps(job).encode())
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
        result: dict[str, Any] = json.loads(out)
        result["concurrency"] = concurrency
        return result
