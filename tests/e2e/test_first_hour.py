"""The first hour: the demo data ``make run`` loads, the examples it prints (run as printed), and
the client library's examples (run with nothing but the omni-client wheel).

identity, inventory, cart and the gateway run in-process (as tests/gateway/platform.py builds
them); the demo data is loaded exactly as ``omni dev up`` loads it; then the printed examples run
in bash from the repository root with nothing but ``.venv`` (``omni call``) and curl, pointed at
this platform's ports instead of the fixed ones. Only the address differs from what is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import field_mask_pb2

import omni_client
from omni.cart.v1 import cart_service_pb2 as cart_pb
from omni.cart.v1 import cart_service_pb2_grpc
from omni.inventory.v1 import inventory_service_pb2 as inv_pb
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as inv_resources
from omni_runtime import demo
from omni_runtime.testing.plugin import Infra, bearer
from tests.client.wheel import InstalledWheel, install
from tests.gateway.platform import Platform, available, live, running_platform, seed_demo_data

SERVICES = ("identity", "inventory", "cart")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
pytestmark = pytest.mark.skipif(
    available(SERVICES) != list(SERVICES),
    reason=f"needs identity, inventory and cart; present: {available(SERVICES)}",
)


@pytest.fixture(scope="module")
async def platform(omni_infra: Infra) -> AsyncIterator[Platform]:
    async with running_platform(omni_infra, SERVICES) as running:
        yield running


@pytest.fixture(scope="module")
async def seeded(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> demo.DemoState:
    return await seed_demo_data(platform, tmp_path_factory.mktemp("omni-home") / "demo.json")


async def _token(platform: Platform, state: demo.DemoState) -> str:
    return await demo.admin_token(platform.targets["identity"], state.facts()["identity"]["password"])


async def _inventory_snapshot(platform: Platform, token: str) -> tuple[int, int, int, int]:
    stub = inventory_service_pb2_grpc.InventoryServiceStub(
        platform.channels["omni.inventory.v1.InventoryService"]
    )
    md = bearer(token)
    items = await stub.ListItems(inv_pb.ListItemsRequest(page_size=100), metadata=md)
    locations = await stub.ListLocations(inv_pb.ListLocationsRequest(page_size=100), metadata=md)
    levels = await stub.ListStockLevels(
        inv_pb.ListStockLevelsRequest(parent="locations/-", page_size=1000), metadata=md
    )
    movements = await stub.ListStockMovements(
        inv_pb.ListStockMovementsRequest(parent="locations/-/stockLevels/-", page_size=1000), metadata=md
    )
    return (
        len(items.items),
        len(locations.locations),
        len(levels.stock_levels),
        len(movements.stock_movements),
    )


async def test_the_demo_data_tells_the_story(platform: Platform, seeded: demo.DemoState) -> None:
    from services.inventory import seed as inventory_seed

    token = await _token(platform, seeded)
    md = bearer(token)
    assert {name: seeded.get(name)["state"] for name in SERVICES} == dict.fromkeys(SERVICES, "loaded")
    stub = inventory_service_pb2_grpc.InventoryServiceStub(
        platform.channels["omni.inventory.v1.InventoryService"]
    )
    items = (await stub.ListItems(inv_pb.ListItemsRequest(page_size=100), metadata=md)).items
    assert len(items) == len(inventory_seed.ITEMS)
    assert all(item.active and {p.currency_code for p in item.prices} == {"EUR", "RON"} for item in items)
    locations = {
        loc.name: loc
        for loc in (await stub.ListLocations(inv_pb.ListLocationsRequest(), metadata=md)).locations
    }
    stores = [loc for loc in locations.values() if loc.pickup_enabled]
    assert len(stores) == 3 and len(locations) == 5
    assert "locations/store-1" in locations  # the demo store associate's store exists
    assert all(
        loc.opening_hours.periods and loc.opening_hours.time_zone and loc.coordinates.latitude
        for loc in stores
    )
    assert sum(loc.ship_from for loc in locations.values()) == 2

    # A customer in Cluj sees the featured item at both Cluj stores, nearest first.
    near = await stub.CheckAvailability(
        inv_pb.CheckAvailabilityRequest(
            items=[f"items/{inventory_seed.FEATURED.sku}"],
            near=inv_pb.NearbyArea(point=inventory_seed.CUSTOMER_POINT, radius_meters=20_000),
            pickup_only=True,
        ),
        metadata=md,
    )
    found = [(a.location.location, a.available) for a in near.items[0].locations]
    assert [name for name, _ in found] == ["locations/store-2", "locations/store-1"]
    assert all(quantity > 0 for _, quantity in found)

    carts = cart_service_pb2_grpc.CartServiceStub(platform.channels["omni.cart.v1.CartService"])
    promotions = (await carts.ListPromotions(cart_pb.ListPromotionsRequest(), metadata=md)).promotions
    assert [(p.code, p.active, p.percent_off_basis_points) for p in promotions] == [("WELCOME10", True, 1000)]


async def test_seeding_again_adds_nothing_and_never_into_a_platform_with_data(
    platform: Platform, seeded: demo.DemoState, tmp_path: Path
) -> None:
    token = await _token(platform, seeded)
    before = await _inventory_snapshot(platform, token)
    principals = seeded.get("identity")
    common = {
        "principals": demo.DemoResult(principals["lines"], principals["facts"]),
        "admin_password": principals["facts"]["password"],
    }
    # The same state file: everything is marked loaded, nothing is looked at again.
    again = await demo.seed_platform(list(platform.services), platform.targets, seeded.path, **common)
    assert again.get("inventory")["state"] == "loaded"
    # A fresh state file over a platform that has data: skipped, not duplicated.
    fresh = await demo.seed_platform(
        list(platform.services), platform.targets, tmp_path / "demo.json", **common
    )
    assert fresh.get("inventory")["state"] == fresh.get("cart")["state"] == "skipped"
    # An interrupted load (state "loading") is finished without counting stock twice.
    interrupted = json.loads(seeded.path.read_text())
    interrupted["inventory"] = {"state": "loading"}
    resumed_path = tmp_path / "resumed.json"
    resumed_path.write_text(json.dumps(interrupted))
    resumed = await demo.seed_platform(list(platform.services), platform.targets, resumed_path, **common)
    assert resumed.get("inventory")["state"] == "loaded"
    assert await _inventory_snapshot(platform, token) == before


def _examples_script(commands: list[str]) -> str:
    lines = ["set -euo pipefail"]
    for i, command in enumerate(commands):
        lines.extend((f"echo '--- example {i}'", command))
    return "\n".join(lines) + "\n"


async def test_the_printed_examples_work_exactly_as_printed(
    platform: Platform, seeded: demo.DemoState
) -> None:
    facts = seeded.facts()
    printed = demo.report(seeded, [*platform.services, "gateway"], gateway="localhost:8080")
    as_printed = [e.command for e in demo.examples(facts, gateway="localhost:8080")]
    assert len(as_printed) >= 5
    for command in as_printed:
        assert f"  {command}" in printed.splitlines()
    assert "  http://localhost:8080/docs" in printed.splitlines()
    assert "grpcurl" not in printed

    async with live(platform.app) as base:
        address = base.removeprefix("http://")
        commands = [e.command for e in demo.examples(facts, gateway=address)]
        assert [c.replace(address, "localhost:8080") for c in commands] == as_printed  # only the port differs
        if shutil.which("curl") is None:
            commands = [c for c in commands if not c.startswith("curl ")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
        env.update({f"OMNI_{name.upper()}_TARGET": target for name, target in platform.targets.items()})
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            _examples_script(commands),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        docs = await asyncio.to_thread(_fetch, f"{base}/docs")
    assert proc.returncode == 0, f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
    outputs = dict(
        zip(commands, out.decode().split("--- example ")[1:], strict=True)
    )  # each chunk starts with its index
    by_kind = {
        command.split()[0] + " " + " ".join(command.split()[2:4]): text for command, text in outputs.items()
    }
    del by_kind
    texts = [chunk.split("\n", 1)[1] for chunk in outputs.values()]
    login, *rest = texts
    assert login == ""  # the token went into OMNI_TOKEN
    for command, text in zip(commands[1:], rest, strict=True):
        if command.startswith("curl "):
            answer = json.loads(text)
            assert answer["items"][0]["totalAvailable"] > 0
            assert {loc["location"] for loc in answer["locations"]} >= {"locations/store-1"}
        elif " AddCartLine " in command:
            cart = json.loads(text)
            assert [line["item"] for line in cart["lines"]] == [f"items/{facts['inventory']['item']}"]
            assert cart["lines"][0]["addedBy"]["channel"] == "CHANNEL_MOBILE_APP"
        elif " ApplyPromotionCode " in command:
            total = json.loads(text)
            assert total["currencyCode"] == "EUR" and int(total["minorUnits"]) == 12900 - 1290
        else:  # staff and service tokens, printed bare
            assert text.strip().count(".") == 2, text  # a JWT
    assert docs.startswith("<!doctype html>")


def _fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


# -- the client library's examples, run with nothing but the omni-client wheel ------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    return install(tmp_path_factory.mktemp("omni-client"))


async def _example(wheel: InstalledWheel, platform: Platform, script: str, *args: str) -> str:
    targets = {f"OMNI_{name.upper()}_TARGET": target for name, target in platform.targets.items()}
    done = await asyncio.to_thread(wheel.run, str(EXAMPLES / script), *args, **targets)
    assert done.returncode == 0, f"{script}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_the_web_backend_example_adds_to_a_shoppers_cart(
    platform: Platform, seeded: demo.DemoState, wheel: InstalledWheel
) -> None:
    from omni.identity.v1 import identity_service_pb2 as id_pb
    from omni.identity.v1 import identity_service_pb2_grpc
    from omni.identity.v1 import resources_pb2 as id_resources

    identity = identity_service_pb2_grpc.IdentityServiceStub(
        platform.channels["omni.identity.v1.IdentityService"]
    )
    shopper = await identity.RegisterCustomer(
        id_pb.RegisterCustomerRequest(
            identifier=id_resources.IdentifierKey(
                kind=id_resources.IDENTIFIER_KIND_EMAIL, value="web-example@example.com"
            ),
            password="a long enough passphrase",
        ),
        metadata=(("x-omni-channel", "web"),),
    )
    out = await _example(
        wheel,
        platform,
        "web_add_to_cart.py",
        "--email",
        "web-example@example.com",
        "--password",
        "a long enough passphrase",
        "--more",
        "2",
    )
    assert "items/TRAIL-SHOE-42: 200 in stock online" in out
    assert "subtotal 387.00 EUR" in out  # 3 × 129.00
    carts = cart_service_pb2_grpc.CartServiceStub(platform.channels["omni.cart.v1.CartService"])
    cart = await carts.GetCart(
        cart_pb.GetCartRequest(name=f"{shopper.customer.name}/cart"),
        metadata=bearer(shopper.token.access_token),
    )
    assert [(line.item, line.quantity) for line in cart.lines] == [("items/TRAIL-SHOE-42", 3)]
    assert (cart.lines[0].added_by.channel, cart.lines[0].added_by.device) == (
        1,
        "browser-demo",
    )  # CHANNEL_WEB


async def test_the_pos_example_commits_a_sale_once(
    platform: Platform, seeded: demo.DemoState, wheel: InstalledWheel
) -> None:
    token = await _token(platform, seeded)
    stub = inventory_service_pb2_grpc.InventoryServiceStub(
        platform.channels["omni.inventory.v1.InventoryService"]
    )
    level = "locations/store-1/stockLevels/MERINO-SOCKS"
    before = await stub.GetStockLevel(inv_pb.GetStockLevelRequest(name=level), metadata=bearer(token))
    out = await _example(wheel, platform, "pos_sale.py", "--sell", "MERINO-SOCKS=2", "--receipt", "R-TEST-1")
    assert "associate@omni.local at the till of locations/store-1" in out
    assert "receipt R-TEST-1: 29.80 EUR" in out and "sale committed once (1 movements)" in out
    after = await stub.GetStockLevel(inv_pb.GetStockLevelRequest(name=level), metadata=bearer(token))
    assert after.on_hand == before.on_hand - 2  # sent twice, taken once
    sales = await stub.ListStockMovements(
        inv_pb.ListStockMovementsRequest(parent=level, filter='reference = "R-TEST-1"'),
        metadata=bearer(token),
    )
    assert [(m.on_hand_delta, m.channel.device, m.channel.store) for m in sales.stock_movements] == [
        (-2, "till-1", "locations/store-1")
    ]


async def test_concurrent_read_modify_writes_with_retry_on_aborted_lose_nothing(
    platform: Platform, seeded: demo.DemoState
) -> None:
    """Eight back-office clients raise one level's safety stock at once, each read-modify-write
    with the etag: every ABORTED is re-read and retried, so all eight increments land."""
    token = await _token(platform, seeded)
    level = "locations/warehouse-cluj/stockLevels/HEADLAMP-300"
    channels = [
        omni_client.connect(
            platform.targets["inventory"],
            context=omni_client.CallContext("backoffice"),
            token=omni_client.StaticToken(token),
        )
        for _ in range(8)
    ]
    try:
        stubs = [inventory_service_pb2_grpc.InventoryServiceStub(c) for c in channels]
        start = (await stubs[0].GetStockLevel(inv_pb.GetStockLevelRequest(name=level))).safety_stock

        async def increment(stub: inventory_service_pb2_grpc.InventoryServiceStub) -> None:
            async def read() -> Any:
                return await stub.GetStockLevel(inv_pb.GetStockLevelRequest(name=level))

            async def write(current: Any) -> Any:
                return await stub.UpdateStockLevel(
                    inv_pb.UpdateStockLevelRequest(
                        stock_level=inv_resources.StockLevel(
                            name=level, safety_stock=current.safety_stock + 1, etag=current.etag
                        ),
                        update_mask=field_mask_pb2.FieldMask(paths=["safety_stock"]),
                    )
                )

            await omni_client.retry_on_aborted(read, write, attempts=20, max_pause=0.01)

        await asyncio.gather(*(increment(s) for s in stubs))
        final = await stubs[0].GetStockLevel(inv_pb.GetStockLevelRequest(name=level))
        assert final.safety_stock == start + 8
    finally:
        for channel in channels:
            await channel.close()


async def test_omni_call_describes_a_real_contract_for_copy_and_edit(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from omni_runtime.devtools import call

    monkeypatch.setenv("OMNI_CART_TARGET", platform.targets["cart"])
    assert await asyncio.to_thread(call.main, ["describe", "cart", "AddCartLine"]) == 0
    out = capsys.readouterr().out
    assert "rpc AddCartLine(omni.cart.v1.AddCartLineRequest) returns (omni.cart.v1.Cart);  // needs" in out
    template = json.loads(out.split("request template:\n", 1)[1])
    assert set(template["line"]) == {"item", "quantity", "fulfillment"}  # output-only fields left out
    assert template["line"]["fulfillment"]["method"] == "FULFILLMENT_METHOD_SHIP"
