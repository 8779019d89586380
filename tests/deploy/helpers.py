"""Rendering the chart with Helm's own engine, and reading what it renders.

The chart is rendered by helm-python-sdk (Helm v4's Go SDK behind a C ABI, no helm binary and
no cluster): ``Chart.render`` performs what ``helm install --dry-run`` / ``helm template`` do,
including values.schema.json validation, and ``lint`` is ``helm lint``. ``lookup`` returns
nothing offline, so the chart's generated development credentials are fresh on every render.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "omni"
DASHBOARDS = REPO / "deploy" / "dashboards"
RELEASE = "omni"
NAMESPACE = "omni"
# Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
KUBE_VERSION = "1.34"

VALUE_SETS = {
    "default": [],
    "production": [CHART / "values-production.yaml"],
    "dev": [CHART / "values-dev.yaml"],
}

# Who calls whom (ARCHITECTURE, issue 7): the gateway calls all six services, every service
# calls identity for its JWKS, cart calls inventory, messaging calls preferences and profile,
# profile calls every service that holds customer data (views, exports, erasure receipts).
EXPECTED_CALLS: dict[str, set[str]] = {
    "identity": set(),
    "profile": {"identity", "cart", "inventory", "preferences", "messaging"},
    "cart": {"identity", "inventory"},
    "inventory": {"identity"},
    "messaging": {"identity", "preferences", "profile"},
    "preferences": {"identity"},
    "gateway": {"identity", "profile", "cart", "inventory", "messaging", "preferences"},
}
GRPC_SERVICES = ("identity", "profile", "cart", "inventory", "messaging", "preferences")
HTTP_SERVICES = ("gateway",)
ALL_SERVICES = (*GRPC_SERVICES, *HTTP_SERVICES)


def merge_values(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Layer values files the way repeated ``helm -f`` does: maps merge, the rest replaces."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge_values(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def load_values(files: Iterable[Path], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    layers = [yaml.safe_load(Path(f).read_text()) or {} for f in files]
    return merge_values(*layers, overrides or {})


@dataclass
class Manifest:
    template: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def annotations(self) -> dict[str, str]:
        return self.doc["metadata"].get("annotations") or {}

    @property
    def hook(self) -> str | None:
        return self.annotations.get("helm.sh/hook")


@dataclass
class Release:
    """The documents one render produced, plus NOTES.txt."""

    manifests: list[Manifest]
    notes: str
    values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [m for m in self.manifests if m.kind == kind and m.name == name]
        if len(found) != 1:
            raise KeyError(f"{kind}/{name}: found {len(found)}")
        return found[0]

    def find(self, kind: str, name: str) -> Manifest | None:
        found = [m for m in self.manifests if m.kind == kind and m.name == name]
        return found[0] if found else None

    def pod_templates(self) -> Iterator[tuple[Manifest, dict[str, Any]]]:
        """Every pod the release can start: (object, pod template with metadata and spec)."""
        for m in self.manifests:
            if m.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
                yield m, m.doc["spec"]["template"]
            elif m.kind == "CronJob":
                yield m, m.doc["spec"]["jobTemplate"]["spec"]["template"]
            elif m.kind == "Pod":
                yield m, {"metadata": m.doc["metadata"], "spec": m.doc["spec"]}


def render(
    value_files: Iterable[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
) -> Release:
    """Render the chart as `helm install omni deploy/helm/omni -n omni -f …` would."""
    values = load_values(value_files, overrides)
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or None, name=RELEASE, namespace=namespace, is_install=True)
    manifests: list[Manifest] = []
    notes = ""
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(Manifest(template, doc))
    return Release(manifests, notes, values)


def component(m: Manifest) -> str | None:
    return (m.doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def deployment_of(release: Release, service: str) -> Manifest:
    return release.get("Deployment", f"{RELEASE}-{service}")


def container_of(release: Release, service: str) -> dict[str, Any]:
    pod = deployment_of(release, service).doc["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == service)


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """name -> literal value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- NetworkPolicy evaluation -----------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """A pod (or an address outside the cluster) as NetworkPolicies see it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: str = NAMESPACE
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    ip: str | None = None  # set for destinations outside the cluster

    @property
    def in_cluster(self) -> bool:
        return self.ip is None


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], other: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.in_cluster:
            return False
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        address = ipaddress.ip_address(other.ip or "")
        excluded = any(address in ipaddress.ip_network(c) for c in peer["ipBlock"].get("except") or [])
        return address in net and not excluded
    if not other.in_cluster:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": other.namespace, **other.namespace_labels}
        if not _selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selector_matches(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list[Mapping[str, Any]] | None, dest: Pod, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        wanted = p["port"]
        number = dest.ports.get(wanted) if isinstance(wanted, str) else wanted
        if number is None:
            continue
        end = p.get("endPort", number)
        if number <= port <= end:
            return True
    return False


def _policies_for(policies: list[Mapping[str, Any]], pod: Pod, direction: str) -> list[Mapping[str, Any]]:
    if not pod.in_cluster:
        return []
    return [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _selector_matches(p["spec"]["podSelector"], pod.labels)
    ]


def allowed(
    policies: list[Mapping[str, Any]], src: Pod, dst: Pod, port: int | str, protocol: str = "TCP"
) -> bool:
    """Whether src may open a connection to dst's port under these NetworkPolicies."""
    number = dst.ports[port] if isinstance(port, str) else port
    egress = _policies_for(policies, src, "Egress")
    if egress and not any(
        _port_matches(rule.get("ports"), dst, number, protocol)
        and (not rule.get("to") or any(_peer_matches(peer, dst, src.namespace) for peer in rule["to"]))
        for p in egress
        for rule in p["spec"].get("egress") or []
    ):
        return False
    ingress = _policies_for(policies, dst, "Ingress")
    return not ingress or any(
        _port_matches(rule.get("ports"), dst, number, protocol)
        and (not rule.get("from") or any(_peer_matches(peer, src, dst.namespace) for peer in rule["from"]))
        for p in ingress
        for rule in p["spec"].get("ingress") or []
    )


def pods_of(release: Release) -> dict[str, Pod]:
    """Every pod template of the release as a Pod, keyed by the name of its object."""
    pods: dict[str, Pod] = {}
    for m, template in release.pod_templates():
        ports = {
            p["name"]: p["containerPort"]
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }
        pods[m.name] = Pod(m.name, template["metadata"].get("labels") or {}, NAMESPACE, {}, ports)
    return pods


# --- PromQL -------------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or Grafana's label_values(...)) selects.

    A small tokenizer, not a parser: strings, label matchers, ranges, grouping clauses and
    numbers are removed; identifiers left that are not followed by "(" and are not keywords
    are metric names.
    """
    text = re.sub(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,[^)]*\)", r"\1", expr)
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        word = match.group(0)
        if rest.startswith("(") or word.lower() in _PROMQL_KEYWORDS or word.startswith("$"):
            continue
        names.add(word)
    return names


def balanced(expr: str) -> bool:
    stripped = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in stripped:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack
