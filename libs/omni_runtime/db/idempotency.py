"""Request-id idempotency (AIP-155), shared by every mutating RPC: ``once``.

The first successful response to a request id is stored in the same transaction as the
change it describes; a retry with that id gets the stored response and changes nothing.
Reusing an id for a different request is refused (INVALID_ARGUMENT, ``REQUEST_ID_REUSED``),
since silently returning another request's result would mislead the caller.

Concurrent duplicates (a client that retries before its first call has answered) are
serialized by the key itself: ``once`` *claims* ``(scope, request_id)`` first thing in its
transaction by inserting the key's row with an empty answer. PostgreSQL makes a second insert
of that key wait until the first transaction ends; then the duplicate either finds the
committed answer and returns it, or (the first rolled back) claims the key and does the work
itself. So a duplicate never runs the work beside its twin: it cannot fail where the first
succeeded (INSUFFICIENT_STOCK for the stock its twin just took, ABORTED for the etag its twin
just moved, REFRESH_TOKEN_REUSED for the token its twin just rotated), and nobody has to
catch an IntegrityError on the key. A first call makes as many round trips as reading the
key and inserting the answer would (the claim replaces the read; storing the answer updates
the claimed row); a retry makes one more (the claim, then the read).

The claim is the first lock the transaction takes and the only one of its kind, so it
cannot take part in a deadlock: a transaction waiting on a claim holds no other lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import ColumnElement, and_, bindparam, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime.db.engine import Database, Reader, flush_deferred
from omni_runtime.db.schema import idempotency_keys
from omni_runtime.errors import FieldViolation, InvalidArgument, OmniError

M = TypeVar("M", bound=Message)

# What ``once``'s work does in its transaction: the response, or an OmniError to raise after
# committing (see ``once``).
Work = Callable[[AsyncSession], Awaitable[M | OmniError]]

_CLAIM = "omni_idempotency_claim"


def fingerprint(request: Message) -> str:
    """A stable hash of the request without its request_id, to detect id reuse."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


async def once(
    db: Database,
    scope: str,
    request_id: str,
    request: Message,
    response_type: type[M],
    work: Work[M],
) -> M:
    """Run ``work`` in one transaction at most once per ``(scope, request_id)``; answer with
    its response, or with the stored response of an earlier call with the same request id.

    ``scope`` keeps request ids of different methods (and, for authenticated methods, of
    different callers or resources) apart; the same scope must always mean the same kind of
    request. Without a ``request_id`` the work simply runs in a transaction.

    Errors ``work`` raises roll everything back and are not stored: a retry runs the work again
    (it may succeed once the cause is gone). Some failures must leave a trace although the call
    fails: a wrong password or one-time code counts an attempt, a reused refresh token revokes
    its session. For those ``work`` *returns* the ``OmniError`` instead of raising it: ``once``
    commits what the work wrote, without storing an answer, and then raises the error.

    ``once`` returns only after the commit, and ``work`` runs at most once per call; effects
    that must follow the commit go through ``omni_runtime.db.engine.after_commit``.
    """
    refusal: OmniError
    async with db.transaction() as session:
        if request_id:
            stored = await _claim(session, scope, request_id, request, response_type)
            if stored is not None:
                return stored
        outcome = await work(session)
        claim: _Claim | None = session.info.pop(_CLAIM, None)
        if not isinstance(outcome, OmniError):
            if claim is not None and not claim.answered:
                # With the transaction's deferred inserts (its events): one round trip.
                await flush_deferred(session, tail=_answer(claim, outcome))
            return outcome
        if claim is not None:
            await session.execute(delete(idempotency_keys).where(claim.key()))
        refusal = outcome
    raise refusal


async def answer_early(session: AsyncSession, response: Message) -> None:
    """Store ``once``'s answer now, before the rest of its work (a no-op outside ``once`` or
    without a request id).

    For work whose answer is known before it takes its hottest row locks (a reservation knows
    its allocations before the guarded stock updates): writing the answer then happens outside
    the critical section, which shortens how long a hot row stays locked. The transaction still
    commits both or neither. The work must return this same response.
    """
    claim: _Claim | None = session.info.get(_CLAIM)
    if claim is not None and not claim.answered:
        await _store(session, claim, response)


async def recall(
    session: Reader, scope: str, request_id: str, request: Message, response_type: type[M]
) -> M | None:
    """The stored response for ``(scope, request_id)``, or None if there is none (yet).

    ``once`` does this itself. Call it directly only to answer a retry before slow work that
    must happen outside ``once``'s transaction (hashing a password, reading a peer service):
    a retry is then answered without repeating that work, or failing it because the first
    call already changed what it checks.
    """
    if not request_id:
        return None
    claim: _Claim | None = session.info.get(_CLAIM)
    if claim is not None and (claim.scope, claim.request_id) == (scope, request_id):
        return None  # the key this very transaction claimed: no earlier call answered it
    row = (await session.execute(_RECALL, {"scope": scope, "request_id": request_id})).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint(request):
        raise _reused()
    return response_type.FromString(row.response)


# Built once: constructing a statement costs more than running a cached one.
_CLAIM_ONE = (
    insert(idempotency_keys)
    .values(
        scope=bindparam("scope"),
        request_id=bindparam("request_id"),
        fingerprint=bindparam("fingerprint"),
        response=bindparam("response"),
    )
    .on_conflict_do_nothing(index_elements=[idempotency_keys.c.scope, idempotency_keys.c.request_id])
    .returning(idempotency_keys.c.scope)
)
_RECALL = select(idempotency_keys.c.fingerprint, idempotency_keys.c.response).where(
    idempotency_keys.c.scope == bindparam("scope"), idempotency_keys.c.request_id == bindparam("request_id")
)


@dataclass
class _Claim:
    scope: str
    request_id: str
    answered: bool = False

    def key(self) -> ColumnElement[bool]:
        return and_(idempotency_keys.c.scope == self.scope, idempotency_keys.c.request_id == self.request_id)


async def _claim(
    session: AsyncSession, scope: str, request_id: str, request: Message, response_type: type[M]
) -> M | None:
    """Claim the key for this transaction (None), or return the answer stored under it.

    The empty answer of a claim is never seen by another transaction: ``once`` replaces it
    (or deletes the row) before it commits, and a rollback removes it; ``recall`` in the
    claiming transaction itself knows it for what it is.
    """
    key = {"scope": scope, "request_id": request_id, "fingerprint": fingerprint(request), "response": b""}
    while True:
        claimed = (await session.execute(_CLAIM_ONE, key)).first()
        if claimed is not None:
            session.info[_CLAIM] = _Claim(scope, request_id)
            return None
        # Taken: by an earlier call, or by a twin whose transaction the insert waited for. This
        # new statement sees the committed row; were it purged in between, claim again.
        stored = await recall(session, scope, request_id, request, response_type)
        if stored is not None:
            return stored


@dataclass
class Claim:
    """One request of several that a single transaction serves (``claim_many``).

    ``answer``: the response, when it is known before the work (stored with the claim, so it
    costs no second statement); otherwise ``store_answers`` stores it later in the transaction.
    """

    scope: str
    request_id: str
    request: Message
    response_type: type[Message]
    answer: Message | None = None

    def key(self) -> tuple[str, str]:
        return (self.scope, self.request_id)


# What ``claim_many`` found for keys an earlier call answered: its response, or the reuse error.
Outcomes = dict[tuple[str, str], Message | OmniError]

# Fixed texts (arrays, not one placeholder per row): prepared once per connection, any count.
_CLAIM_MANY = text(
    "INSERT INTO omni_idempotency_keys (scope, request_id, fingerprint, response)"
    " SELECT * FROM unnest(CAST(:s AS text[]), CAST(:r AS text[]), CAST(:f AS text[]), CAST(:a AS bytea[]))"
    " ON CONFLICT (scope, request_id) DO NOTHING RETURNING scope, request_id"
)
_STORED = text(
    "SELECT k.scope, k.request_id, k.fingerprint, k.response FROM omni_idempotency_keys k"
    " JOIN unnest(CAST(:s AS text[]), CAST(:r AS text[])) AS g(s, r) ON k.scope = g.s AND k.request_id = g.r"
)
_ANSWER_MANY = text(
    "UPDATE omni_idempotency_keys k SET response = g.a"
    " FROM unnest(CAST(:s AS text[]), CAST(:r AS text[]), CAST(:a AS bytea[])) AS g(s, r, a)"
    " WHERE k.scope = g.s AND k.request_id = g.r"
)
_FORGET_MANY = text(
    "DELETE FROM omni_idempotency_keys k USING unnest(CAST(:s AS text[]), CAST(:r AS text[])) AS g(s, r)"
    " WHERE k.scope = g.s AND k.request_id = g.r"
)


async def claim_many(session: AsyncSession, claims: Sequence[Claim]) -> Outcomes:
    """``once``'s claim for several requests served by one transaction (hot-row groups).

    Every key is claimed in this transaction, in (scope, request id) order, so two transactions
    claiming overlapping keys wait for each other without deadlocking; like ``once``'s claim it
    must come before the transaction's other locks. Returns, for each key an earlier call
    already answered, that stored response (or the ``REQUEST_ID_REUSED`` error when the request
    differs); every other key is now claimed by this transaction. Keys must be distinct. A
    request that then fails must be ``forget``-ed: a failed call stores nothing. One statement
    for any number of keys (two when some were taken).
    """
    pending = sorted(claims, key=Claim.key)
    earlier: Outcomes = {}
    prints = {c.key(): fingerprint(c.request) for c in pending}
    while pending:
        params = {
            "s": [c.scope for c in pending],
            "r": [c.request_id for c in pending],
            "f": [prints[c.key()] for c in pending],
            "a": [c.answer.SerializeToString() if c.answer is not None else b"" for c in pending],
        }
        taken = {(row.scope, row.request_id) for row in await session.execute(_CLAIM_MANY, params)}
        busy = [c for c in pending if c.key() not in taken]
        if not busy:
            break
        found = await session.execute(
            _STORED, {"s": [c.scope for c in busy], "r": [c.request_id for c in busy]}
        )
        stored = {(row.scope, row.request_id): row for row in found}
        pending = []
        for claim in busy:
            row = stored.get(claim.key())
            if row is None:
                pending.append(claim)  # purged in between: claim it again
            elif row.fingerprint != prints[claim.key()]:
                earlier[claim.key()] = _reused()
            else:
                answer: Message = claim.response_type.FromString(row.response)
                earlier[claim.key()] = answer
    return earlier


async def store_answers(session: AsyncSession, answers: Sequence[tuple[Claim, Message]]) -> None:
    """Store the responses of keys claimed by ``claim_many`` without one, in one statement."""
    if answers:
        await session.execute(
            _ANSWER_MANY,
            {
                "s": [c.scope for c, _ in answers],
                "r": [c.request_id for c, _ in answers],
                "a": [answer.SerializeToString() for _, answer in answers],
            },
        )


async def forget(session: AsyncSession, claims: Sequence[Claim]) -> None:
    """Drop keys claimed by ``claim_many`` for requests that failed: a retry runs them again."""
    if claims:
        await session.execute(
            _FORGET_MANY, {"s": [c.scope for c in claims], "r": [c.request_id for c in claims]}
        )


def _reused() -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request_id", "was already used for a different request", "REQUEST_ID_REUSED")]
    )


def _answer(claim: _Claim, response: Message) -> tuple[str, dict[str, Any]]:
    """The statement storing ``response`` under ``claim``'s key (a ``bulk`` tail)."""
    claim.answered = True
    return (
        "UPDATE omni_idempotency_keys SET response = :once_answer"
        " WHERE scope = :once_scope AND request_id = :once_request_id",
        {
            "once_answer": response.SerializeToString(),
            "once_scope": claim.scope,
            "once_request_id": claim.request_id,
        },
    )


async def _store(session: AsyncSession, claim: _Claim, response: Message) -> None:
    await session.execute(
        update(idempotency_keys).where(claim.key()).values(response=response.SerializeToString())
    )
    claim.answered = True
