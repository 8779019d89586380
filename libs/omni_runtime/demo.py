"""Demo data for the local platform: each service owns its piece, the runtime only runs them.

Only ``omni dev up`` (``make run``) and the in-process test platform call this; ``omni serve`` and
``omni migrate`` never do, and the seed modules are kept out of container images
(``.dockerignore``), so production never sees demo data or demo passwords.

Two kinds of seed, both in ``services/<name>/seed.py``:

- **principals** (identity only): ``seed_demo(db)`` writes the demo customer, staff and the web
  backend's service client straight into identity's database before the services start, because
  every other seed logs in as the demo admin.
- **data** (any other service): a module-level ``DEMO = DemoSeed(is_empty=..., load=...)``. Once
  the platform is SERVING, ``seed_platform`` runs each present service's ``DEMO`` in start order.
  ``is_empty(demo)`` says whether the service holds nothing yet: demo data goes only into an empty
  service. ``load(demo)`` creates the data through the service's own gRPC API, as the demo admin
  (``demo.channel(service)``), so every rule, event and movement applies as for real data. It must
  be idempotent (fixed resource ids, ``demo.request_id(key)`` for mutations), so a load that was
  interrupted is resumed by the next start. It returns a ``DemoResult``: printable lines and the
  facts other pieces may use (the printed examples; a demo story).

What happened is kept in a state file (``.omni/demo.json`` for ``make run``): a service marked
``loaded`` or ``skipped`` is not looked at again (no duplicates after a restart, nothing added to
a platform that already had data); one marked ``loading`` was interrupted and is loaded again.
To add a service's demo data: write its ``seed.py`` with ``DEMO``; nothing here changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

import omni_client

log = logging.getLogger("omni.demo")

# Start order of the services whose data may depend on another's (cart's promotion after items).
ORDER = ("identity", "inventory", "profile", "preferences", "messaging", "cart")
_NAMESPACE = uuid.UUID("6f6d6e69-0000-4000-8000-64656d6f0001")  # fixed: request ids are stable
ADMIN_EMAIL = "admin@omni.local"


@dataclass(frozen=True)
class DemoResult:
    lines: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoSeed:
    is_empty: Callable[[DemoContext], Awaitable[bool]]
    load: Callable[[DemoContext], Awaitable[DemoResult]]


class DemoContext:
    """What a service's ``load`` gets: channels as the demo admin, stable request ids, facts."""

    def __init__(
        self, service: str, targets: Mapping[str, str], token: str, facts: Mapping[str, Any]
    ) -> None:
        self.service = service
        self.targets = dict(targets)
        self.facts = dict(facts)  # what earlier pieces returned, by service
        self._token = omni_client.StaticToken(token)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to ``service`` carrying the admin's token and the back-office channel."""
        if service not in self._channels:
            self._channels[service] = omni_client.connect(
                self.targets[service], context=omni_client.CallContext("backoffice"), token=self._token
            )
        return self._channels[service]

    def request_id(self, key: str) -> str:
        """The same UUID for the same step on every run: a resumed load repeats nothing."""
        return str(uuid.uuid5(_NAMESPACE, f"{self.service}:{key}"))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def principals(seeded: Mapping[str, Any]) -> DemoResult:
    """Identity's ``seed_demo`` answer as the ``identity`` entry of the demo's facts."""
    staff = seeded.get("staff", {})
    return DemoResult(
        lines=list(seeded.get("lines", [])),
        facts={
            "customer": seeded["customer"]["name"],
            "email": seeded["customer"]["email"],
            "password": seeded["password"],
            "associate": next((e for e, s in staff.items() if "store_associate" in s["roles"]), ""),
            "client_id": seeded["service_client"]["client_id"],
            "client_secret": seeded["service_client"]["secret"],
        },
    )


def seed_of(service: str) -> DemoSeed | None:
    """The ``DEMO`` of ``services/<service>/seed.py``, or None when the service has no demo data."""
    if importlib.util.find_spec(f"services.{service}") is None:
        return None
    if importlib.util.find_spec(f"services.{service}.seed") is None:
        return None
    demo = getattr(importlib.import_module(f"services.{service}.seed"), "DEMO", None)
    return demo if isinstance(demo, DemoSeed) else None


async def admin_token(identity_target: str, password: str) -> str:
    """Log in as the demo admin (identity's seed created it)."""
    from omni.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

    async with omni_client.connect(identity_target, context=omni_client.CallContext("backoffice")) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        token = await stub.StaffLogin(
            identity_service_pb2.StaffLoginRequest(email=ADMIN_EMAIL, password=password)
        )
    return str(token.access_token)


class DemoState:
    """The state file: per service ``{"state": loaded|skipped|loading, "lines": [...], "facts": {...}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, service: str) -> dict[str, Any]:
        return self.entries.get(service, {})

    def set(self, service: str, **entry: Any) -> None:
        self.entries[service] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.entries, indent=2, sort_keys=True))
        partial.replace(self.path)

    def facts(self) -> dict[str, Any]:
        return {name: entry.get("facts", {}) for name, entry in self.entries.items()}


async def seed_platform(
    services: Sequence[str],
    targets: Mapping[str, str],
    state_path: Path,
    *,
    principals: DemoResult,
    admin_password: str,
) -> DemoState:
    """Load each present service's demo data into a running platform (see the module docstring).

    ``principals`` is what identity's seed answered; it is recorded as identity's entry.
    """
    state = DemoState(state_path)
    state.set("identity", state="loaded", lines=principals.lines, facts=principals.facts)
    pending = [s for s in ORDER if s in services and s != "identity" and seed_of(s) is not None]
    if not [s for s in pending if state.get(s).get("state") not in {"loaded", "skipped"}]:
        return state
    token = await admin_token(targets["identity"], admin_password)
    for service in pending:
        if state.get(service).get("state") in {"loaded", "skipped"}:
            continue
        seed = seed_of(service)
        assert seed is not None
        demo = DemoContext(service, targets, token, state.facts())
        try:
            if state.get(service).get("state") != "loading" and not await seed.is_empty(demo):
                state.set(service, state="skipped", lines=[f"{service} already had data: no demo data added"])
                continue
            state.set(service, state="loading")
            result = await seed.load(demo)
            state.set(service, state="loaded", lines=result.lines, facts=result.facts)
            log.info("demo data loaded into %s", service)
        finally:
            await demo.close()
    return state


# -- the examples make run prints (and a test runs, exactly as printed) ----------------------------


@dataclass(frozen=True)
class Example:
    title: str
    command: str


def examples(
    facts: Mapping[str, Mapping[str, Any]], *, gateway: str | None = "localhost:8080"
) -> list[Example]:
    """The first things to try, from the demo's facts; only those whose services hold demo data
    (and the HTTP one only with a ``gateway`` address)."""
    omni = ".venv/bin/omni"
    identity, inventory, cart = facts.get("identity", {}), facts.get("inventory", {}), facts.get("cart", {})
    out: list[Example] = []
    if not identity:
        return out
    login = {
        "identifier": {"kind": "IDENTIFIER_KIND_EMAIL", "value": identity["email"]},
        "password": identity["password"],
    }
    out.append(
        Example(
            "log in as the demo customer over gRPC and keep the access token",
            f"export OMNI_TOKEN=$({omni} call identity Login {_quote(login)} "
            "--channel web --field token.accessToken)",
        )
    )
    if inventory and gateway:
        query = {
            "items": [f"items/{inventory['item']}"],
            "near": {"point": inventory["point"], "radiusMeters": 20000},
            "pickupOnly": True,
        }
        out.append(
            Example(
                f"which stores near {inventory['place']} have the {inventory['item_title']} "
                "(HTTP, through the gateway)",
                f"curl -sS --fail-with-body {gateway}/v1/items:checkAvailability "
                "-H 'Content-Type: application/json' -H 'X-Omni-Channel: web' "
                f'-H "Authorization: Bearer $OMNI_TOKEN" -d {_quote(query)}',
            )
        )
    if inventory and cart:
        cart_name = f"{identity['customer']}/cart"
        add = {"name": cart_name, "line": {"item": f"items/{inventory['item']}", "quantity": 1}}
        out.append(
            Example(
                "put it in the cart from the mobile app (the web sees the same cart)",
                f"{omni} call cart AddCartLine {_quote(add)} --channel mobile_app",
            )
        )
        code = {"name": cart_name, "code": cart["code"]}
        out.append(
            Example(
                f"apply the demo promotion {cart['code']} on the web and read the totals",
                f"{omni} call cart ApplyPromotionCode {_quote(code)} --channel web --field total",
            )
        )
    if identity.get("associate"):
        staff = {"email": identity["associate"], "password": identity["password"]}
        out.append(
            Example(
                "a store associate's token (staff log-in at the till)",
                f"{omni} call identity StaffLogin {_quote(staff)} --channel store_pos --field accessToken",
            )
        )
    backend = {"clientId": identity["client_id"], "clientSecret": identity["client_secret"]}
    out.append(
        Example(
            "the web shop backend's service token (client credentials)",
            f"{omni} call identity IssueServiceToken {_quote(backend)} --field accessToken",
        )
    )
    return out


def report(state: DemoState, services: Sequence[str], *, gateway: str | None) -> str:
    """What ``make run`` prints: the demo data of the running services and the examples."""
    out = [f"[omni] demo data ({state.path}; delete .omni/ to start afresh):"]
    for name in ORDER:
        if name in services:
            out.extend(f"  {line}" for line in state.get(name).get("lines", []))
    running = {name: facts for name, facts in state.facts().items() if name in services}
    tries = examples(running, gateway=gateway)
    if tries:
        out.append("")
        out.append("[omni] try these first, from the repository root (nothing else to install):")
        for example in tries:
            out.extend((f"  # {example.title}", f"  {example.command}"))
    if gateway:
        out.extend(
            (
                "  # the whole API in a browser, with the headers and tokens explained",
                f"  http://{gateway}/docs",
            )
        )
    return "\n".join(out)


def _quote(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    assert "'" not in text, "demo JSON must not contain single quotes"
    return f"'{text}'"
