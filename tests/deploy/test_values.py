"""values.yaml, values.schema.json and the example value sets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from .helpers import ALL_SERVICES, CHART, VALUE_SETS, load_values, render

BAD_VALUES = Path(__file__).parent / "data" / "bad-values.yaml"


def test_a_bad_values_file_is_rejected_with_a_clear_message() -> None:
    values = load_values([BAD_VALUES])
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    message = str(caught.value)
    assert "at '/services/cart/replicas': got string, want integer" in message
    assert "at '/services/cart': additional properties 'replica' not allowed" in message
    assert "at '/services/cart/autoscaling/enabled': got string, want boolean" in message
    # An install (render) refuses the same values, before any template runs.
    with pytest.raises(helm.HelmValuesError, match="don't meet the specifications of the schema"):
        render([BAD_VALUES])
    report = helm.lint(CHART, values)
    assert any("/services/cart/replicas" in error for error in report["errors"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"services": {"cart": {"resources": {"requests": {"cpu": "100m"}}}}}, "missing property 'memory'"),
        (
            {"services": {"cart": {"probes": {"readiness": {"periodSecond": 5}}}}},
            "'periodSecond' not allowed",
        ),
        ({"services": {"cart": {"protocol": "tcp"}}}, "/services/cart/protocol"),
        ({"services": {"Cart": {}}}, "'Cart' does not match pattern"),
        ({"services": {"cart": {"env": {"bad-name": "x"}}}}, "'bad-name' does not match pattern"),
        ({"global": {"logLevel": "verbose"}}, "/global/logLevel"),
        ({"global": {"imageTag": "1.0"}}, "additional properties 'imageTag' not allowed"),
    ],
)
def test_the_schema_names_the_offending_key(override: dict[str, Any], expected: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(override)
    assert expected in str(caught.value)


def test_templates_explain_what_is_missing() -> None:
    """Mistakes the schema cannot see fail the render with a sentence, not a stack of YAML."""
    with pytest.raises(helm.HelmRenderError, match=r"services\.cart\.database\.secretName is required"):
        render(overrides={"postgresql": {"enabled": False}, "global": {"nats": {"url": "nats://n:4222"}}})
    with pytest.raises(
        helm.HelmRenderError, match=r"global\.nats\.url .* is required when nats\.enabled=false"
    ):
        render(overrides={"nats": {"enabled": False}})
    with pytest.raises(helm.HelmRenderError, match=r"services\.cart\.calls names \"invntory\""):
        render(overrides={"services": {"cart": {"calls": ["identity", "invntory"]}}})


SECRET_WORDS = re.compile(r"password|passwd|secret|token|credential|apikey|api_key|private", re.I)
# Keys that name a Secret (or a key inside one) rather than hold its content.
REFERENCE_KEYS = re.compile(
    r"(secretname|existingsecret|secretkey|pullsecrets|name|key|keytype|mountpath)$", re.I
)


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    else:
        yield path, node


def secret_problems(values: Any) -> list[str]:
    problems = []
    for path, value in _leaves(values):
        if not isinstance(value, str) or not value:
            continue
        leaf = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
        if SECRET_WORDS.search(leaf) and not REFERENCE_KEYS.search(leaf):
            problems.append(f"{path}: a secret value in plain text")
        if "-----BEGIN" in value or re.search(r"://[^/@\s]+:[^/@\s]+@", value):
            problems.append(f"{path}: credentials in plain text")
    return problems


@pytest.mark.parametrize(
    "values_file", ["values.yaml", *(f.name for files in VALUE_SETS.values() for f in files)]
)
def test_no_secret_is_written_in_values(values_file: str) -> None:
    values = yaml.safe_load((CHART / values_file).read_text())
    assert not secret_problems(values)


def test_a_secret_in_values_would_be_caught() -> None:
    assert secret_problems({"postgresql": {"password": "hunter2"}})
    assert secret_problems({"global": {"nats": {"url": "nats://omni:hunter2@nats:4222"}}})
    assert secret_problems({"services": {"cart": {"env": {"OMNI_DATABASE_URL": "postgresql://u:p@db/cart"}}}})
    assert secret_problems({"global": {"jwt": {"key": "-----BEGIN PRIVATE KEY-----"}}})
    assert not secret_problems(
        {"global": {"jwt": {"existingSecret": "omni-jwt"}, "image": {"pullSecrets": ["r"]}}}
    )


def test_values_have_a_block_per_service_with_enabled() -> None:
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values()
    assert set(merged["services"]) == set(ALL_SERVICES)
    assert merged["serviceDefaults"]["enabled"] is True
    for block in ("image", "replicas", "resources", "autoscaling", "env", "database"):
        assert block in merged["serviceDefaults"], block
    assert merged["postgresql"]["enabled"] and merged["nats"]["enabled"]


def test_production_example_turns_the_in_chart_dependencies_off() -> None:
    values = load_values(VALUE_SETS["production"])
    assert values["postgresql"]["enabled"] is False
    assert values["nats"]["enabled"] is False
    assert values["global"]["jwt"]["existingSecret"]
    for name in ALL_SERVICES:
        if name != "gateway":
            assert values["services"][name]["database"]["secretName"] == f"omni-{name}-database"
