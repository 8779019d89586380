"""Service clients (client credentials), bootstrap clients from a file, demo seeding."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import jwt
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni.type.v1 import channel_pb2
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.testing.services import RunningService, running_service
from services.identity import bootstrap, seed
from services.identity.config import IdentityConfig
from services.identity.main import SERVICE
from services.identity.passwords import Passwords
from tests.identity.conftest import FAST_ARGON2, Stub, auth, email_key, expect, violations

Client = resources_pb2.ServiceClient
Admin = tuple[tuple[str, str], ...]


async def create(stub: Stub, admin: Admin, **fields: object) -> pb.CreateServiceClientResponse:
    fields.setdefault("display_name", "Web shop backend")
    return await stub.CreateServiceClient(
        pb.CreateServiceClientRequest(service_client=Client(**fields)),  # type: ignore[arg-type]
        metadata=admin,
    )


async def issue(stub: Stub, client_id: str, secret: str) -> resources_pb2.AuthToken:
    return await stub.IssueServiceToken(
        pb.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
    )


async def test_client_credentials_token(stub: Stub, admin: Admin) -> None:
    created = await create(
        stub, admin, channel=channel_pb2.CHANNEL_STORE_POS, token_lifetime=duration_pb2.Duration(seconds=120)
    )
    client = created.service_client
    assert client.state == Client.STATE_ACTIVE and client.client_id == client.name.split("/")[1]
    assert created.client_secret.startswith("ocs_")
    token = await issue(stub, client.client_id, created.client_secret)
    assert token.principal == client.name and list(token.roles) == [resources_pb2.ROLE_SERVICE]
    assert not token.refresh_token and not token.session and token.expires_in.seconds == 120
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["ch"] == "store_pos" and "sid" not in claims and claims["exp"] - claims["iat"] == 120
    # A service token acts for any customer (here: resolve an identity).
    await expect(
        stub.ResolveIdentity(
            pb.ResolveIdentityRequest(identifier=email_key("x@example.com")), metadata=auth(token)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    got = await stub.GetServiceClient(pb.GetServiceClientRequest(name=client.name), metadata=admin)
    assert got == client  # the secret is never shown again


async def test_wrong_unknown_and_disabled_clients_are_indistinguishable(stub: Stub, admin: Admin) -> None:
    created = await create(stub, admin)
    client = created.service_client
    errors = [
        await expect(
            issue(stub, client.client_id, "ocs_wrong"),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CLIENT_CREDENTIALS",
        ),
        await expect(
            issue(stub, "nobody", created.client_secret),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CLIENT_CREDENTIALS",
        ),
    ]
    disabled = await stub.UpdateServiceClient(
        pb.UpdateServiceClientRequest(
            service_client=Client(name=client.name, state=Client.STATE_DISABLED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        metadata=admin,
    )
    assert disabled.state == Client.STATE_DISABLED
    errors.append(
        await expect(
            issue(stub, client.client_id, created.client_secret),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CLIENT_CREDENTIALS",
        )
    )
    assert len({e.details() for e in errors}) == 1


async def test_rotate_secret_with_and_without_an_overlap(stub: Stub, admin: Admin) -> None:
    created = await create(stub, admin)
    name, old = created.service_client.name, created.client_secret
    rotated = await stub.RotateServiceClientSecret(
        pb.RotateServiceClientSecretRequest(
            name=name, previous_secret_validity=duration_pb2.Duration(seconds=3600)
        ),
        metadata=admin,
    )
    assert rotated.client_secret != old and rotated.HasField("previous_secret_expire_time")
    await issue(stub, created.service_client.client_id, old)  # still valid during the overlap
    await issue(stub, created.service_client.client_id, rotated.client_secret)
    again = await stub.RotateServiceClientSecret(
        pb.RotateServiceClientSecretRequest(name=name, etag=rotated.service_client.etag), metadata=admin
    )
    await expect(
        issue(stub, created.service_client.client_id, rotated.client_secret), grpc.StatusCode.UNAUTHENTICATED
    )
    await issue(stub, created.service_client.client_id, again.client_secret)
    err = await expect(
        stub.RotateServiceClientSecret(
            pb.RotateServiceClientSecretRequest(
                name=name, previous_secret_validity=duration_pb2.Duration(seconds=8 * 86400)
            ),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("previous_secret_validity", "OUT_OF_RANGE")}


async def test_create_retry_returns_the_same_secret_and_list_update_delete(stub: Stub, admin: Admin) -> None:
    request_id = str(uuid.uuid4())
    request = pb.CreateServiceClientRequest(
        service_client=Client(display_name="POS backend"), request_id=request_id
    )
    first = await stub.CreateServiceClient(request, metadata=admin)
    assert await stub.CreateServiceClient(request, metadata=admin) == first
    listed = await stub.ListServiceClients(
        pb.ListServiceClientsRequest(filter='display_name = "POS backend"'), metadata=admin
    )
    assert [c.name for c in listed.service_clients] == [first.service_client.name]
    err = await expect(
        stub.UpdateServiceClient(
            pb.UpdateServiceClientRequest(
                service_client=Client(
                    name=first.service_client.name, token_lifetime=duration_pb2.Duration(seconds=5)
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["token_lifetime"]),
            ),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("service_client.token_lifetime", "OUT_OF_RANGE")}
    await expect(
        stub.DeleteServiceClient(
            pb.DeleteServiceClientRequest(name=first.service_client.name, etag='W/"9"'), metadata=admin
        ),
        grpc.StatusCode.ABORTED,
    )
    await stub.DeleteServiceClient(
        pb.DeleteServiceClientRequest(name=first.service_client.name), metadata=admin
    )
    await expect(
        issue(stub, first.service_client.client_id, first.client_secret), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect(
        stub.GetServiceClient(pb.GetServiceClientRequest(name=first.service_client.name), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    err = await expect(
        stub.CreateServiceClient(pb.CreateServiceClientRequest(), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("service_client.display_name", "REQUIRED")}


# --- bootstrap clients and demo seeding ------------------------------------------------------


@pytest.fixture(scope="module")
def clients_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "service-clients.json"
    path.write_text(
        json.dumps(
            [
                {
                    "client_id": "omni-cart",
                    "secret": "cart-secret-0123456789",
                    "roles": ["service"],
                    "display_name": "Cart",
                },
                {"client_id": "ops-admin", "secret": "admin-secret-0123456789", "roles": ["admin"]},
            ]
        )
    )
    return path


@pytest.fixture(scope="module")
async def bootstrapped(
    omni_infra: object, service_settings: Callable[..., Settings], clients_file: Path
) -> AsyncIterator[RunningService]:
    database_url = omni_infra.new_database("identity_bootstrap")  # type: ignore[attr-defined]
    settings = service_settings(
        "identity",
        database_url=database_url,
        extra={**FAST_ARGON2, "OMNI_IDENTITY_BOOTSTRAP_CLIENTS_FILE": str(clients_file)},
    )
    async with running_service(SERVICE, settings) as svc:
        yield svc


async def test_bootstrap_clients_exist_at_start_and_sync_is_idempotent(
    bootstrapped: RunningService, clients_file: Path
) -> None:
    stub = Stub(bootstrapped.channel)
    cart = await issue(stub, "omni-cart", "cart-secret-0123456789")
    assert list(cart.roles) == [resources_pb2.ROLE_SERVICE]
    ops = await issue(stub, "ops-admin", "admin-secret-0123456789")
    assert list(ops.roles) == [resources_pb2.ROLE_ADMIN]
    # The admin-capable bootstrap client can create the first staff administrator.
    await stub.CreateStaffMember(
        pb.CreateStaffMemberRequest(
            staff_member=resources_pb2.StaffMember(
                email="first-admin@omni.example", display_name="First admin", roles=[resources_pb2.ROLE_ADMIN]
            ),
            initial_password="the first admin's password",
        ),
        metadata=auth(ops),
    )
    runtime = bootstrapped.host.runtime
    assert runtime is not None and runtime.db is not None
    passwords = Passwords(IdentityConfig.from_settings(runtime.settings))
    assert await bootstrap.sync_file(runtime.db, passwords, clients_file) == 0
    entries = json.loads(await asyncio.to_thread(clients_file.read_text))
    entries[0]["secret"] = "rotated-cart-secret-0123"
    assert await bootstrap.sync_clients(runtime.db, passwords, bootstrap.read_clients_data(entries)) == 1
    await expect(issue(stub, "omni-cart", "cart-secret-0123456789"), grpc.StatusCode.UNAUTHENTICATED)
    await issue(stub, "omni-cart", "rotated-cart-secret-0123")


def test_bootstrap_file_problems_are_reported(tmp_path: Path) -> None:
    from omni_runtime.config import ConfigError

    path = tmp_path / "clients.json"
    for content, fragment in (
        ("{}", "JSON list"),
        ('[{"client_id": "bad id", "secret": "0123456789abcdef"}]', "client_id"),
        ('[{"client_id": "a", "secret": "short"}]', "secret"),
        ('[{"client_id": "a", "secret": "0123456789abcdef", "roles": ["customer"]}]', "roles"),
    ):
        path.write_text(content)
        with pytest.raises(ConfigError, match=fragment):
            bootstrap.read_clients(path)


async def test_seed_demo_is_idempotent_and_its_principals_work(bootstrapped: RunningService) -> None:
    runtime = bootstrapped.host.runtime
    assert runtime is not None
    seeding_db = Database(runtime.settings.database_url)
    try:
        first = await seed.seed_demo(seeding_db, settings=runtime.settings)
        second = await seed.seed_demo(seeding_db, settings=runtime.settings)
    finally:
        await seeding_db.close()
    assert first == second
    assert any(
        seed.DEMO_CUSTOMER_EMAIL in line and first["customer"]["name"] in line for line in first["lines"]
    )
    stub = Stub(bootstrapped.channel)
    customer = await stub.Login(
        pb.LoginRequest(identifier=email_key(seed.DEMO_CUSTOMER_EMAIL), password=seed.DEMO_PASSWORD)
    )
    assert customer.customer.name == first["customer"]["name"] and customer.customer.primary_email
    associate = await stub.StaffLogin(
        pb.StaffLoginRequest(email="associate@omni.local", password=seed.DEMO_PASSWORD)
    )
    assert associate.store == "locations/store-1"
    for address in ("agent@omni.local", "marketer@omni.local", "admin@omni.local"):
        await stub.StaffLogin(pb.StaffLoginRequest(email=address, password=seed.DEMO_PASSWORD))
    backend = await issue(stub, seed.WEB_BACKEND_CLIENT_ID, seed.WEB_BACKEND_SECRET)
    assert jwt.decode(backend.access_token, options={"verify_signature": False})["ch"] == "web"
