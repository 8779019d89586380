"""Service clients for Omni's own services, created from a file at start-up.

``OMNI_IDENTITY_BOOTSTRAP_CLIENTS_FILE`` names a JSON list of
``{"client_id": "omni-cart", "secret": "...", "roles": ["service"], "display_name": "..."}``
(in Kubernetes a Secret; locally written by ``make run``). Each start makes the table agree
with the file: missing clients are created, a changed secret, role list or display name is
updated; clients created through the API are never touched. This is how the other services
get credentials for IssueServiceToken without anyone calling CreateServiceClient first, and
how the very first administrator-capable principal can exist (a client with roles ["admin"]).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from omni.identity.v1 import resources_pb2
from omni_runtime import names
from omni_runtime.config import ConfigError
from omni_runtime.db.engine import Database
from services.identity import store
from services.identity.passwords import Passwords

log = logging.getLogger("omni.identity.bootstrap")

# Roles a bootstrap client may carry (store associates need a store; customers are people).
BOOTSTRAP_ROLES = frozenset({"service", "admin", "agent", "marketer"})


def read_clients(path: Path) -> list[dict[str, Any]]:
    """Parse and validate the file; ConfigError names the first problem."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read bootstrap clients from {path}: {exc}") from None
    return read_clients_data(entries, str(path))


def read_clients_data(entries: object, source: str = "bootstrap clients") -> list[dict[str, Any]]:
    """Validate parsed entries (see the module docstring for their shape)."""
    if not isinstance(entries, list):
        raise ConfigError(f"{source} must hold a JSON list of clients")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object")
        client_id = entry.get("client_id")
        secret = entry.get("secret")
        roles = entry.get("roles", ["service"])
        if not isinstance(client_id, str) or not names.matches(
            "serviceClients/{c}", f"serviceClients/{client_id}"
        ):
            raise ConfigError(f"{where}.client_id must be a resource id (letters, digits, '-', '.', '_')")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{where}.secret must be a string of at least 16 characters")
        if not isinstance(roles, list) or not roles or not set(roles) <= BOOTSTRAP_ROLES:
            raise ConfigError(f"{where}.roles must be a non-empty subset of {sorted(BOOTSTRAP_ROLES)}")
        out.append(
            {
                "client_id": client_id,
                "secret": secret,
                "roles": sorted(set(roles)),
                "display_name": str(entry.get("display_name") or client_id)[:200],
            }
        )
    return out


async def sync_clients(db: Database, passwords: Passwords, clients: list[dict[str, Any]]) -> int:
    """Create or update each client; returns how many rows changed. Idempotent."""
    changed = 0
    for client in clients:
        async with db.transaction() as session:
            row = (
                await session.execute(
                    select(store.service_clients).where(store.service_clients.c.id == client["client_id"])
                )
            ).first()
        same_secret = row is not None and await passwords.verify(row.secret_hash, client["secret"])
        secret_hash = None if same_secret else await passwords.hash(client["secret"])
        async with db.transaction() as session:
            if row is None:
                assert secret_hash is not None
                result = await session.execute(
                    insert(store.service_clients)
                    .values(
                        id=client["client_id"],
                        display_name=client["display_name"],
                        state=resources_pb2.ServiceClient.STATE_ACTIVE,
                        roles=client["roles"],
                        secret_hash=secret_hash,
                        bootstrap=True,
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                )
                changed += result.rowcount or 0  # type: ignore[attr-defined]
                continue
            values: dict[str, Any] = {}
            if secret_hash is not None:
                values.update(
                    secret_hash=secret_hash, secret_create_time=func.now(), previous_secret_hash=None
                )
            if list(row.roles) != client["roles"]:
                values["roles"] = client["roles"]
            if row.display_name != client["display_name"]:
                values["display_name"] = client["display_name"]
            if values:
                await session.execute(
                    update(store.service_clients)
                    .where(store.service_clients.c.id == row.id)
                    .values(
                        **values,
                        bootstrap=True,
                        update_time=func.now(),
                        version=store.service_clients.c.version + 1,
                    )
                )
                changed += 1
    if changed:
        log.info("bootstrap service clients: %d created or updated", changed)
    return changed


async def sync_file(db: Database, passwords: Passwords, path: Path) -> int:
    return await sync_clients(db, passwords, await asyncio.to_thread(read_clients, path))
