"""What every inventory use case shares: the database, the outbox, and the movement journal.

Transactions are ``unit.db.transaction()``; mutations run through
``omni_runtime.db.idempotency.once`` (AIP-155). Its claim of the request id makes a concurrent
duplicate wait for the first call and answer as it did, instead of racing it for the same stock
(where it could fail INSUFFICIENT_STOCK although the first call succeeded).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime.context import ChannelInfo, current_channel, current_principal
from omni_runtime.db.engine import Database
from omni_runtime.events.outbox import Outbox
from services.inventory.events import MovementJournal


@dataclass
class Unit:
    """The database and outbox of the service."""

    db: Database
    outbox: Outbox

    def journal(self, session: AsyncSession, now: datetime, request_id: str = "") -> MovementJournal:
        """A movement journal stamped with the caller (actor) and its channel."""
        return MovementJournal(
            session,
            self.outbox,
            now,
            request_id=request_id,
            actor=current_principal.get().subject,
            channel=current_channel.get(),
        )


def system_channel() -> ChannelInfo:
    """The channel of work the service does on its own (the expiry sweeper)."""
    return ChannelInfo()
