"""Identity with other services: JWKS verification and key rotation seen from another service,
service-to-service tokens through the runtime's peer channels, events on NATS."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable

import grpc
import nats
import pytest
from nats.js.errors import NotFoundError

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni.profile.v1 import events_pb2 as profile_events_pb2
from omni.profile.v1 import resources_pb2 as profile_resources_pb2
from omni_runtime.auth.service_tokens import ServiceTokenProvider
from omni_runtime.config import Settings
from omni_runtime.events.bus import EventBus
from omni_runtime.localinfra import free_port
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.probe import probe_definition
from omni_runtime.testing.services import RunningService, running_service
from services.identity.keys import KeyRing
from tests.identity.conftest import PASSWORD, Stub, email, email_key, register

Admin = tuple[tuple[str, str], ...]


def probe_settings(service_settings: Callable[..., Settings], **overrides: object) -> Settings:
    return service_settings("probe", **overrides)


async def test_another_service_verifies_identity_tokens_and_follows_a_rotation(
    identity: RunningService, keyring: KeyRing, service_settings: Callable[..., Settings]
) -> None:
    """The probe uses the runtime's default key source: identity's JWKS over gRPC, cached."""
    stub = Stub(identity.channel)
    address = email()
    me = await register(stub, address)
    settings = probe_settings(service_settings, targets={"identity": identity.target})
    async with running_service(probe_definition(uses_database=False, uses_events=False), settings) as probe:
        probe_stub = probe_pb2_grpc.ProbeServiceStub(probe.channel)
        echo = probe_pb2.EchoRequest(name=f"{me.customer.name}/echoes/1", text="hello")
        fetched = time.monotonic()
        assert (await probe_stub.Echo(echo, metadata=bearer(me.token.access_token))).text == "hello"
        other = probe_pb2.EchoRequest(name="customers/someone-else/echoes/1", text="hello")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await probe_stub.Echo(other, metadata=bearer(me.token.access_token))
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # Identity rotates; the new key signs from now on.
        await keyring.rotate()  # type: ignore[attr-defined]
        fresh = await stub.Login(pb.LoginRequest(identifier=email_key(address), password=PASSWORD))
        # The probe refetches the JWKS on the unknown kid (rate-limited to one refetch per 5 s).
        await asyncio.sleep(max(0.0, 5.05 - (time.monotonic() - fetched)))
        assert (await probe_stub.Echo(echo, metadata=bearer(fresh.token.access_token))).text == "hello"
        # Tokens from the previous key keep working: it is still published.
        assert (await probe_stub.Echo(echo, metadata=bearer(me.token.access_token))).text == "hello"


async def test_service_token_provider_caches_and_renews(identity: RunningService, admin: Admin) -> None:
    stub = Stub(identity.channel)
    created = await stub.CreateServiceClient(
        pb.CreateServiceClientRequest(
            service_client=resources_pb2.ServiceClient(display_name="cart", token_lifetime={"seconds": 100})
        ),
        metadata=admin,
    )
    now = [1000.0]
    provider = ServiceTokenProvider(
        identity.channel, created.service_client.client_id, created.client_secret, clock=lambda: now[0]
    )
    tokens = await asyncio.gather(*(provider() for _ in range(10)))
    assert len(set(tokens)) == 1 and provider.fetches == 1
    now[0] += 79  # a fifth of the lifetime before expiry: still cached
    assert await provider() == tokens[0] and provider.fetches == 1
    now[0] += 2
    renewed = await provider()
    assert provider.fetches == 2 and renewed != tokens[0]
    bad = ServiceTokenProvider(identity.channel, created.service_client.client_id, "ocs_wrong")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad()
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_the_runtime_sends_service_tokens_to_peers(
    identity: RunningService, admin: Admin, service_settings: Callable[..., Settings]
) -> None:
    """OMNI_SERVICE_CLIENT_ID/SECRET make every peer call carry a service token from identity."""
    stub = Stub(identity.channel)
    created = await stub.CreateServiceClient(
        pb.CreateServiceClientRequest(service_client=resources_pb2.ServiceClient(display_name="probe")),
        metadata=admin,
    )
    env = {
        "OMNI_SERVICE_CLIENT_ID": created.service_client.client_id,
        "OMNI_SERVICE_CLIENT_SECRET": created.client_secret,
    }
    from_env = Settings.from_env("probe", env=env)
    assert from_env.service_client_id == env["OMNI_SERVICE_CLIENT_ID"]
    assert created.client_secret not in repr(from_env)  # settings may be logged; the secret is not
    port = free_port()
    settings = dataclasses.replace(
        probe_settings(service_settings, targets={"identity": identity.target, "probe": f"127.0.0.1:{port}"}),
        grpc_port=port,
        service_client_id=from_env.service_client_id,
        service_client_secret=from_env.service_client_secret,
    )
    async with running_service(probe_definition(uses_database=False, uses_events=False), settings) as probe:
        runtime = probe.host.runtime
        assert runtime is not None
        assert isinstance(runtime.peers.token_provider, ServiceTokenProvider)
        assert runtime.public_peers is not None and runtime.public_peers.token_provider is None
        peer = probe_pb2_grpc.ProbeServiceStub(runtime.peers.channel("probe"))
        pong = await peer.Ping(probe_pb2.PingRequest())
        assert pong.subject == created.service_client.name
        echo = await peer.Echo(probe_pb2.EchoRequest(name="customers/anyone/echoes/1", text="as a service"))
        assert echo.text == "as a service"
        assert runtime.peers.token_provider.fetches == 1


async def test_events_reach_jetstream(identity: RunningService, identity_settings: Settings) -> None:
    customer = (await register(Stub(identity.channel))).customer.name
    nc = await nats.connect(identity_settings.nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 15
        while True:
            try:
                msg = await js.get_last_msg("OMNI_IDENTITY", "omni.identity.customer_registered")
                event = events_pb2.CustomerRegisteredEvent.FromString(msg.data or b"")
                if event.customer == customer:
                    break
            except NotFoundError:
                pass
            assert time.monotonic() < deadline, "CustomerRegisteredEvent never reached JetStream"
            await asyncio.sleep(0.1)
        headers = msg.headers or {}
        assert headers["Omni-Event-Type"] == "omni.identity.v1.CustomerRegisteredEvent"
        assert headers["Nats-Msg-Id"]
    finally:
        await nc.close()


async def test_duplicate_profiles_merged_by_profile_move_identifiers_to_the_target(
    identity: RunningService, identity_settings: Settings, admin: Admin, token_for: Callable[..., str]
) -> None:
    """Profile publishes ProfilesMergedEvent (DUPLICATE); identity follows it."""
    stub = Stub(identity.channel)
    source, target = await register(stub), await register(stub)
    card = f"DUP{uuid.uuid4().int % 10**9:09d}"
    await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=source.customer.name,
            identifier=resources_pb2.IdentifierKey(
                kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value=card
            ),
            attested=True,
        ),
        metadata=admin,
    )
    event = profile_events_pb2.ProfilesMergedEvent(
        source_profile=f"{source.customer.name}/profile",
        source_customer=source.customer.name,
        target_profile=f"{target.customer.name}/profile",
        target_customer=target.customer.name,
        reason=profile_resources_pb2.MERGE_REASON_DUPLICATE,
    )
    bus = EventBus(identity_settings.nats_url, name="test-profile")
    await bus.start()
    try:
        await bus.wait_connected(10)
        await bus.ensure_stream("profile")
        event_id = str(uuid.uuid4())
        for _ in range(2):  # a redelivery changes nothing
            await bus.js.publish(
                "omni.profile.profiles_merged",
                event.SerializeToString(),
                headers={"Nats-Msg-Id": event_id, "Omni-Event-Type": event.DESCRIPTOR.full_name},
            )
    finally:
        await bus.close()
    deadline = time.monotonic() + 20
    while True:
        got = await stub.GetCustomer(pb.GetCustomerRequest(name=source.customer.name), metadata=admin)
        if got.state == resources_pb2.Customer.STATE_MERGED:
            break
        assert time.monotonic() < deadline, "identity never applied the profile merge"
        await asyncio.sleep(0.1)
    assert got.merged_into == target.customer.name
    resolved = await stub.ResolveIdentity(
        pb.ResolveIdentityRequest(
            identifier=resources_pb2.IdentifierKey(
                kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value=card
            )
        ),
        metadata=admin,
    )
    assert resolved.customer.name == target.customer.name
    listed = await stub.ListIdentifiers(
        pb.ListIdentifiersRequest(parent=target.customer.name), metadata=admin
    )
    assert {i.value for i in listed.identifiers} >= {source.customer.primary_email, card}
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=source.token.refresh_token))
