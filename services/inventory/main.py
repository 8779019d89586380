"""Wiring of the inventory service into the shared runtime (nothing else lives here)."""

from __future__ import annotations

import grpc

from omni.inventory.v1 import events_pb2, inventory_service_pb2_grpc
from omni_runtime.config import ConfigError
from omni_runtime.events.erasure import consume_erasures
from omni_runtime.server import Runtime, ServiceDefinition
from services.inventory.api import InventoryServicer
from services.inventory.erasure import erase_customer
from services.inventory.sweeper import ExpirySweeper
from services.inventory.txn import Unit


def _interval(runtime: Runtime) -> float:
    raw = runtime.settings.setting("SWEEP_INTERVAL_SECONDS", "5")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"OMNI_INVENTORY_SWEEP_INTERVAL_SECONDS must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError("OMNI_INVENTORY_SWEEP_INTERVAL_SECONDS must be positive")
    return value


async def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    if runtime.db is None or runtime.outbox is None:
        raise RuntimeError("the inventory service needs its database and the event bus")
    unit = Unit(runtime.db, runtime.outbox)
    inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryServicer(unit), server)
    runtime.background.append(ExpirySweeper(unit, interval=_interval(runtime)).run)
    consume_erasures(runtime, erase_customer, events_pb2.CustomerErasureProcessedEvent)


SERVICE = ServiceDefinition(
    name="inventory", grpc_services=["omni.inventory.v1.InventoryService"], register=_register
)
