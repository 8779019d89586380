"""Request-id idempotency (AIP-155), shared by every mutating RPC.

The first successful response to a request id is stored in the same transaction as the
change it describes; a retry with that id gets the stored response and changes nothing. Two
concurrent calls with one id race on the primary key: the loser's transaction fails on
commit, and it then answers with the winner's response. Reusing an id for a different request
is refused, since silently returning another request's result would mislead the caller.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime.db.schema import idempotency_keys
from omni_runtime.errors import FieldViolation, InvalidArgument

M = TypeVar("M", bound=Message)


def fingerprint(request: Message) -> str:
    """A stable hash of the request without its request_id, to detect id reuse."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


async def recall(
    session: AsyncSession, scope: str, request_id: str, request: Message, response_type: type[M]
) -> M | None:
    """The stored response for ``(scope, request_id)``, or None if this is the first attempt."""
    if not request_id:
        return None
    row = (
        await session.execute(
            select(idempotency_keys.c.fingerprint, idempotency_keys.c.response).where(
                idempotency_keys.c.scope == scope, idempotency_keys.c.request_id == request_id
            )
        )
    ).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint(request):
        raise InvalidArgument(
            [FieldViolation("request_id", "was already used for a different request", "REQUEST_ID_REUSED")]
        )
    return response_type.FromString(row.response)


async def remember(
    session: AsyncSession, scope: str, request_id: str, request: Message, response: Message
) -> None:
    """Store the response in the caller's transaction; a concurrent twin makes the commit fail."""
    if not request_id:
        return
    await session.execute(
        insert(idempotency_keys).values(
            scope=scope,
            request_id=request_id,
            fingerprint=fingerprint(request),
            response=response.SerializeToString(),
        )
    )
