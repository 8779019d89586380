"""The ``omni-client`` wheel: the contracts' generated stubs plus ``omni_client``, for channel backends.

Built by ``make protos`` (``omni protos client-wheel``) from ``gen/`` (generated, never committed)
and ``libs/omni_client/`` into ``dist/omni_client-<version>-py3-none-any.whl``. Written directly
as a zip (a pure-Python wheel is a zip with a ``.dist-info`` folder), so building it needs no
build backend, no network and no isolated environment, and the same sources give the same bytes
(fixed timestamps, sorted entries). Kept to the standard library like ``protos.py``.

The wheel holds the public contracts only: the test-only probe contract stays out. Its top-level
``omni`` package is the stubs, as in the platform's own environment, so a channel backend imports
``from omni.cart.v1 import cart_service_pb2_grpc`` exactly as the services do (and must not
install the platform package ``omni`` beside it: both provide the stubs).
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GEN = ROOT / "gen"
CLIENT = ROOT / "libs" / "omni_client"
DIST = ROOT / "dist"
NAME = "omni_client"
# Generated packages that are not part of the public API.
EXCLUDED = ("omni/probe/",)
REQUIRES = (
    "grpcio>=1.66",
    "protobuf>=5.27",
    "googleapis-common-protos>=1.63",
)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def _files() -> list[tuple[str, Path]]:
    if not (GEN / "omni" / "__init__.py").is_file():
        raise SystemExit("gen/ has no stubs: run `make protos` (omni protos generate) first")
    out: list[tuple[str, Path]] = []
    for path in sorted((GEN / "omni").rglob("*")):
        arc = path.relative_to(GEN).as_posix()
        if path.is_file() and path.suffix in {".py", ".pyi", ".typed"} and not arc.startswith(EXCLUDED):
            out.append((arc, path))
    for path in sorted(CLIENT.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".typed"} and "__pycache__" not in path.parts:
            out.append((f"{NAME}/{path.relative_to(CLIENT).as_posix()}", path))
    return out


def _metadata(version: str) -> str:
    doc = (CLIENT / "__init__.py").read_text().split('"""')[1].strip()
    lines = [
        "Metadata-Version: 2.1",
        "Name: omni-client",
        f"Version: {version}",
        "Summary: Omni's gRPC stubs and the helpers every channel backend needs",
        "Requires-Python: >=3.11",
        *(f"Requires-Dist: {req}" for req in REQUIRES),
        "Description-Content-Type: text/plain",
        "",
        doc,
        "",
    ]
    return "\n".join(lines)


def _record_line(arc: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arc},sha256={digest},{len(data)}"


def build(dist: Path = DIST) -> Path:
    """Write the wheel into ``dist`` and return its path."""
    version = _version()
    info = f"{NAME}-{version}.dist-info"
    wheel = dist / f"{NAME}-{version}-py3-none-any.whl"
    entries: list[tuple[str, bytes]] = [(arc, path.read_bytes()) for arc, path in _files()]
    entries.append((f"{info}/METADATA", _metadata(version).encode()))
    entries.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: omni protos client-wheel\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        )
    )
    entries.append((f"{info}/top_level.txt", b"omni\nomni_client\n"))
    record = [_record_line(arc, data) for arc, data in entries] + [f"{info}/RECORD,,"]
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    dist.mkdir(parents=True, exist_ok=True)
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arc, data in entries:
            item = zipfile.ZipInfo(arc, date_time=_EPOCH)
            item.compress_type = zipfile.ZIP_DEFLATED
            item.external_attr = 0o644 << 16
            archive.writestr(item, data)
    partial.replace(wheel)
    return wheel
