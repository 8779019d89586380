"""Erasure fan-out: every service that holds customer data follows identity's erasure the same way.

Identity's ``CustomerErasedEvent`` is the one trigger (profile's EraseCustomerData leads to it
too). A service registers its erase work with ``consume_erasures``; the runtime runs it in the
consumer's transaction and publishes the service's ``CustomerErasureProcessedEvent`` carrying an
``omni.type.v1.ErasureReceipt`` in that same transaction, so a receipt exists if and only if the
erasure was committed. The profile service collects the receipts, so an operator can prove that
an erasure reached every store of personal data.

An erasure that keeps failing is retried with the consumer's backoff; on the last delivery the
failure itself is committed as a FAILED receipt (with a short reason, never a stack trace), so a
stuck erasure is visible on the receipt instead of only in a log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2 as identity_events
from omni.type.v1 import erasure_pb2
from omni_runtime import metrics
from omni_runtime.events.consumer import Event
from omni_runtime.timestamps import to_proto, utcnow

if TYPE_CHECKING:
    from omni_runtime.server import Runtime

log = logging.getLogger("omni.erasure")

CUSTOMER_ERASED = "omni.identity.customer_erased"
CONSUMER_NAME = "customer-erasures"
MAX_DELIVER = 10

# (session, customer name "customers/{id}") → how many records of each kind were erased.
EraseWork = Callable[[AsyncSession, str], Awaitable[Mapping[str, int]]]


class ReceiptEvent(Protocol):
    """A service's ``CustomerErasureProcessedEvent`` class (one per service's events.proto)."""

    def __call__(self, *, receipt: erasure_pb2.ErasureReceipt) -> Message: ...


def receipt(
    service: str, customer: str, counts: Mapping[str, int] | None = None, *, failure: str = ""
) -> erasure_pb2.ErasureReceipt:
    """The receipt of one service for one customer: DONE with counts, or FAILED with a reason."""
    state = erasure_pb2.ErasureReceipt.STATE_FAILED if failure else erasure_pb2.ErasureReceipt.STATE_DONE
    return erasure_pb2.ErasureReceipt(
        customer=customer,
        service=service,
        state=state,
        failure_reason=failure[:200],
        erased_counts=dict(counts or {}),
        occur_time=to_proto(utcnow()),
    )


def erasure_handler(
    runtime: Runtime, erase: EraseWork, receipt_event: ReceiptEvent, *, max_deliver: int = MAX_DELIVER
) -> Callable[[AsyncSession, Event], Awaitable[None]]:
    """The consumer handler ``consume_erasures`` registers (exposed for tests and odd wiring)."""
    service = runtime.settings.service
    outbox = runtime.outbox
    if outbox is None:
        raise RuntimeError("erasure receipts need the outbox (a database and the event bus)")

    async def handle(session: AsyncSession, event: Event) -> None:
        customer = event.decode(identity_events.CustomerErasedEvent).customer
        if not customer.startswith("customers/"):
            log.error("customer_erased event %s names no customer (%r); skipped", event.id, customer)
            return
        try:
            async with session.begin_nested():
                counts = await erase(session, customer)
        except Exception as exc:
            if event.delivery < max_deliver:
                raise
            log.error(
                "erasure of %s failed on the last delivery; issuing a FAILED receipt",
                customer,
                exc_info=exc,
                extra={"event_id": event.id, "customer": customer},
            )
            issued = receipt(service, customer, failure=f"{type(exc).__name__} after {max_deliver} attempts")
        else:
            issued = receipt(service, customer, counts)
        await outbox.emit(session, receipt_event(receipt=issued))
        state = erasure_pb2.ErasureReceipt.State.Name(issued.state).removeprefix("STATE_").lower()
        metrics.ERASURES.labels(service, state).inc()

    return handle


def consume_erasures(
    runtime: Runtime, erase: EraseWork, receipt_event: ReceiptEvent, *, max_deliver: int = MAX_DELIVER
) -> None:
    """Erase this service's data for every customer identity erases, and issue the receipt.

    ``erase(session, "customers/{id}")`` deletes or pseudonymises everything the service holds
    about the customer and returns counts per kind of record; it must be idempotent (a customer
    erased twice, or data arriving after the erasure, is normal). It runs inside a savepoint of
    the consumer's transaction; the receipt is written in the same transaction.
    """
    runtime.consume(
        CONSUMER_NAME,
        [CUSTOMER_ERASED],
        erasure_handler(runtime, erase, receipt_event, max_deliver=max_deliver),
        max_deliver=max_deliver,
    )
