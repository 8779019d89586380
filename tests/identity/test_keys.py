"""Signing keys: JWKS, rotation with two keys live, retirement, keys from a mounted directory."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import grpc
import jwt
from prometheus_client import REGISTRY
from sqlalchemy import text

from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.auth.keys import public_key_from_jwk
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.localinfra import free_port
from omni_runtime.testing.services import running_service
from services.identity.keys import KeyRing, write_new_key
from services.identity.main import SERVICE
from tests.identity.conftest import FAST_ARGON2, Stub, auth, expect, register


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_jwks_publishes_the_signing_key(stub: Stub, keyring: KeyRing) -> None:
    jwks = await stub.GetJwks(pb.GetJwksRequest())
    (key,) = jwks.keys
    assert (key.kty, key.crv, key.alg, key.use) == ("OKP", "Ed25519", "EdDSA", "sig")
    token = (await register(stub)).token.access_token
    assert kid(token) == key.kid == keyring.current().kid
    public = public_key_from_jwk({"kty": key.kty, "crv": key.crv, "x": key.x})
    jwt.decode(token, public, algorithms=["EdDSA"], audience="omni", issuer="omni.identity")


async def test_rotation_keeps_the_previous_key_live_until_retired(
    stub: Stub, keyring: KeyRing, db: Database
) -> None:
    before = await register(stub)
    old_kid = kid(before.token.access_token)
    await keyring.rotate()  # type: ignore[attr-defined]
    after = await register(stub)
    new_kid = kid(after.token.access_token)
    assert new_kid != old_kid
    jwks = await stub.GetJwks(pb.GetJwksRequest())
    assert jwks.keys[0].kid == new_kid and {k.kid for k in jwks.keys} == {old_kid, new_kid}
    # Tokens signed by the previous key still verify.
    got = await stub.GetCustomer(
        pb.GetCustomerRequest(name=before.customer.name), metadata=auth(before.token)
    )
    assert got.name == before.customer.name
    # Once the longest token lifetime has passed the old key is dropped, and its tokens with it.
    async with db.transaction() as session:
        await session.execute(
            text("UPDATE identity_signing_keys SET retire_time = now() - interval '1 second' WHERE kid = :k"),
            {"k": old_kid},
        )
    await keyring.reload()
    assert [k.kid for k in (await stub.GetJwks(pb.GetJwksRequest())).keys] == [new_kid]
    await expect(
        stub.GetCustomer(pb.GetCustomerRequest(name=before.customer.name), metadata=auth(before.token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_the_key_is_rotated_when_it_is_old_enough(keyring: KeyRing, db: Database) -> None:
    current = keyring.current().kid
    async with db.transaction() as session:  # a week passes
        await session.execute(
            text("UPDATE identity_signing_keys SET create_time = now() - interval '8 days' WHERE kid = :k"),
            {"k": current},
        )
    await keyring.maintain()
    assert keyring.current().kid != current and current in keyring.kids()
    await keyring.maintain()  # not due again: nothing changes
    assert len(keyring.kids()) == 2


async def test_a_replica_finds_a_key_another_replica_created(
    keyring: KeyRing, identity_settings: Settings, token_for: Callable[..., str]
) -> None:
    second = dataclasses.replace(identity_settings, grpc_port=free_port())
    async with running_service(SERVICE, second, migrate=False) as replica:
        other = replica.host.runtime.key_source  # type: ignore[union-attr]
        assert isinstance(other, KeyRing)
        fresh = await other.rotate()  # type: ignore[attr-defined]
        # The first replica has not reloaded yet; an unknown kid makes it look.
        assert fresh.kid not in keyring.kids()
        await asyncio.sleep(keyring.min_reload_interval)  # re-reads on unknown kids are rate-limited
        assert await keyring.key(fresh.kid) is not None


async def test_keys_from_a_mounted_directory(
    tmp_path: Path, omni_infra: object, service_settings: Callable[..., Settings]
) -> None:
    keys = tmp_path / "jwt"
    write_new_key(keys, "2026-01-01")
    write_new_key(keys, "2026-02-01")
    settings = service_settings(
        "identity",
        database_url=omni_infra.new_database("identity_keys_dir"),  # type: ignore[attr-defined]
        jwt_private_keys_dir=keys,
        extra=FAST_ARGON2,
    )
    async with running_service(SERVICE, settings) as svc:
        # The gauge the "no signing key" alert reads is set at start, before any JWKS fetch.
        assert REGISTRY.get_sample_value("omni_identity_signing_keys") == 2.0
        stub = Stub(svc.channel)
        jwks = await stub.GetJwks(pb.GetJwksRequest())
        assert [k.kid for k in jwks.keys] == ["2026-02-01", "2026-01-01"]
        reply = await register(stub)
        assert kid(reply.token.access_token) == "2026-02-01"
        # Rotation: a new file appears in the Secret; the ring picks it up without a restart.
        write_new_key(keys, "2026-03-01")
        ring = svc.host.runtime.key_source  # type: ignore[union-attr]
        await ring.maintain()  # type: ignore[union-attr]
        assert REGISTRY.get_sample_value("omni_identity_signing_keys") == 3.0
        assert kid((await register(stub)).token.access_token) == "2026-03-01"
        await stub.GetCustomer(pb.GetCustomerRequest(name=reply.customer.name), metadata=auth(reply.token))
