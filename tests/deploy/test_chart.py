"""The chart, rendered by Helm's engine for every value set: lint, Kubernetes schemas, invariants."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest
from kubernetes_validate import utils as kv

from . import invariants as inv
from .helpers import (
    ALL_SERVICES,
    CHART,
    EXPECTED_CALLS,
    GRPC_SERVICES,
    KUBE_VERSION,
    RELEASE,
    VALUE_SETS,
    Pod,
    Release,
    allowed,
    env_of,
    load_values,
    pods_of,
    render,
)

PROTOCOLS = {name: ("http" if name == "gateway" else "grpc") for name in ALL_SERVICES}
VALUE_SET_NAMES = sorted(VALUE_SETS)


def all_problems(release: Release, *, open_to_anyone: set[str]) -> list[str]:
    return [
        *inv.workload_problems(release, PROTOCOLS),
        *inv.service_problems(release, PROTOCOLS),
        *inv.security_problems(release),
        *inv.migration_problems(release, GRPC_SERVICES, ["gateway"]),
        *inv.helm_test_problems(release, PROTOCOLS),
        *inv.default_deny_problems(release),
        *inv.network_problems(
            release,
            EXPECTED_CALLS,
            PROTOCOLS,
            databases=set(GRPC_SERVICES),
            nats_clients=set(GRPC_SERVICES),
            open_to_anyone=open_to_anyone,
        ),
    ]


OPEN_TO_ANYONE = {"default": {"gateway"}, "dev": {"gateway"}, "production": set()}


# --- Helm lint and the Kubernetes schemas -------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SET_NAMES)
def test_helm_lint_is_clean(value_set: str) -> None:
    report = helm.lint(
        CHART,
        load_values(VALUE_SETS[value_set]) or None,
        strict=True,
        namespace="omni",
        kube_version=f"v{KUBE_VERSION}.0",
    )
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not findings, report


# The oldest schemas kubernetes-validate ships, the version the chart is written against, the newest.
KUBE_VERSIONS = sorted({"1.33", KUBE_VERSION, ".".join(kv.latest_version().split(".")[:2])})


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SET_NAMES)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    releases: dict[str, Release], value_set: str, kube_version: str
) -> None:
    release = releases[value_set]
    assert len(release.manifests) > 40
    unchecked, errors = [], []
    for m in release.manifests:
        try:
            kv.validate(m.doc, kube_version, strict=True)
        except kv.SchemaNotFoundError:
            unchecked.append(m)
        except kv.ValidationError as exc:
            errors.append(f"{m.template} {m.kind}/{m.name}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)
    # Only the Prometheus Operator's custom resources have no built-in schema; checked by hand.
    assert {m.kind for m in unchecked} <= {"ServiceMonitor", "PrometheusRule"}
    for m in unchecked:
        assert m.doc["apiVersion"] == "monitoring.coreos.com/v1"
        if m.kind == "ServiceMonitor":
            assert m.doc["spec"]["selector"]["matchLabels"]
            assert all(e["port"] == "metrics" for e in m.doc["spec"]["endpoints"])
        else:
            for group in m.doc["spec"]["groups"]:
                for rule in group["rules"]:
                    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
                    assert rule["alert"] and rule["expr"] and rule["labels"]["severity"]


def test_the_schema_check_would_catch_a_mistake(default_release: Release) -> None:
    """Strict validation really rejects an unknown field and a wrong type."""
    doc = copy.deepcopy(inv._container(default_release, "cart"))
    assert doc is not None
    dep = copy.deepcopy(default_release.get("Deployment", f"{RELEASE}-cart").doc)
    dep["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = doc["livenessProbe"]
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, KUBE_VERSION, strict=True)
    dep = copy.deepcopy(default_release.get("Deployment", f"{RELEASE}-cart").doc)
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "thirty"
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, KUBE_VERSION, strict=True)


# --- Invariants -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SET_NAMES)
def test_every_service_meets_the_invariants(releases: dict[str, Release], value_set: str) -> None:
    problems = all_problems(releases[value_set], open_to_anyone=OPEN_TO_ANYONE[value_set])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("value_set", ["default", "production"])
def test_every_service_has_a_pdb_and_an_hpa(releases: dict[str, Release], value_set: str) -> None:
    problems = inv.availability_problems(releases[value_set], ALL_SERVICES)
    assert not problems, "\n".join(problems)


def test_dev_values_run_one_replica_without_autoscaling(releases: dict[str, Release]) -> None:
    dev = releases["dev"]
    assert not dev.of_kind("HorizontalPodAutoscaler")
    for name in ALL_SERVICES:
        assert dev.get("Deployment", f"{RELEASE}-{name}").doc["spec"]["replicas"] == 1
        assert dev.find("PodDisruptionBudget", f"{RELEASE}-{name}") is not None


def test_peers_get_their_targets(default_release: Release) -> None:
    for name, peers in EXPECTED_CALLS.items():
        env = env_of(inv._container(default_release, name) or {})
        targets = {k for k in env if k.endswith("_TARGET")}
        assert targets == {f"OMNI_{p.upper()}_TARGET" for p in peers}, name
        for peer in peers:
            assert env[f"OMNI_{peer.upper()}_TARGET"] == f"{RELEASE}-{peer}:50051"


def test_identity_mounts_the_jwt_signing_keys(default_release: Release, production_release: Release) -> None:
    for release, secret in (
        (default_release, f"{RELEASE}-jwt-signing-keys"),
        (production_release, "omni-jwt-signing-keys"),
    ):
        pod = release.get("Deployment", f"{RELEASE}-identity").doc["spec"]["template"]["spec"]
        env = env_of(pod["containers"][0])
        keys_dir = env["OMNI_JWT_PRIVATE_KEYS_DIR"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == keys_dir)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert mount["readOnly"] is True
        assert volume["secret"]["secretName"] == secret
        for other in ALL_SERVICES:
            if other != "identity":
                assert "OMNI_JWT_PRIVATE_KEYS_DIR" not in env_of(inv._container(release, other) or {})
    generated = default_release.get("Secret", f"{RELEASE}-jwt-signing-keys")
    assert "signing-key.pem" in generated.doc["data"]
    assert production_release.find("Secret", "omni-jwt-signing-keys") is None


def test_production_uses_existing_secrets_and_external_endpoints(production_release: Release) -> None:
    assert not production_release.of_kind("Secret"), "production must not render any Secret"
    assert not production_release.of_kind("StatefulSet"), "no in-chart PostgreSQL or NATS"
    for name in GRPC_SERVICES:
        env = env_of(inv._container(production_release, name) or {})
        assert env["OMNI_DATABASE_URL"] == {"secretKeyRef": {"name": f"omni-{name}-database", "key": "url"}}
        assert env["OMNI_NATS_URL"] == {"secretKeyRef": {"name": "omni-nats", "key": "url"}}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    policies = [m.doc for m in production_release.of_kind("NetworkPolicy")]
    pods = pods_of(production_release)
    database = Pod("managed-postgresql", ip="10.20.0.5")
    elsewhere = Pod("another-database", ip="10.99.0.5")
    cart, gateway = pods[f"{RELEASE}-cart"], pods[f"{RELEASE}-gateway"]
    assert allowed(policies, cart, database, 5432)
    assert not allowed(policies, cart, elsewhere, 5432)
    assert not allowed(policies, gateway, database, 5432)
    ingress_controller = Pod("ingress-nginx", {"app": "ingress-nginx"}, namespace="ingress-nginx")
    assert allowed(policies, ingress_controller, gateway, "http")
    assert not allowed(policies, ingress_controller, cart, "grpc")
    collector = Pod("collector", {"app": "otel"}, namespace="observability")
    assert allowed(policies, cart, collector, 4317)
    ingress = production_release.get("Ingress", f"{RELEASE}-gateway").doc
    assert (
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == f"{RELEASE}-gateway"
    )


def test_dev_dependencies_exist_before_the_migration_hooks(default_release: Release) -> None:
    def weight(m: Any) -> int:
        return int(m.annotations.get("helm.sh/hook-weight", "0"))

    hooks = [m for m in default_release.manifests if m.hook and "pre-install" in m.hook]
    migrations = [m for m in hooks if m.name.endswith("-migrate")]
    assert len(migrations) == len(GRPC_SERVICES)
    needed = [
        default_release.get("StatefulSet", f"{RELEASE}-postgresql"),
        default_release.get("Service", f"{RELEASE}-postgresql"),
        default_release.get("Secret", f"{RELEASE}-postgresql"),
        default_release.get("Job", f"{RELEASE}-postgresql-bootstrap"),
        *(default_release.get("Secret", f"{RELEASE}-{name}-database") for name in GRPC_SERVICES),
    ]
    for m in needed:
        assert m.hook and "pre-install" in m.hook, m.name
        assert all(weight(m) < weight(job) for job in migrations), m.name
    # Every service's URL points at the in-chart instance and its own database.
    import base64

    for name in GRPC_SERVICES:
        secret = default_release.get("Secret", f"{RELEASE}-{name}-database")
        url = base64.b64decode(secret.doc["data"]["url"]).decode()
        assert url.startswith("postgresql+asyncpg://omni:")
        assert url.endswith(f"@{RELEASE}-postgresql:5432/{name}")
    bootstrap = default_release.get("Job", f"{RELEASE}-postgresql-bootstrap").doc
    script = bootstrap["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for name in GRPC_SERVICES:
        assert f" {name} " in f" {script} "


# --- The tests bite: a damaged release is caught -----------------------------------------------


def _damaged(release: Release, service: str, damage: Any) -> Release:
    broken = copy.deepcopy(release)
    for m in broken.manifests:
        if m.kind == "Deployment" and m.name == f"{RELEASE}-{service}":
            damage(m.doc["spec"]["template"]["spec"])
    return broken


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_a_service_without_a_probe_is_caught(default_release: Release, probe: str) -> None:
    broken = _damaged(default_release, "cart", lambda pod: pod["containers"][0].pop(probe))
    assert any(f"no {probe}" in p for p in all_problems(broken, open_to_anyone={"gateway"}))


@pytest.mark.parametrize("field", ["allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"])
def test_a_service_without_its_security_context_is_caught(default_release: Release, field: str) -> None:
    broken = _damaged(
        default_release, "inventory", lambda pod: pod["containers"][0]["securityContext"].pop(field)
    )
    assert any("inventory" in p and "securityContext" in p for p in inv.security_problems(broken))
    broken = _damaged(default_release, "inventory", lambda pod: pod.pop("securityContext"))
    assert any("inventory" in p and "non-root" in p for p in inv.security_problems(broken))


def test_a_service_without_its_network_policy_is_caught(default_release: Release) -> None:
    broken = copy.deepcopy(default_release)
    broken.manifests = [
        m for m in broken.manifests if not (m.kind == "NetworkPolicy" and m.name == f"{RELEASE}-messaging")
    ]
    problems = all_problems(broken, open_to_anyone={"gateway"})
    assert any("messaging: no NetworkPolicy of its own" in p for p in problems)
    assert any("messaging cannot reach preferences" in p for p in problems)


def test_an_extra_allowed_caller_is_caught() -> None:
    """cart calling preferences is not in the architecture: the chart's policy would admit it."""
    release = render(overrides={"services": {"cart": {"calls": ["identity", "inventory", "preferences"]}}})
    problems = all_problems(release, open_to_anyone={"gateway"})
    assert "cart can reach preferences:grpc" in problems


def test_values_that_drop_the_network_policies_fail_the_invariants() -> None:
    release = render(overrides={"networkPolicy": {"enabled": False}})
    assert inv.network_problems(
        release,
        EXPECTED_CALLS,
        PROTOCOLS,
        databases=set(GRPC_SERVICES),
        nats_clients=set(GRPC_SERVICES),
        open_to_anyone={"gateway"},
    ) == ["no NetworkPolicy rendered"]


def test_values_that_drop_a_spread_or_the_autoscaler_fail_the_invariants() -> None:
    release = render(
        overrides={
            "services": {"profile": {"topologySpread": {"enabled": False}, "autoscaling": {"enabled": False}}}
        }
    )
    assert any("profile: topology spread" in p for p in inv.workload_problems(release, PROTOCOLS))
    assert any(
        "HorizontalPodAutoscaler omni-profile: missing" in p
        for p in inv.availability_problems(release, ALL_SERVICES)
    )


def test_grace_period_must_exceed_the_drain_time() -> None:
    release = render(overrides={"services": {"cart": {"shutdownGraceSeconds": 40}}})
    pod = release.get("Deployment", f"{RELEASE}-cart").doc["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 40 + 10
    broken = _damaged(release, "cart", lambda pod: pod.update(terminationGracePeriodSeconds=40))
    assert any("terminationGracePeriodSeconds 40" in p for p in inv.workload_problems(broken, PROTOCOLS))


# --- A seventh service is a values block ------------------------------------------------------------


def test_a_seventh_service_is_only_a_values_block() -> None:
    release = render(overrides={"services": {"loyalty": {"calls": ["identity", "profile"]}}})
    protocols = {**PROTOCOLS, "loyalty": "grpc"}
    calls = {**EXPECTED_CALLS, "loyalty": {"identity", "profile"}}
    problems = [
        *inv.workload_problems(release, protocols),
        *inv.service_problems(release, protocols),
        *inv.availability_problems(release, protocols),
        *inv.security_problems(release),
        *inv.migration_problems(release, [*GRPC_SERVICES, "loyalty"], ["gateway"]),
        *inv.helm_test_problems(release, protocols),
        *inv.network_problems(
            release,
            calls,
            protocols,
            databases={*GRPC_SERVICES, "loyalty"},
            nats_clients={*GRPC_SERVICES, "loyalty"},
            open_to_anyone={"gateway"},
        ),
    ]
    assert not problems, "\n".join(problems)
    readiness = inv._container(release, "loyalty")["readinessProbe"]  # type: ignore[index]
    assert readiness["grpc"]["service"] == "omni.loyalty.v1.LoyaltyService"


def test_a_disabled_service_renders_nothing() -> None:
    release = render(overrides={"services": {"messaging": {"enabled": False}}})
    assert not [m for m in release.manifests if f"{RELEASE}-messaging" in m.name]
    env = env_of(inv._container(release, "gateway") or {})
    assert "OMNI_MESSAGING_TARGET" in env  # the gateway still names it; it is simply not running


def test_profile_is_told_which_peers_the_release_runs(default_release: Release) -> None:
    """OMNI_PROFILE_PEERS (callsEnv) lists the enabled services among profile's calls: an erasure
    waits for the receipts of exactly those, the view and the export ask exactly those."""
    env = env_of(inv._container(default_release, "profile") or {})
    assert env["OMNI_PROFILE_PEERS"] == "identity,cart,inventory,preferences,messaging"
    release = render(overrides={"services": {"messaging": {"enabled": False}}})
    env = env_of(inv._container(release, "profile") or {})
    assert env["OMNI_PROFILE_PEERS"] == "identity,cart,inventory,preferences"
    assert "OMNI_PROFILE_PEERS" not in env_of(inv._container(default_release, "cart") or {})


def test_provider_credentials_come_from_secrets_and_egress_is_opened_only_on_request() -> None:
    """Messaging's providers: credentials as secretKeyRef env and mounted Secret files, never in
    values; egress to the outside world only through the block's own `egressTo`."""
    internet = Pod("internet", ip="203.0.113.7")
    closed = render()
    closed_policies = [m.doc for m in closed.of_kind("NetworkPolicy")]
    assert not allowed(closed_policies, pods_of(closed)[f"{RELEASE}-messaging"], internet, 443)
    release = render(
        overrides={
            "services": {
                "messaging": {
                    "secretEnv": {
                        "OMNI_MESSAGING_TWILIO_AUTH_TOKEN": {
                            "secretName": "omni-messaging",
                            "key": "twilio-token",
                        }
                    },
                    "secretFiles": [{"secretName": "omni-messaging-fcm", "mountPath": "/var/run/omni/fcm"}],
                    "networkPolicy": {
                        "egressTo": [
                            {
                                "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
                                "ports": [{"port": 443, "protocol": "TCP"}],
                            }
                        ]
                    },
                }
            }
        }
    )
    container = inv._container(release, "messaging") or {}
    env = env_of(container)
    assert env["OMNI_MESSAGING_TWILIO_AUTH_TOKEN"] == {
        "secretKeyRef": {"name": "omni-messaging", "key": "twilio-token"}
    }
    assert {"name": "secret-file-0", "mountPath": "/var/run/omni/fcm", "readOnly": True} in container[
        "volumeMounts"
    ]
    policies = [m.doc for m in release.of_kind("NetworkPolicy")]
    pods = pods_of(release)
    assert allowed(policies, pods[f"{RELEASE}-messaging"], internet, 443)
    assert not allowed(policies, pods[f"{RELEASE}-messaging"], Pod("elsewhere", ip="198.51.100.9"), 443)
    assert not allowed(policies, pods[f"{RELEASE}-cart"], internet, 443)
    migration = release.get("Job", f"{RELEASE}-messaging-migrate")
    job_env = env_of(migration.doc["spec"]["template"]["spec"]["containers"][0])
    assert "OMNI_MESSAGING_TWILIO_AUTH_TOKEN" not in job_env  # a migration needs no credentials
