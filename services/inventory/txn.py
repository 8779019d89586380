"""Transactions of the inventory service: commit-time bookkeeping and request-id idempotency.

``Unit.idempotent`` is AIP-155 for every mutation. Before the work, it takes a transaction-
scoped advisory lock on (scope, request id): a concurrent duplicate waits for the first call to
commit and then finds its stored answer, instead of racing it for the same stock (where it
could fail INSUFFICIENT_STOCK although the first call succeeded). The lock is the first lock
a transaction takes and it takes only one, so it adds no deadlock. Should two duplicates still
collide on the idempotency key (a hash collision of the lock key cannot cause that; a
request-id reuse across replicas of different versions could), the loser answers with the
winner's stored response in a fresh transaction, as ``omni_runtime.db.idempotency`` intends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime.context import ChannelInfo, current_channel, current_principal
from omni_runtime.db.engine import Database
from omni_runtime.db.idempotency import recall, remember
from omni_runtime.events.outbox import Outbox
from services.inventory.events import MovementJournal, count_committed_movements

M = TypeVar("M", bound=Message)
_PENDING_ANSWER = "inventory_pending_answer"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Unit:
    """The database and outbox of the service, with the transaction helpers every use case needs."""

    db: Database
    outbox: Outbox

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncSession]:
        """One transaction; committed movements are counted in the metrics after the commit."""
        async with self.db.transaction() as session:
            yield session
        count_committed_movements(session.info)

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

    @staticmethod
    async def answer_early(session: AsyncSession, response: Message) -> None:
        """Store the idempotent answer now, before the rest of the work.

        For work whose answer is known before it takes its hottest row locks (a reservation
        knows its allocations before the guarded updates): the insert then happens outside the
        critical section, which shortens how long a hot stock level stays locked. The
        transaction still commits both or neither.
        """
        pending = session.info.pop(_PENDING_ANSWER, None)
        if pending is not None:
            scope, request_id, request = pending
            await remember(session, scope, request_id, request, response)

    async def idempotent(
        self,
        scope: str,
        request_id: str,
        request: Message,
        response_type: type[M],
        work: Callable[[AsyncSession], Awaitable[M]],
    ) -> tuple[M, bool]:
        """Run ``work`` once per request id; returns (response, whether it ran now)."""
        try:
            async with self.tx() as session:
                if request_id:
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"{scope}:{request_id}"},
                    )
                    previous = await recall(session, scope, request_id, request, response_type)
                    if previous is not None:
                        return previous, False
                session.info[_PENDING_ANSWER] = (scope, request_id, request)
                response = await work(session)
                if session.info.pop(_PENDING_ANSWER, None) is not None:
                    await remember(session, scope, request_id, request, response)
            return response, True
        except IntegrityError:
            if not request_id:
                raise
            async with self.tx() as session:
                previous = await recall(session, scope, request_id, request, response_type)
            if previous is None:
                raise
            return previous, False


def system_channel() -> ChannelInfo:
    """The channel of work the service does on its own (the expiry sweeper)."""
    return ChannelInfo()
