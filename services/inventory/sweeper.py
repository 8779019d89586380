"""The background loop that expires reservations left unused past their ``expire_time``.

Every replica runs it; batches are claimed with ``FOR UPDATE SKIP LOCKED`` (see
``reservations.expire_due``), so replicas share the work instead of fighting over it. The
interval is ``OMNI_INVENTORY_SWEEP_INTERVAL_SECONDS`` (default 5): a reservation's stock comes
back at most about that long after it expired. A failing pass (database restarting) is logged
and retried on the next tick; it never kills the loop.
"""

from __future__ import annotations

import asyncio
import logging

from services.inventory import metrics
from services.inventory.reservations import expire_due
from services.inventory.txn import Unit

log = logging.getLogger("omni.inventory.sweeper")


class ExpirySweeper:
    def __init__(self, unit: Unit, *, interval: float, batch: int = 100) -> None:
        self.unit = unit
        self.interval = interval
        self.batch = batch

    async def sweep(self) -> int:
        """Expire everything due now, batch by batch; returns how many reservations expired."""
        total = 0
        while True:
            count = await expire_due(self.unit, self.batch)
            total += count
            if count < self.batch:
                return total

    async def run(self) -> None:
        while True:
            try:
                expired = await self.sweep()
                metrics.SWEEPS.labels("ok").inc()
                if expired:
                    log.info("expired %d reservation(s)", expired)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.SWEEPS.labels("error").inc()
                log.warning("expiry sweep failed; retrying in %.1fs: %s", self.interval, exc)
            await asyncio.sleep(self.interval)
