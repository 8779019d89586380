"""Wiring of the preferences service into the shared runtime (nothing else lives here)."""

from __future__ import annotations

import logging

import grpc

from omni.preferences.v1 import events_pb2 as preferences_events
from omni.preferences.v1 import preferences_service_pb2_grpc
from omni_runtime.events.erasure import consume_erasures
from omni_runtime.server import Runtime, ServiceDefinition
from services.preferences.api import PreferencesServicer
from services.preferences.config import LOCAL_PSEUDONYM_KEY, PreferencesConfig
from services.preferences.erasure import Eraser
from services.preferences.events import (
    GUEST_UPGRADED,
    IDENTIFIER_LINKED,
    IDENTIFIER_UNLINKED,
    PROFILE_UPDATED,
    PROFILES_MERGED,
    PROFILES_UNMERGED,
    Handlers,
)
from services.preferences.sweeper import ExpirySweeper
from services.preferences.txn import Unit

log = logging.getLogger("omni.preferences")


async def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    if runtime.db is None or runtime.outbox is None:
        raise RuntimeError("the preferences service needs its database and the event bus")
    unit = Unit(runtime.db, runtime.outbox, PreferencesConfig.from_settings(runtime.settings))
    if unit.config.pseudonym_key == LOCAL_PSEUDONYM_KEY.encode():
        log.warning(
            "OMNI_PREFERENCES_PSEUDONYM_KEY is not set: the ledger pseudonyms of erased customers "
            "use the local development key"
        )
    preferences_service_pb2_grpc.add_PreferencesServiceServicer_to_server(PreferencesServicer(unit), server)
    handlers = Handlers(unit)
    runtime.consume("guest-upgrades", [GUEST_UPGRADED], handlers.on_guest_upgraded)
    runtime.consume("identifiers", [IDENTIFIER_LINKED, IDENTIFIER_UNLINKED], handlers.on_identifier)
    runtime.consume("profile-updates", [PROFILE_UPDATED], handlers.on_profile_updated)
    runtime.consume("profile-merges", [PROFILES_MERGED, PROFILES_UNMERGED], handlers.on_profile_merges)
    consume_erasures(runtime, Eraser(unit), preferences_events.CustomerErasureProcessedEvent)
    runtime.background.append(ExpirySweeper(unit, interval=unit.config.sweep_interval).run)


SERVICE = ServiceDefinition(
    name="preferences", grpc_services=["omni.preferences.v1.PreferencesService"], register=_register
)
