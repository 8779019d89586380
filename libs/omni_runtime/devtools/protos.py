"""Contract tooling: generate Python stubs, lint with buf, and check for breaking changes.

Kept importable without the project installed (the Makefile runs it with ``PYTHONPATH=libs``
before the editable install) so it only uses the standard library plus grpc_tools and buf.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTOS = ROOT / "protos"
DEPS = PROTOS / ".deps"
# Test-only contracts (the runtime's probe service): compiled into gen/ beside the product's
# contracts but never part of the public API, so not linted or checked for breaking changes.
TEST_PROTOS = ROOT / "tests" / "protos"
GEN = ROOT / "gen"
DESCRIPTOR_SET = GEN / "omni" / "descriptors.binpb"
# The googleapis protos our contracts import; they ship inside googleapis-common-protos.
GOOGLE_PACKAGES = ("google/api", "google/rpc", "google/type")


def _site_google_root() -> Path:
    import google.api  # from googleapis-common-protos

    return Path(next(iter(google.api.__path__))).parent.parent


def _buf() -> str:
    found = shutil.which("buf", path=os.path.dirname(sys.executable)) or shutil.which("buf")
    if not found:
        raise SystemExit("buf not found: install the buf-bin wheel (make venv)")
    return found


def vendor_deps() -> None:
    """Copy the googleapis protos into protos/.deps so buf and protoc resolve imports offline."""
    src_root = _site_google_root()
    for package in GOOGLE_PACKAGES:
        target = DEPS / package
        target.mkdir(parents=True, exist_ok=True)
        for proto in (src_root / package).glob("*.proto"):
            shutil.copy2(proto, target / proto.name)


def _own_protos() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto") if ".deps" not in p.parts)


def _test_protos() -> list[str]:
    if not TEST_PROTOS.is_dir():
        return []
    return sorted(str(p.relative_to(TEST_PROTOS)) for p in TEST_PROTOS.rglob("*.proto"))


def generate() -> None:
    """Generate message, gRPC and mypy stubs plus one descriptor set into gen/."""
    from grpc_tools import protoc

    vendor_deps()
    if GEN.exists():
        shutil.rmtree(GEN)
    GEN.mkdir()
    well_known = Path(protoc.__file__).parent / "_proto"
    files = _own_protos()
    test_files = _test_protos()
    args = [
        "protoc",
        f"-I{PROTOS}",
        *([f"-I{TEST_PROTOS}"] if test_files else []),
        f"-I{DEPS}",
        f"-I{well_known}",
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
        f"--mypy_out={GEN}",
        f"--mypy_grpc_out={GEN}",
        f"--descriptor_set_out={DESCRIPTOR_SET.relative_to(ROOT)}",
        "--include_imports",
        "--include_source_info",
        *files,
        *test_files,
    ]
    DESCRIPTOR_SET.parent.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    finally:
        os.chdir(cwd)
    for directory in [GEN / "omni", *(p for p in (GEN / "omni").rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (GEN / "omni" / "py.typed").touch()
    print(f"generated stubs for {len(files) + len(test_files)} proto files into {GEN.relative_to(ROOT)}/")


def lint() -> None:
    vendor_deps()
    subprocess.run([_buf(), "lint"], cwd=PROTOS, check=True)
    subprocess.run([_buf(), "build", "-o", os.devnull], cwd=PROTOS, check=True)
    print("buf lint: clean")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def breaking(ref_arg: str | None) -> None:
    """Compare the contracts with those of an earlier commit (default: the previous one)."""
    vendor_deps()
    ref = ref_arg or os.environ.get("OMNI_BREAKING_AGAINST", "HEAD~1")
    try:
        _git("rev-parse", "--verify", f"{ref}^{{commit}}")
        listed = _git("ls-tree", "-r", "--name-only", ref, "--", "protos")
    except subprocess.CalledProcessError:
        print(f"buf breaking: no commit {ref} to compare with; skipped")
        return
    if "protos/buf.yaml" not in listed.splitlines():
        print(f"buf breaking: {ref} has no contracts yet; skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", ref, "protos"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        old = Path(tmp) / "protos"
        shutil.copytree(DEPS, old / ".deps", dirs_exist_ok=True)
        # Compare image to image: a workspace input has one image per module, an image has one.
        against = Path(tmp) / "against.binpb"
        current = Path(tmp) / "current.binpb"
        subprocess.run([_buf(), "build", "-o", str(against)], cwd=old, check=True)
        subprocess.run([_buf(), "build", "-o", str(current)], cwd=PROTOS, check=True)
        subprocess.run(
            [
                _buf(),
                "breaking",
                str(current),
                "--against",
                str(against),
                "--config",
                str(PROTOS / "buf.yaml"),
            ],
            cwd=PROTOS,
            check=True,
        )
    print(f"buf breaking against {ref}: compatible")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="omni protos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="generate Python stubs into gen/")
    sub.add_parser("lint", help="buf lint the contracts")
    brk = sub.add_parser("breaking", help="buf breaking against an earlier commit")
    brk.add_argument("--against", help="git revision (default HEAD~1 or $OMNI_BREAKING_AGAINST)")
    wheel = sub.add_parser("client-wheel", help="build the omni-client wheel from gen/ into dist/")
    wheel.add_argument("--dist", type=Path, help="output folder (default dist/)")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            generate()
        elif args.command == "lint":
            lint()
        elif args.command == "client-wheel":
            from omni_runtime.devtools import client_wheel

            built = client_wheel.build(args.dist or client_wheel.DIST)
            print(f"built {built.relative_to(ROOT) if built.is_relative_to(ROOT) else built}")
        else:
            breaking(args.against)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(exc.returncode) from None


if __name__ == "__main__":
    main()
