"""What every rendered Omni release must satisfy, as functions that list the violations.

The tests assert that the lists are empty for each value set, and (test_chart.py) that they are
not empty once a rendered release is damaged: a service without probes, without its
NetworkPolicy or without its securityContext is caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .helpers import (
    NAMESPACE,
    RELEASE,
    Manifest,
    Pod,
    Release,
    allowed,
    component,
    env_of,
    pods_of,
)


def _container(release: Release, service: str) -> dict[str, Any] | None:
    dep = release.find("Deployment", f"{RELEASE}-{service}")
    if dep is None:
        return None
    for c in dep.doc["spec"]["template"]["spec"]["containers"]:
        if c["name"] == service:
            return c
    return None


def _quantity_set(value: Any) -> bool:
    return value is not None and str(value) not in {"", "0"}


def workload_problems(release: Release, services: Mapping[str, str]) -> list[str]:
    """Deployment of each service: probes, resources, ports, env, drain time, spread, identity.

    ``services`` maps each expected service name to its protocol (grpc or http).
    """
    problems: list[str] = []
    for name, protocol in services.items():
        where = f"Deployment {RELEASE}-{name}"
        dep = release.find("Deployment", f"{RELEASE}-{name}")
        if dep is None:
            problems.append(f"{where}: missing")
            continue
        pod = dep.doc["spec"]["template"]["spec"]
        c = _container(release, name)
        if c is None:
            problems.append(f"{where}: no container named {name}")
            continue
        if c.get("args") != ["serve", name]:
            problems.append(f"{where}: args {c.get('args')} instead of ['serve', '{name}']")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        api = ("grpc", 50051) if protocol == "grpc" else ("http", 8080)
        if ports.get(api[0]) != api[1] or ports.get("metrics") != 9464:
            problems.append(f"{where}: ports {ports}, want {api[0]}={api[1]} and metrics=9464")
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(probe_name)
            if not probe:
                problems.append(f"{where}: no {probe_name}")
                continue
            if protocol == "grpc":
                if (probe.get("grpc") or {}).get("port") != 50051:
                    problems.append(f"{where}: {probe_name} is not a native gRPC probe on 50051")
            elif (probe.get("httpGet") or {}).get("port") not in {"http", 8080}:
                problems.append(f"{where}: {probe_name} is not an HTTP probe on the http port")
        for probe_name in ("startupProbe", "livenessProbe"):
            service = ((c.get(probe_name) or {}).get("grpc") or {}).get("service")
            if protocol == "grpc" and service != "liveness":
                # Overall health follows PostgreSQL and NATS: probing it restarts pods on an outage.
                problems.append(
                    f"{where}: {probe_name} must probe the 'liveness' health name, not {service!r}"
                )
        readiness = c.get("readinessProbe") or {}
        if protocol == "grpc" and not str((readiness.get("grpc") or {}).get("service", "")).startswith(
            f"omni.{name}."
        ):
            problems.append(f"{where}: readiness does not ask for the omni.{name}.* health name")
        if protocol == "http" and (readiness.get("httpGet") or {}).get("path") != "/readyz":
            problems.append(f"{where}: readiness is not GET /readyz")
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if not (
            _quantity_set(requests.get("cpu"))
            and _quantity_set(requests.get("memory"))
            and _quantity_set(limits.get("memory"))
        ):
            problems.append(f"{where}: resources need cpu and memory requests and a memory limit")
        env = env_of(c)
        try:
            grace = float(env.get("OMNI_SHUTDOWN_GRACE_SECONDS", "inf"))
        except (TypeError, ValueError):
            grace = float("inf")
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= grace + pre_stop:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {tgps} must exceed the preStop delay {pre_stop}"
                f" + OMNI_SHUTDOWN_GRACE_SECONDS {env.get('OMNI_SHUTDOWN_GRACE_SECONDS')}"
            )
        wanted_env = {"OMNI_METRICS_PORT": "9464", "OTEL_SERVICE_NAME": f"omni-{name}"}
        wanted_env["OMNI_GRPC_PORT" if protocol == "grpc" else "OMNI_HTTP_PORT"] = str(api[1])
        for key, value in wanted_env.items():
            if env.get(key) != value:
                problems.append(f"{where}: env {key}={env.get(key)!r}, want {value!r}")
        for key in ("OMNI_LOG_LEVEL", "OMNI_VERSION", "OTEL_RESOURCE_ATTRIBUTES"):
            if key not in env:
                problems.append(f"{where}: env {key} missing")
        for key, value in env.items():
            if isinstance(value, str) and re.search(r"://[^/@\s]+:[^/@\s]+@", value):
                problems.append(f"{where}: env {key} carries credentials in plain text")
        spread = {t.get("topologyKey") for t in pod.get("topologySpreadConstraints") or []}
        if not {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= spread:
            problems.append(f"{where}: topology spread across nodes and zones missing ({sorted(spread)})")
        if pod.get("serviceAccountName") != f"{RELEASE}-{name}":
            problems.append(f"{where}: serviceAccountName {pod.get('serviceAccountName')}")
        sa = release.find("ServiceAccount", f"{RELEASE}-{name}")
        if sa is None or sa.doc.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {RELEASE}-{name}: missing or automounts its token")
    return problems


def service_problems(release: Release, services: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    for name, protocol in services.items():
        where = f"Service {RELEASE}-{name}"
        svc = release.find("Service", f"{RELEASE}-{name}")
        if svc is None:
            problems.append(f"{where}: missing")
            continue
        ports = {p["name"]: p for p in svc.doc["spec"]["ports"]}
        api = "grpc" if protocol == "grpc" else "http"
        port = ports.get(api)
        if not port or port.get("appProtocol") != api:
            problems.append(f"{where}: needs a port named {api} with appProtocol: {api}")
        if "metrics" not in ports or ports["metrics"]["port"] != 9464:
            problems.append(f"{where}: needs the metrics port 9464")
        dep = release.find("Deployment", f"{RELEASE}-{name}")
        if dep is not None:
            labels = dep.doc["spec"]["template"]["metadata"]["labels"]
            if not all(labels.get(k) == v for k, v in svc.doc["spec"]["selector"].items()):
                problems.append(f"{where}: selector does not select the Deployment's pods")
    return problems


def availability_problems(release: Release, services: Iterable[str]) -> list[str]:
    """PodDisruptionBudget and HorizontalPodAutoscaler of every service."""
    problems: list[str] = []
    for name in services:
        dep = release.find("Deployment", f"{RELEASE}-{name}")
        labels = dep.doc["spec"]["template"]["metadata"]["labels"] if dep else {}
        pdb = release.find("PodDisruptionBudget", f"{RELEASE}-{name}")
        if pdb is None:
            problems.append(f"PodDisruptionBudget {RELEASE}-{name}: missing")
        elif not all(labels.get(k) == v for k, v in pdb.doc["spec"]["selector"]["matchLabels"].items()):
            problems.append(f"PodDisruptionBudget {RELEASE}-{name}: does not select the service's pods")
        hpa = release.find("HorizontalPodAutoscaler", f"{RELEASE}-{name}")
        if hpa is None:
            problems.append(f"HorizontalPodAutoscaler {RELEASE}-{name}: missing")
            continue
        spec = hpa.doc["spec"]
        if spec["scaleTargetRef"] != {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{RELEASE}-{name}",
        }:
            problems.append(f"HorizontalPodAutoscaler {RELEASE}-{name}: targets {spec['scaleTargetRef']}")
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append(f"HorizontalPodAutoscaler {RELEASE}-{name}: minReplicas > maxReplicas")
        if dep is not None and "replicas" in dep.doc["spec"]:
            problems.append(f"Deployment {RELEASE}-{name}: sets replicas although an HPA owns the count")
    return problems


def _is_hardened_container(c: Mapping[str, Any]) -> list[str]:
    sc = c.get("securityContext") or {}
    missing = []
    if sc.get("allowPrivilegeEscalation") is not False:
        missing.append("allowPrivilegeEscalation: false")
    if sc.get("readOnlyRootFilesystem") is not True:
        missing.append("readOnlyRootFilesystem: true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        missing.append("capabilities.drop: [ALL]")
    if (sc.get("capabilities") or {}).get("add"):
        missing.append("no added capabilities")
    if sc.get("privileged"):
        missing.append("privileged: false")
    return missing


def security_problems(release: Release) -> list[str]:
    """Every pod of the release: non-root, seccomp RuntimeDefault, no token, hardened containers."""
    problems: list[str] = []
    for m, template in release.pod_templates():
        where = f"{m.kind} {m.name}"
        spec = template["spec"]
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            problems.append(f"{where}: pod must run as a fixed non-root user (runAsNonRoot, runAsUser)")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{where}: uses the host's namespaces")
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            missing = _is_hardened_container(c)
            if missing:
                problems.append(f"{where} container {c['name']}: securityContext needs {', '.join(missing)}")
    return problems


def migration_problems(release: Release, with_database: Iterable[str], without: Iterable[str]) -> list[str]:
    problems: list[str] = []
    for name in with_database:
        job = release.find("Job", f"{RELEASE}-{name}-migrate")
        if job is None:
            problems.append(f"Job {RELEASE}-{name}-migrate: missing")
            continue
        hooks = set((job.hook or "").split(","))
        if hooks != {"pre-install", "pre-upgrade"}:
            problems.append(f"Job {job.name}: helm.sh/hook is {job.hook!r}, want pre-install,pre-upgrade")
        c = job.doc["spec"]["template"]["spec"]["containers"][0]
        if c.get("args") != ["migrate", name]:
            problems.append(f"Job {job.name}: args {c.get('args')}, want ['migrate', '{name}']")
        url = env_of(c).get("OMNI_DATABASE_URL")
        if not isinstance(url, dict) or "secretKeyRef" not in url:
            problems.append(f"Job {job.name}: OMNI_DATABASE_URL must come from a Secret")
        if job.doc["spec"]["template"]["spec"].get("serviceAccountName"):
            problems.append(f"Job {job.name}: a hook cannot use the release's ServiceAccount (created later)")
    for name in without:
        if release.find("Job", f"{RELEASE}-{name}-migrate") is not None:
            problems.append(f"Job {RELEASE}-{name}-migrate: {name} has no database")
    return problems


def helm_test_problems(release: Release, services: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    tests = [m for m in release.of_kind("Pod") if m.hook == "test"]
    for name, protocol in services.items():
        mine = [
            m
            for m in tests
            if any(f"{RELEASE}-{name}:" in a or f"{RELEASE}-{name}:8080" in a for a in _command(m))
        ]
        if not mine:
            problems.append(f"helm test: no pod checks {name}")
            continue
        command = _command(mine[0])
        if protocol == "grpc" and not any(a.startswith(f"omni.{name}.") for a in command):
            problems.append(f"helm test {mine[0].name}: does not ask for {name}'s gRPC health name")
        if protocol == "grpc" and "SERVING" not in " ".join(command):
            problems.append(f"helm test {mine[0].name}: does not require SERVING")
        if protocol == "http" and not any(a.endswith("/readyz") for a in command):
            problems.append(f"helm test {mine[0].name}: does not GET /readyz")
    return problems


def _command(m: Manifest) -> list[str]:
    c = m.doc["spec"]["containers"][0]
    return [str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]


# --- NetworkPolicy ------------------------------------------------------------------------------


def network_problems(
    release: Release,
    calls: Mapping[str, set[str]],
    protocols: Mapping[str, str],
    *,
    databases: set[str],
    nats_clients: set[str],
    open_to_anyone: set[str],
) -> list[str]:
    """Evaluate the rendered NetworkPolicies on the release's own pods.

    Exactly the declared calls may reach a service's API port (plus `helm test` pods); its
    metrics port is open to Prometheus only; it may reach only what it calls, its database and
    NATS; nothing else in or out.
    """
    problems: list[str] = []
    policies = [m.doc for m in release.of_kind("NetworkPolicy")]
    if not policies:
        return ["no NetworkPolicy rendered"]
    pods = pods_of(release)
    service_pods = {name: pods.get(f"{RELEASE}-{name}") for name in protocols}
    for name, pod in service_pods.items():
        if pod is None:
            problems.append(f"{name}: no Deployment to evaluate")
            continue
        selecting = [
            p
            for p in policies
            if all(pod.labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
        ]
        if not any(component(_as_manifest(p)) == name for p in selecting):
            problems.append(f"{name}: no NetworkPolicy of its own")
        for direction in ("Ingress", "Egress"):
            if not any(direction in p["spec"].get("policyTypes", []) for p in selecting):
                problems.append(f"{name}: no {direction} policy: traffic is not default-deny")
    stranger = Pod("stranger", {"app": "somebody-else"})
    other_ns = Pod("elsewhere", {"app": "somebody-else"}, namespace="other")
    prometheus = Pod(
        "prometheus",
        {"app.kubernetes.io/name": "prometheus"},
        namespace="monitoring",
        ports={"web": 9090},
    )
    test_pods = [p for p in pods.values() if p.labels.get("omni.dev/role") == "test"]
    migration_pods = [p for p in pods.values() if p.labels.get("omni.dev/role") == "migration"]
    for dst_name, dst in service_pods.items():
        if dst is None:
            continue
        api = "grpc" if protocols[dst_name] == "grpc" else "http"
        for src_name, src in service_pods.items():
            if src is None or src_name == dst_name:
                continue
            # Services' egress is default-deny too: even a gateway open to the world is reached
            # only by what calls it.
            want = dst_name in calls.get(src_name, set())
            got = allowed(policies, src, dst, api)
            if got != want:
                verb = "can" if got else "cannot"
                problems.append(f"{src_name} {verb} reach {dst_name}:{api}")
            if allowed(policies, src, dst, "metrics"):
                problems.append(f"{src_name} can reach {dst_name}'s metrics port")
        for tester in test_pods:
            if not allowed(policies, tester, dst, api):
                problems.append(f"helm test pod {tester.name} cannot reach {dst_name}:{api}")
        for migration in migration_pods:
            if allowed(policies, migration, dst, api):
                problems.append(f"migration pod {migration.name} can reach {dst_name}:{api}")
        if not allowed(policies, prometheus, dst, "metrics"):
            problems.append(f"Prometheus cannot scrape {dst_name}'s metrics port")
        for outsider in (stranger, other_ns):
            if allowed(policies, outsider, dst, api) != (dst_name in open_to_anyone):
                problems.append(f"a pod outside Omni ({outsider.namespace}) vs {dst_name}:{api} is wrong")
        if allowed(policies, dst, stranger, 8443) or allowed(
            policies, dst, Pod("internet", ip="203.0.113.7"), 443
        ):
            problems.append(f"{dst_name} may open connections to arbitrary destinations")
        dns = Pod(
            "coredns",
            {"k8s-app": "kube-dns"},
            namespace="kube-system",
            ports={"dns": 53},
        )
        if not allowed(policies, dst, dns, 53, "UDP"):
            problems.append(f"{dst_name} cannot resolve names (DNS egress)")
    # The in-chart PostgreSQL and NATS, when the release runs them.
    pg = pods.get(f"{RELEASE}-postgresql")
    nats = pods.get(f"{RELEASE}-nats")
    for name, pod in service_pods.items():
        if pod is None:
            continue
        if pg is not None and allowed(policies, pod, pg, 5432) != (name in databases):
            problems.append(f"{name} vs the in-chart PostgreSQL is wrong (database: {name in databases})")
        if nats is not None and allowed(policies, pod, nats, 4222) != (name in nats_clients):
            problems.append(f"{name} vs the in-chart NATS is wrong (NATS client: {name in nats_clients})")
    if pg is not None:
        for migration in migration_pods:
            if not allowed(policies, migration, pg, 5432):
                problems.append(f"migration pod {migration.name} cannot reach PostgreSQL")
        if allowed(policies, stranger, pg, 5432):
            problems.append("a pod outside Omni can reach the in-chart PostgreSQL")
    if nats is not None and allowed(policies, stranger, nats, 4222):
        problems.append("a pod outside Omni can reach the in-chart NATS")
    return problems


def _as_manifest(doc: Mapping[str, Any]) -> Manifest:
    return Manifest("", dict(doc))


def default_deny_problems(release: Release) -> list[str]:
    """Every pod the release starts is selected by an Ingress+Egress policy."""
    policies = [m.doc for m in release.of_kind("NetworkPolicy")]
    problems = []
    for name, pod in pods_of(release).items():
        types = {
            t
            for p in policies
            if all(pod.labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
            for t in p["spec"].get("policyTypes", [])
        }
        if types != {"Ingress", "Egress"}:
            problems.append(f"pod of {name} is not covered by default-deny ({sorted(types)})")
    return problems


def namespace_of(m: Manifest) -> str:
    return str(m.doc["metadata"].get("namespace", NAMESPACE))
