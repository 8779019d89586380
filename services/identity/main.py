"""Identity's wiring into the shared runtime (see docs/runtime.md).

Identity verifies tokens with its own key ring (``key_source=build_keyring``), never through
its own JWKS; every other service uses the runtime's default, identity's JWKS over gRPC.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import grpc

from omni.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from omni_runtime.auth.keys import KeySource
from omni_runtime.auth.tokens import TokenVerifier
from omni_runtime.server import Runtime, ServiceDefinition
from services.identity import bootstrap, store
from services.identity.api import Deps, IdentityServicer
from services.identity.config import IdentityConfig
from services.identity.erasure import ProfileErasures
from services.identity.events import ProfileMerges, ProfileUnmerges
from services.identity.keys import DatabaseKeyRing, DirectoryKeyRing, KeyRing
from services.identity.passwords import Passwords
from services.identity.sessions import SessionManager

log = logging.getLogger("omni.identity")

SERVICE_NAME = identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name
PURGE_INTERVAL_SECONDS = 600.0


async def build_keyring(runtime: Runtime) -> KeySource:
    """Files from OMNI_JWT_PRIVATE_KEYS_DIR when set (Kubernetes), else keys in the database."""
    config = IdentityConfig.from_settings(runtime.settings)
    keys_dir = runtime.settings.jwt_private_keys_dir
    ring: KeyRing
    if keys_dir is not None:
        ring = DirectoryKeyRing(keys_dir)
        await ring.reload()
    else:
        if runtime.db is None:
            raise RuntimeError("identity needs its database for local signing keys")
        database_ring = DatabaseKeyRing(
            runtime.db,
            rotate_after=timedelta(seconds=config.signing_key_rotate),
            verify_window=config.longest_token_ttl,
        )
        await database_ring.start()
        ring = database_ring
    log.info("token signing key %s (%d published)", ring.current().kid, len(ring.kids()))
    return ring


def _purger(runtime: Runtime) -> object:
    async def purge_expired_rows() -> None:
        assert runtime.db is not None
        while True:
            await asyncio.sleep(PURGE_INTERVAL_SECONDS)
            try:
                async with runtime.db.transaction() as session:
                    await store.purge_expired(session, datetime.now(UTC))
            except Exception as exc:
                log.warning("purging expired identity rows failed: %s", exc)

    return purge_expired_rows


async def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    keyring = runtime.key_source
    if not isinstance(keyring, KeyRing):
        raise RuntimeError(
            "identity signs and verifies with its own key ring; do not pass another key source"
        )
    if runtime.db is None or runtime.outbox is None:
        raise RuntimeError("identity needs its database and the event outbox")
    config = IdentityConfig.from_settings(runtime.settings)
    passwords = Passwords(config)
    deps = Deps(
        db=runtime.db,
        outbox=runtime.outbox,
        config=config,
        keyring=keyring,
        passwords=passwords,
        sessions=SessionManager(keyring, config, runtime.outbox),
        verifier=TokenVerifier(keyring),
    )
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(deps), server)
    runtime.consume(
        "profile-merges", list(ProfileMerges.SUBJECTS), ProfileMerges(runtime.outbox, deps.sessions)
    )
    runtime.consume("profile-unmerges", list(ProfileUnmerges.SUBJECTS), ProfileUnmerges(runtime.outbox))
    runtime.consume(
        "profile-erasures", list(ProfileErasures.SUBJECTS), ProfileErasures(runtime.outbox, deps.sessions)
    )
    if config.bootstrap_clients_file is not None:
        await bootstrap.sync_file(runtime.db, passwords, config.bootstrap_clients_file)
    runtime.background.append(keyring.run)
    runtime.background.append(_purger(runtime))  # type: ignore[arg-type]


SERVICE = ServiceDefinition(
    name="identity",
    grpc_services=[SERVICE_NAME],
    register=_register,
    key_source=build_keyring,
)
