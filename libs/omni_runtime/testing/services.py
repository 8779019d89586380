"""Run any Omni service in-process on a free port, for tests, benchmarks and e2e journeys."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from omni_runtime.auth.keys import KeySource
from omni_runtime.config import Settings
from omni_runtime.db.migrate import upgrade_async
from omni_runtime.localinfra import free_port
from omni_runtime.server import ServiceDefinition, ServiceHost


@dataclass
class RunningService:
    host: ServiceHost
    channel: grpc.aio.Channel

    @property
    def port(self) -> int:
        return self.host.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.host.port}"


def test_settings(service: str, *, database_url: str, nats_url: str, **overrides: object) -> Settings:
    """Settings for an in-process service on a free port (no metrics server, short drain)."""
    base = Settings.from_env(service, env={})
    return dataclasses.replace(
        base,
        grpc_port=free_port(),
        metrics_port=0,
        database_url=database_url,
        nats_url=nats_url,
        shutdown_grace_seconds=2.0,
        **overrides,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_service(
    definition: ServiceDefinition,
    settings: Settings,
    *,
    key_source: KeySource | None = None,
    migrate: bool = True,
    wait_ready: bool = True,
) -> AsyncIterator[RunningService]:
    """Migrate, start, wait until SERVING, yield a channel to it; stop gracefully afterwards."""
    if migrate and definition.uses_database:
        await upgrade_async(definition.name, settings.database_url)
    host = ServiceHost(
        definition, settings, key_source=key_source, bind_host="127.0.0.1", configure_process=False
    )
    await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{host.port}")
    try:
        if wait_ready:
            await host.wait_ready()
        yield RunningService(host=host, channel=channel)
    finally:
        await channel.close()
        await host.stop(grace=settings.shutdown_grace_seconds)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test to collect
