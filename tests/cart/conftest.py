"""Fixtures of the cart tests: the real inventory and cart services on real sockets, over real
PostgreSQL and NATS, called with real signed tokens. Cart calls the inventory with a service
token, exactly as in production (only the token comes from the test key, not from identity)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import cart_service_pb2_grpc
from omni.cart.v1 import resources_pb2 as r
from omni.inventory.v1 import inventory_service_pb2 as inv
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as inv_r
from omni.type.v1 import address_pb2, money_pb2
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.errors import status_of, unpack_details
from omni_runtime.testing.plugin import Infra, bearer
from omni_runtime.testing.services import RunningService, running_service, test_settings
from services.cart.main import SERVICE as CART
from services.inventory.main import SERVICE as INVENTORY

Token = Callable[..., str]


def rid() -> str:
    return str(uuid.uuid4())


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def eur(minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", minor_units=minor)


def details(exc: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = status_of(exc)
    assert status is not None, exc
    return unpack_details(status)


def reason(exc: grpc.aio.AioRpcError) -> str:
    return str(details(exc)["ErrorInfo"].reason)


class Caller:
    """A stub bound to one caller's token and channel headers (``web``, ``store_pos``…)."""

    def __init__(self, stub: Any, token: str, channel: str = "web", store: str = "") -> None:
        self.stub = stub
        self.metadata: tuple[tuple[str, str], ...] = (*bearer(token), ("x-omni-channel", channel))
        if store:
            self.metadata = (*self.metadata, ("x-omni-store", store))

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self.stub, method)

        def invoke(request: Any, **kw: Any) -> Any:
            return call(request, metadata=self.metadata, timeout=kw.pop("timeout", 20), **kw)

        return invoke


@dataclass
class Catalogue:
    """Seeds the inventory as a back-office admin would."""

    api: Caller
    warehouse: str = ""
    store: str = ""
    other_store: str = ""
    store_name: str = ""
    items: dict[str, str] = field(default_factory=dict)

    async def item(
        self, price: int = 1000, *, active: bool = True, usd: int | None = None, stock: int = 50
    ) -> str:
        sku = uid("SKU")
        prices = [eur(price)]
        if usd is not None:
            prices.append(money_pb2.Money(currency_code="USD", minor_units=usd))
        await self.api.CreateItem(
            inv.CreateItemRequest(
                item_id=sku, item=inv_r.Item(title=f"Thing {sku}", active=active, prices=prices)
            )
        )
        if stock:
            await self.receive(self.warehouse, f"items/{sku}", stock)
        return f"items/{sku}"

    async def receive(self, location: str, item: str, quantity: int) -> None:
        await self.api.AdjustStock(
            inv.AdjustStockRequest(
                name=f"{location}/stockLevels/{item.removeprefix('items/')}",
                delta=quantity,
                reason=inv_r.ADJUSTMENT_REASON_RECEIPT,
                request_id=rid(),
            )
        )

    async def level(self, location: str, item: str) -> inv_r.StockLevel:
        return await self.api.GetStockLevel(
            inv.GetStockLevelRequest(name=f"{location}/stockLevels/{item.removeprefix('items/')}")
        )

    async def set_price(self, item: str, price: int) -> None:
        from google.protobuf import field_mask_pb2

        await self.api.UpdateItem(
            inv.UpdateItemRequest(
                item=inv_r.Item(name=item, prices=[eur(price)]),
                update_mask=field_mask_pb2.FieldMask(paths=["prices"]),
            )
        )

    async def deactivate(self, item: str) -> None:
        from google.protobuf import field_mask_pb2

        await self.api.UpdateItem(
            inv.UpdateItemRequest(
                item=inv_r.Item(name=item, active=False),
                update_mask=field_mask_pb2.FieldMask(paths=["active"]),
            )
        )

    async def active_reservations(self) -> list[inv_r.Reservation]:
        page = await self.api.ListReservations(
            inv.ListReservationsRequest(filter="state = RESERVATION_STATE_ACTIVE", page_size=1000)
        )
        return list(page.reservations)


async def _location(api: Caller, location_id: str, *, store: bool, pickup: bool, name: str) -> str:
    loc = inv_r.Location(
        type=inv_r.LOCATION_TYPE_STORE if store else inv_r.LOCATION_TYPE_WAREHOUSE,
        display_name=name,
        ship_from=not store,
        pickup_enabled=pickup,
    )
    if store:
        loc.address.CopyFrom(
            address_pb2.PostalAddress(region_code="RO", locality="Cluj", address_lines=["Str. 1"])
        )
    await api.CreateLocation(inv.CreateLocationRequest(location_id=location_id, location=loc))
    return f"locations/{location_id}"


@pytest.fixture(scope="module")
async def inventory(omni_infra: Infra, key_source: StaticKeySource) -> AsyncIterator[RunningService]:
    """The real inventory service, in a database of its own (services never share one)."""
    settings = test_settings(
        "inventory",
        database_url=omni_infra.new_database("inventory"),
        nats_url=omni_infra.nats_url,
        extra={"OMNI_INVENTORY_SWEEP_INTERVAL_SECONDS": "0.5"},
    )
    async with running_service(INVENTORY, settings, key_source=key_source) as running:
        yield running


@pytest.fixture(scope="module")
async def catalogue(inventory: RunningService, make_token: Token) -> Catalogue:
    api = Caller(
        inventory_service_pb2_grpc.InventoryServiceStub(inventory.channel),
        make_token("staffMembers/admin", ["admin"]),
        "backoffice",
    )
    cat = Catalogue(api)
    cat.warehouse = await _location(api, uid("w"), store=False, pickup=False, name="Warehouse")
    cat.store_name = "Omni Store Cluj Centre"
    cat.store = await _location(api, uid("s"), store=True, pickup=True, name=cat.store_name)
    cat.other_store = await _location(api, uid("s"), store=True, pickup=True, name="Omni Store Iasi")
    return cat


@pytest.fixture(scope="module")
def cart_settings(
    service_settings: Callable[..., Settings], inventory: RunningService
) -> Callable[..., Settings]:
    def make(**extra: str) -> Settings:
        values = {"OMNI_CART_SWEEP_INTERVAL_SECONDS": "0.2", **extra}
        return service_settings("cart", targets={"inventory": inventory.target}, extra=values)

    return make


@contextlib.asynccontextmanager
async def cart_replica(
    settings: Settings, key_source: StaticKeySource, make_token: Token
) -> AsyncIterator[RunningService]:
    """One cart process; it calls the inventory with a service token."""
    token = make_token("serviceClients/omni-cart", ["service"], ttl_seconds=3600)

    async def provider() -> str:
        return token

    async with running_service(CART, settings, key_source=key_source) as running:
        assert running.host.runtime is not None
        running.host.runtime.peers.token_provider = provider
        yield running


@pytest.fixture(scope="module")
async def cart(
    cart_settings: Callable[..., Settings], key_source: StaticKeySource, make_token: Token
) -> AsyncIterator[RunningService]:
    async with cart_replica(cart_settings(), key_source, make_token) as running:
        yield running


def stub(running: RunningService) -> cart_service_pb2_grpc.CartServiceStub:
    return cart_service_pb2_grpc.CartServiceStub(running.channel)


@pytest.fixture
def customer(make_token: Token, cart: RunningService) -> Callable[..., tuple[str, Caller]]:
    """A fresh customer and a caller acting as them: ``name, api = customer(channel="web")``."""

    def make(channel: str = "web", roles: tuple[str, ...] = ("customer",)) -> tuple[str, Caller]:
        name = f"customers/{uid('c')}"
        return name, Caller(stub(cart), make_token(name, list(roles)), channel)

    return make


@pytest.fixture
def staff(make_token: Token, cart: RunningService) -> Callable[..., Caller]:
    def make(role: str = "admin", store: str = "", channel: str = "backoffice") -> Caller:
        token = make_token(f"staffMembers/{uid(role)}", [role], store=store)
        return Caller(stub(cart), token, channel, store)

    return make


def add(cart_name: str, item: str, quantity: int = 1, **kw: Any) -> svc.AddCartLineRequest:
    fulfillment = kw.pop("fulfillment", None)
    line = r.CartLine(item=item, quantity=quantity)
    if fulfillment is not None:
        line.fulfillment.CopyFrom(fulfillment)
    return svc.AddCartLineRequest(name=cart_name, line=line, **kw)


def pickup(store: str) -> r.LineFulfillment:
    return r.LineFulfillment(method=r.FULFILLMENT_METHOD_PICKUP, pickup_store=store)


ADDRESS = address_pb2.PostalAddress(
    region_code="RO", locality="Cluj", address_lines=["Str. Memorandumului 1"]
)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


class Events:
    """Every event the cart publishes while a test runs, read from JetStream like a consumer."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    def of(self, message_type: Any) -> list[Any]:
        from omni_runtime.events.bus import subject_for

        subject = subject_for(message_type.DESCRIPTOR.full_name)
        return [message_type.FromString(data) for subj, data in self.received if subj == subject]

    async def wait_for(
        self, message_type: Any, predicate: Callable[[Any], bool], timeout: float = 10.0
    ) -> Any:
        found: list[Any] = []

        async def seen() -> bool:
            found[:] = [m for m in self.of(message_type) if predicate(m)]
            return bool(found)

        await eventually(seen, timeout)
        return found[0]


@pytest.fixture(scope="module")
async def events(omni_infra: Infra, cart: RunningService) -> AsyncIterator[Events]:
    import nats
    from nats.js import api

    collected = Events()
    nc = await nats.connect(omni_infra.nats_url)
    js = nc.jetstream()

    async def on_message(msg: Any) -> None:
        collected.received.append((msg.subject, msg.data))

    await eventually(lambda: _stream_exists(js), 10)
    sub = await js.subscribe(
        "omni.cart.>", cb=on_message, ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW
    )
    yield collected
    await sub.unsubscribe()
    await nc.close()


async def _stream_exists(js: Any) -> bool:
    try:
        await js.stream_info("OMNI_CART")
        return True
    except Exception:
        return False
