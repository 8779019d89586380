"""The background loop that drops unconfirmed double opt-in requests to DENIED once they expire.

Every replica runs it; batches are claimed with ``FOR UPDATE SKIP LOCKED`` (``consents.expire_due``),
so replicas share the work. A failing pass (database restarting) is logged and retried on the
next tick; it never kills the loop.
"""

from __future__ import annotations

import asyncio
import logging

from services.preferences import metrics
from services.preferences.consents import expire_due
from services.preferences.txn import Unit

log = logging.getLogger("omni.preferences.sweeper")


class ExpirySweeper:
    def __init__(self, unit: Unit, *, interval: float, batch: int = 100) -> None:
        self.unit = unit
        self.interval = interval
        self.batch = batch

    async def sweep(self) -> int:
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
                    log.info("expired %d pending consent(s) to DENIED", expired)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.SWEEPS.labels("error").inc()
                log.warning("expiry sweep failed; retrying in %.1fs: %s", self.interval, exc)
            await asyncio.sleep(self.interval)
