"""Background housekeeping of the cart service, safe to run on every replica at once.

- Abandonment: a non-empty cart unchanged for the abandonment period is reported once
  (CartAbandonedEvent) and marked; any later change clears the mark and starts a new period.
  Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so two replicas never report the same cart.
- Interrupted checkouts: a journal row older than any call can live belongs to an attempt whose
  process died between reserving and committing; whatever it reserved is released.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from omni.cart.v1 import events_pb2 as ev
from omni_runtime.db.engine import Database
from omni_runtime.events.outbox import Outbox
from omni_runtime.timestamps import to_proto as ts
from services.cart import store
from services.cart.checkout import Checkout
from services.cart.config import CartConfig
from services.cart.convert import cart_proto, channel_proto

log = logging.getLogger("omni.cart.sweeper")
BATCH = 200


class Sweeper:
    def __init__(
        self, db: Database, outbox: Outbox, config: CartConfig, checkout: Checkout, *, attempt_timeout: float
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.config = config
        self.checkout = checkout
        # A checkout attempt older than this cannot still be running (the longest call deadline).
        self.attempt_timeout = timedelta(seconds=attempt_timeout + 60)

    async def report_abandoned(self) -> int:
        """Emit CartAbandonedEvent for one batch of idle carts; returns how many."""
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            idle = await store.claim_idle_carts(session, now - self.config.abandon_after, BATCH)
            for cart in idle:
                await self.outbox.emit(
                    session,
                    ev.CartAbandonedEvent(
                        cart=cart.name,
                        customer=f"customers/{cart.customer}",
                        snapshot=cart_proto(cart, self.config.default_currency),
                        last_channel=channel_proto(cart.last_channel),
                        last_update_time=ts(cart.update_time),
                        occur_time=ts(now),
                    ),
                )
            if idle:
                await store.mark_abandoned(session, [c.customer for c in idle], now)
        return len(idle)

    async def release_interrupted(self) -> int:
        async with self.db.transaction() as session:
            stale = await store.stale_attempts(session, datetime.now(UTC) - self.attempt_timeout, BATCH)
        done = 0
        for order_name in stale:
            if await self.checkout.release_attempt(order_name, [], by_owner=True):
                done += 1
        return done

    async def run(self) -> None:
        while True:
            try:
                while await self.report_abandoned() == BATCH:
                    pass
                await self.release_interrupted()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cart sweep failed (retrying next round): %s", exc)
            await asyncio.sleep(self.config.sweep_interval)
