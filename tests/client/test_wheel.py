"""The omni-client wheel: what it holds, and that it works installed on its own."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.wheel import InstalledWheel, install


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledWheel]:
    yield install(tmp_path_factory.mktemp("omni-client"))


def test_the_wheel_holds_the_public_stubs_and_the_helpers(installed: InstalledWheel) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    for service in ("identity", "profile", "cart", "inventory", "messaging", "preferences"):
        assert f"omni/{service}/v1/{service}_service_pb2_grpc.py" in names
        assert f"omni/{service}/v1/{service}_service_pb2.pyi" in names  # typed for the caller's mypy
    assert "omni/type/v1/money_pb2.py" in names and "omni/py.typed" in names
    assert {"omni_client/__init__.py", "omni_client/channel.py", "omni_client/py.typed"} <= set(names)
    assert not [n for n in names if n.startswith("omni/probe/")]  # the test-only contract stays out
    metadata = zipfile.ZipFile(installed.wheel).read("omni_client-0.1.0.dist-info/METADATA").decode()
    assert "Name: omni-client" in metadata and "Requires-Dist: grpcio>=1.66" in metadata


def test_the_same_sources_give_the_same_wheel(installed: InstalledWheel, tmp_path: Path) -> None:
    from omni_runtime.devtools import client_wheel

    again = client_wheel.build(tmp_path)
    assert again.read_bytes() == installed.wheel.read_bytes()


def test_installed_alone_it_imports_without_the_platform(installed: InstalledWheel) -> None:
    script = (
        "import importlib.util, omni_client\n"
        "from omni.cart.v1 import cart_service_pb2_grpc\n"
        "from omni.identity.v1 import identity_service_pb2\n"
        f"assert omni_client.__file__.startswith({str(installed.site)!r})\n"
        "assert importlib.util.find_spec('omni_runtime') is None\n"
        "assert importlib.util.find_spec('services') is None\n"
        "print(omni_client.CallContext('store_pos', store='locations/store-1').metadata())\n"
    )
    done = installed.run("-c", script)
    assert done.returncode == 0, done.stderr
    assert "('x-omni-store', 'locations/store-1')" in done.stdout
