"""The platform in-process: real services on one embedded PostgreSQL/NATS, and the gateway in front.

Used by the gateway's fuzz test and by the omnichannel journey in tests/e2e. Each service gets
its own database, a free port and the others' targets; identity signs with its real key ring and
every other service (and the gateway) verifies with identity's JWKS, as in production. Only the
services whose code exists in this checkout are started, and only those are exposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import secrets
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn
from starlette.applications import Starlette

from omni_runtime.clients import PeerChannels
from omni_runtime.db.engine import Database
from omni_runtime.demo import DemoState, principals, seed_platform
from omni_runtime.localinfra import free_port
from omni_runtime.testing.plugin import Infra
from omni_runtime.testing.services import RunningService, running_service, test_settings
from services.gateway.app import GatewayConfig, create_app
from services.gateway.routes import Contracts, exposed_services

# Start order: identity first (everyone verifies tokens with its keys), cart after inventory.
ORDER = ("identity", "inventory", "profile", "preferences", "messaging", "cart")
# Identity's own knobs for tests: Argon2 made cheap (production keeps RFC 9106's parameters).
IDENTITY_EXTRA = {
    "OMNI_IDENTITY_ARGON2_TIME_COST": "1",
    "OMNI_IDENTITY_ARGON2_MEMORY_KIB": "1024",
    "OMNI_IDENTITY_ARGON2_PARALLELISM": "1",
}


def available(names: Sequence[str]) -> list[str]:
    """The services among ``names`` whose code exists here, in start order."""
    return [n for n in ORDER if n in names and importlib.util.find_spec(f"services.{n}.main") is not None]


@dataclass
class Platform:
    services: dict[str, RunningService]
    targets: dict[str, str]
    app: Starlette
    channels: dict[str, grpc.aio.Channel]

    def database(self, name: str) -> Database:
        runtime = self.services[name].host.runtime
        assert runtime is not None and runtime.db is not None
        return runtime.db


@contextlib.asynccontextmanager
async def running_platform(
    infra: Infra,
    names: Sequence[str],
    *,
    gateway_config: GatewayConfig | None = None,
    extra: dict[str, dict[str, str]] | None = None,
) -> AsyncIterator[Platform]:
    started = available(names)
    targets = {name: f"127.0.0.1:{free_port()}" for name in started}
    running: dict[str, RunningService] = {}
    # Service-to-service credentials, provisioned in identity as the local platform does.
    clients = {name: secrets.token_urlsafe(24) for name in started if name != "identity"}
    async with contextlib.AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omni-platform-")))
        clients_file = home / "service-clients.json"
        clients_file.write_text(
            json.dumps(
                [
                    {"client_id": f"omni-{n}", "secret": s, "roles": ["service"], "display_name": f"Omni {n}"}
                    for n, s in clients.items()
                ]
            )
        )
        for name in started:
            definition = importlib.import_module(f"services.{name}.main").SERVICE
            settings_extra: dict[str, str] = {}
            if name == "identity":
                settings_extra.update(IDENTITY_EXTRA)
                settings_extra["OMNI_IDENTITY_BOOTSTRAP_CLIENTS_FILE"] = str(clients_file)
            if name == "profile":  # as make run: profile waits for the services started here
                settings_extra["OMNI_PROFILE_PEERS"] = ",".join(s for s in started if s != "profile")
            settings_extra.update((extra or {}).get(name, {}))
            settings = test_settings(
                name,
                database_url=infra.new_database(f"{name}"),
                nats_url=infra.nats_url,
                targets=targets,
                extra=settings_extra,
            )
            settings = dataclasses.replace(
                settings,
                grpc_port=int(targets[name].rsplit(":", 1)[1]),
                service_client_id=f"omni-{name}" if name in clients else "",
                service_client_secret=clients.get(name, ""),
            )
            running[name] = await stack.enter_async_context(running_service(definition, settings))
        peers = PeerChannels(targets)
        stack.push_async_callback(peers.close)
        contracts = Contracts.load()
        channels = {svc: peers.channel(svc.split(".")[1]) for svc in exposed_services(contracts, started)}
        gateway = test_settings("gateway", database_url="", nats_url="", targets=targets)
        app = create_app(contracts, channels, gateway, config=gateway_config or GatewayConfig())
        yield Platform(services=running, targets=targets, app=app, channels=channels)


@contextlib.asynccontextmanager
async def live(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port (httpx's ASGI transport cannot stream)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def seed_demo_data(platform: Platform, state_path: Path) -> DemoState:
    """The local platform's demo data, loaded into this platform the way ``make run`` loads it."""
    from services.identity.seed import seed_demo

    identity = platform.services["identity"].host.runtime
    assert identity is not None
    seeded = await seed_demo(platform.database("identity"), settings=identity.settings)
    return await seed_platform(
        list(platform.services),
        platform.targets,
        state_path,
        principals=principals(seeded),
        admin_password=seeded["password"],
    )
