"""Profile with the real services around it: identity, inventory and cart in-process on one
embedded PostgreSQL/NATS (tests/gateway/platform.py), every fact reaching profile through the
producers' own outboxes and JetStream, never published by the test.

- a registration on the web, a checkout on the web and a login on the mobile app show up on the
  timeline and in the lifetime figures within seconds;
- an erasure started at profile (EraseCustomerData) is followed by identity, whose
  CustomerErasedEvent reaches cart and inventory; every running service's receipt reaches DONE
  and a second export finds nothing of the customer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from omni.cart.v1 import cart_service_pb2 as cart_pb
from omni.cart.v1 import cart_service_pb2_grpc as cart_grpc
from omni.cart.v1 import resources_pb2 as cart_r
from omni.identity.v1 import identity_service_pb2 as id_pb
from omni.identity.v1 import identity_service_pb2_grpc as id_grpc
from omni.identity.v1 import resources_pb2 as id_r
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import profile_service_pb2_grpc as svc_grpc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import address_pb2, channel_pb2
from omni_runtime.testing.plugin import Infra, bearer
from tests.gateway.platform import Platform, available, running_platform, seed_demo_data

SERVICES = ("identity", "inventory", "profile", "cart")
pytestmark = pytest.mark.skipif(
    available(SERVICES) != list(SERVICES), reason=f"needs {SERVICES}; present: {available(SERVICES)}"
)
IT = r.Interaction
ADDRESS = address_pb2.PostalAddress(
    region_code="RO", locality="Cluj-Napoca", address_lines=["Str. Avram Iancu 5"]
)
PASSWORD = "a long enough passphrase"


class Caller:
    """A stub whose calls carry one token and one channel."""

    def __init__(self, stub: Any, token: str, channel: str) -> None:
        self.stub, self.metadata = stub, (*bearer(token), ("x-omni-channel", channel))

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self.stub, method)
        return lambda request: call(request, metadata=self.metadata, timeout=10)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} within {timeout:.0f} s") from None


class World:
    def __init__(self, platform: Platform, facts: dict[str, Any], admin: str) -> None:
        self.channels = {n: grpc.aio.insecure_channel(t) for n, t in platform.targets.items()}
        self.facts = facts
        self.admin = admin

    def identity(self, token: str = "", channel: str = "web") -> Caller:
        return Caller(id_grpc.IdentityServiceStub(self.channels["identity"]), token or self.admin, channel)

    def cart(self, token: str, channel: str = "web") -> Caller:
        return Caller(cart_grpc.CartServiceStub(self.channels["cart"]), token, channel)

    def profile(self, channel: str = "backoffice") -> Caller:
        return Caller(svc_grpc.ProfileServiceStub(self.channels["profile"]), self.admin, channel)

    async def register(self) -> id_pb.RegisterCustomerResponse:
        address = f"p-{uuid.uuid4().hex[:10]}@example.com"
        key = id_r.IdentifierKey(kind=id_r.IDENTIFIER_KIND_EMAIL, value=address)
        return await self.identity(channel="web").RegisterCustomer(  # type: ignore[no-any-return]
            id_pb.RegisterCustomerRequest(identifier=key, password=PASSWORD, display_name="Ioana")
        )

    async def checkout(self, customer: str, token: str) -> cart_r.Order:
        api = self.cart(token, "web")
        item = f"items/{self.facts['inventory']['item']}"
        cart = await api.AddCartLine(
            cart_pb.AddCartLineRequest(
                name=f"{customer}/cart",
                line=cart_r.CartLine(item=item, quantity=2),
                request_id=str(uuid.uuid4()),
            )
        )
        return await api.Checkout(  # type: ignore[no-any-return]
            cart_pb.CheckoutRequest(
                name=f"{customer}/cart",
                etag=cart.etag,
                shipping_address=ADDRESS,
                payment_reference="psp-test",
                request_id=str(uuid.uuid4()),
            )
        )

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@pytest.fixture(scope="module")
async def world(omni_infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_platform(omni_infra, SERVICES) as platform:
        state = await seed_demo_data(platform, Path(tmp_path_factory.mktemp("demo")) / "demo.json")
        password = state.facts()["identity"]["password"]
        async with grpc.aio.insecure_channel(platform.targets["identity"]) as channel:
            login = await id_grpc.IdentityServiceStub(channel).StaffLogin(
                id_pb.StaffLoginRequest(email="admin@omni.local", password=password),
                metadata=(("x-omni-channel", "backoffice"),),
            )
        out = World(platform, state.facts(), login.access_token)
        try:
            yield out
        finally:
            await out.close()


async def test_a_checkout_and_a_login_on_another_channel_reach_the_timeline_and_figures(world: World) -> None:
    registered = await world.register()
    customer = registered.customer.name
    order = await world.checkout(customer, registered.token.access_token)
    login = await world.identity(channel="mobile_app").Login(
        id_pb.LoginRequest(
            identifier=id_r.IdentifierKey(
                kind=id_r.IDENTIFIER_KIND_EMAIL, value=registered.customer.primary_email
            ),
            password=PASSWORD,
        )
    )
    assert login.customer.name == customer
    agent = world.profile("call_center")
    timeline: list[r.Interaction] = []

    async def arrived() -> bool:
        nonlocal timeline
        listed = await agent.ListInteractions(svc.ListInteractionsRequest(parent=customer))
        timeline = list(listed.interactions)
        seen = {(i.type, i.channel.channel) for i in timeline}
        return {
            (IT.TYPE_REGISTERED, channel_pb2.CHANNEL_WEB),
            (IT.TYPE_ORDER_PLACED, channel_pb2.CHANNEL_WEB),
            (IT.TYPE_LOGIN, channel_pb2.CHANNEL_MOBILE_APP),
        } <= seen

    await eventually(arrived, "registration, order and login on the timeline")
    placed = next(i for i in timeline if i.type == IT.TYPE_ORDER_PLACED)
    assert placed.subject == order.name
    assert placed.attributes["total_minor_units"] == str(order.total.minor_units)
    # The registration's session on the web, then the log-in on the app: two logins, each channel's.
    logins = sorted(i.channel.channel for i in timeline if i.type == IT.TYPE_LOGIN)
    assert logins == [channel_pb2.CHANNEL_WEB, channel_pb2.CHANNEL_MOBILE_APP]
    # The order's own interaction, no checkout reservation or cart churn counted as an order.
    assert sum(1 for i in timeline if i.type == IT.TYPE_ORDER_PLACED) == 1

    profile = await agent.GetProfile(svc.GetProfileRequest(name=f"{customer}/profile"))
    lifetime = profile.lifetime
    assert lifetime.order_count == 1
    assert [(m.currency_code, m.minor_units) for m in lifetime.total_spend] == [
        (order.total.currency_code, order.total.minor_units)
    ]
    assert lifetime.first_purchase_time == lifetime.last_purchase_time == placed.occur_time
    used = {u.channel: u for u in lifetime.channels_used}
    assert used[channel_pb2.CHANNEL_WEB].order_count == 1
    assert used[channel_pb2.CHANNEL_MOBILE_APP].interaction_count >= 1
    assert used[channel_pb2.CHANNEL_MOBILE_APP].order_count == 0
    assert registered.customer.primary_email in {p.value for p in profile.contact_points}


async def test_an_erasure_started_at_profile_completes_on_every_running_service(world: World) -> None:
    registered = await world.register()
    customer = registered.customer.name
    await world.checkout(customer, registered.token.access_token)
    api = world.profile()
    await api.CreateAddress(
        svc.CreateAddressRequest(parent=customer, address=r.Address(postal_address=ADDRESS))
    )

    async def ordered() -> bool:
        profile = await api.GetProfile(svc.GetProfileRequest(name=f"{customer}/profile"))
        return profile.lifetime.order_count == 1

    await eventually(ordered, "the order in the lifetime figures")
    erased = await api.EraseCustomerData(
        svc.EraseCustomerDataRequest(name=f"{customer}/profile", request_id=str(uuid.uuid4()))
    )
    assert erased.erasure.state == r.Erasure.STATE_IN_PROGRESS
    assert {x.service for x in erased.erasure.receipts} == {"profile", "identity", "cart", "inventory"}
    erasure = erased.erasure

    async def completed() -> bool:
        nonlocal erasure
        erasure = await api.GetErasure(svc.GetErasureRequest(name=f"{customer}/erasure"))
        return erasure.state != r.Erasure.STATE_IN_PROGRESS

    await eventually(completed, "every receipt of the erasure")
    assert erasure.state == r.Erasure.STATE_COMPLETED, erasure
    receipts = {x.service: x for x in erasure.receipts}
    assert set(receipts) == {"profile", "identity", "cart", "inventory"}
    assert all(
        x.state == r.ErasureServiceReceipt.STATE_DONE and x.complete_time.seconds for x in receipts.values()
    )
    assert erasure.complete_time.seconds

    # A second export finds nothing of the customer in any service.
    export = await api.ExportCustomerData(svc.ExportCustomerDataRequest(name=f"{customer}/profile"))
    assert export.profile.state == r.Profile.STATE_ERASED
    assert not export.profile.contact_points and not export.profile.display_name
    assert not export.addresses and not export.interactions and export.total_interaction_count == 0
    parts = {p.service: p for p in export.service_exports}
    included, absent = svc.ServiceDataExport.STATE_INCLUDED, svc.ServiceDataExport.STATE_NOT_DEPLOYED
    assert {s: p.state for s, p in parts.items()} == {
        **dict.fromkeys(("identity", "cart", "inventory"), included),
        **dict.fromkeys(("preferences", "messaging"), absent),
    }
    identity_records = [_unpack(a) for a in parts["identity"].records]
    person = next(x for x in identity_records if isinstance(x, id_r.Customer))
    assert person.state == id_r.Customer.STATE_ERASED and not person.display_name and not person.primary_email
    assert not [x for x in identity_records if isinstance(x, id_r.Identifier)]
    assert all(not x.user_agent and not x.ip_address for x in identity_records if isinstance(x, id_r.Session))
    cart_records = [_unpack(a) for a in parts["cart"].records]
    assert all(not x.lines for x in cart_records if isinstance(x, cart_r.Cart))
    orders = [x for x in cart_records if isinstance(x, cart_r.Order)]
    assert orders and all(not x.HasField("shipping_address") for x in orders)  # bookkeeping, no address
    assert not parts["inventory"].records
    # Identity refuses the customer's tokens now.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.identity().RefreshToken(
            id_pb.RefreshTokenRequest(refresh_token=registered.token.refresh_token)
        )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def _unpack(any_message: Any) -> Any:
    from google.protobuf import symbol_database

    message = symbol_database.Default().GetSymbol(any_message.TypeName())()
    any_message.Unpack(message)
    return message


async def test_the_demo_customer_has_a_profile_and_a_history_on_three_channels(world: World) -> None:
    """Profile's piece of the demo data (services/profile/seed.py), loaded as make run loads it."""
    customer = world.facts["identity"]["customer"]
    api = world.profile("call_center")

    async def registered() -> bool:  # identity's CustomerRegisteredEvent reached profile
        listed = await api.ListInteractions(svc.ListInteractionsRequest(parent=customer))
        return IT.TYPE_REGISTERED in {i.type for i in listed.interactions}

    await eventually(registered, "the demo customer's registration on the timeline")
    profile = await api.GetProfile(svc.GetProfileRequest(name=f"{customer}/profile"))
    assert (profile.given_name, profile.family_name, profile.language_code) == ("Demo", "Customer", "ro-RO")
    assert profile.traits["loyalty_tier"] == "silver" and profile.default_shipping_address
    listed = await api.ListInteractions(
        svc.ListInteractionsRequest(parent=customer, filter="type = TYPE_STORE_VISIT OR type = TYPE_CALL")
    )
    assert [(i.type, i.channel.channel) for i in listed.interactions] == [
        (IT.TYPE_CALL, channel_pb2.CHANNEL_CALL_CENTER),
        (IT.TYPE_STORE_VISIT, channel_pb2.CHANNEL_STORE_POS),
    ]
    assert listed.interactions[1].channel.store == "locations/store-1"
    view = await api.GetCustomerView(svc.GetCustomerViewRequest(name=f"{customer}/customerView"))
    assert {u.channel for u in view.profile.lifetime.channels_used} >= {
        channel_pb2.CHANNEL_WEB,
        channel_pb2.CHANNEL_STORE_POS,
        channel_pb2.CHANNEL_CALL_CENTER,
    }
    segments = await api.ListSegments(svc.ListSegmentsRequest())
    assert {s.display_name for s in segments.segments} >= {
        "Active in the last 30 days",
        "Silver loyalty members",
    }
