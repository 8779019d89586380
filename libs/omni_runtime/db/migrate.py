"""Alembic migrations per service, plus the runtime's own tables (outbox, inbox, idempotency).

One Alembic environment (``omni_runtime/migrations``) serves every service: its version
locations are the runtime's branch and the service's ``migrations/`` folder, each a branch of
its own, and ``upgrade heads`` applies both. A PostgreSQL advisory lock serialises replicas
that start together.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config

RUNTIME_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def service_versions_dir(service: str) -> Path | None:
    spec = importlib.util.find_spec(f"services.{service}")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "migrations"
    return folder if folder.is_dir() else None


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(RUNTIME_MIGRATIONS))
    locations = [str(RUNTIME_MIGRATIONS / "versions")]
    own = service_versions_dir(service)
    if own is not None:
        locations.append(str(own))
    cfg.set_main_option("version_locations", " ".join(locations))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["database_url"] = url
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, url: str, revision: str = "heads") -> None:
    """Apply every pending migration of ``service`` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(service, url), revision)


async def upgrade_async(service: str, url: str) -> None:
    """``upgrade`` from inside a running event loop (Alembic's env runs a loop of its own)."""
    await asyncio.to_thread(upgrade, service, url)
