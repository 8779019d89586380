"""Request-id idempotency (AIP-155): ``idempotency.once`` and ``after_commit``, against PostgreSQL.

Each test writes rows into a table of its own making, so "applied once" is what the database
holds, not what a Python counter saw.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.probe.v1 import probe_pb2
from omni_runtime.db import idempotency
from omni_runtime.db.engine import Database, after_commit
from omni_runtime.db.migrate import upgrade_async
from omni_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, OmniError

SCOPE = "probe.Echo"
Work = Callable[[AsyncSession], Awaitable[probe_pb2.EchoResponse | OmniError]]
_meta = MetaData()
effects = Table(
    "test_idempotency_effects",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Text, nullable=False),
    Column("note", Text, nullable=False),
)


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_async("probe", database_url)
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(_meta.create_all)
    yield database
    await database.close()


def echo(text: str) -> probe_pb2.EchoRequest:
    return probe_pb2.EchoRequest(name="customers/c/echoes/e", text=text)


async def applied(db: Database, request_id: str) -> list[str]:
    async with db.transaction() as session:
        rows = await session.execute(select(effects.c.note).where(effects.c.request_id == request_id))
        return [row.note for row in rows]


async def once(db: Database, rid: str, request: probe_pb2.EchoRequest, work: Work) -> probe_pb2.EchoResponse:
    return await idempotency.once(db, SCOPE, rid, request, probe_pb2.EchoResponse, work)


def writer(request_id: str, note: str, *, pause: float = 0.0) -> Work:
    """Work that writes one effect row and answers with ``note``."""

    async def work(session: AsyncSession) -> probe_pb2.EchoResponse:
        await session.execute(insert(effects).values(request_id=request_id, note=note))
        if pause:
            await asyncio.sleep(pause)  # the transaction stays open: twins must wait for it
        return probe_pb2.EchoResponse(text=note)

    return work


async def test_a_retry_returns_the_first_response_and_changes_nothing(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("one")
    first = await once(db, rid, request, writer(rid, "first"))
    again = await once(db, rid, request, writer(rid, "second"))
    assert first.text == again.text == "first"
    assert await applied(db, rid) == ["first"]
    # The same id in another scope is another request.
    other = await idempotency.once(db, "probe.Other", rid, request, probe_pb2.EchoResponse, writer(rid, "o"))
    assert other.text == "o"


async def test_concurrent_duplicates_apply_once_and_all_answer_alike(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("x")
    answers = await asyncio.gather(
        *(once(db, rid, request, writer(rid, str(i), pause=0.05)) for i in range(10))
    )
    notes = await applied(db, rid)
    assert len(notes) == 1
    assert {a.text for a in answers} == {notes[0]}


async def test_a_reused_request_id_with_another_request_is_refused(db: Database) -> None:
    rid = str(uuid.uuid4())
    await once(db, rid, echo("one"), writer(rid, "first"))
    with pytest.raises(InvalidArgument, match="different request") as caught:
        await once(db, rid, echo("two"), writer(rid, "x"))
    assert caught.value.violations[0].reason == "REQUEST_ID_REUSED"
    assert await applied(db, rid) == ["first"]


async def test_concurrent_twins_with_different_requests_apply_one_and_refuse_the_rest(db: Database) -> None:
    rid = str(uuid.uuid4())
    outcomes = await asyncio.gather(
        *(once(db, rid, echo(str(i)), writer(rid, str(i), pause=0.02)) for i in range(5)),
        return_exceptions=True,
    )
    answered = [o for o in outcomes if isinstance(o, probe_pb2.EchoResponse)]
    assert len(answered) == 1
    refused = [o for o in outcomes if not isinstance(o, probe_pb2.EchoResponse)]
    assert len(refused) == 4 and all(isinstance(o, InvalidArgument) for o in refused)
    assert await applied(db, rid) == [answered[0].text]


async def test_requests_without_a_request_id_always_run(db: Database) -> None:
    rid = f"none-{uuid.uuid4()}"  # only tags the effect rows
    for note in ("a", "b"):
        answer = await once(db, "", echo("same"), writer(rid, note))
        assert answer.text == note
    assert sorted(await applied(db, rid)) == ["a", "b"]


async def test_a_raised_error_rolls_back_and_stores_nothing(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("one")

    async def failing(session: AsyncSession) -> probe_pb2.EchoResponse:
        await session.execute(insert(effects).values(request_id=rid, note="rolled back"))
        raise NotFound("customers/c/echoes/e")

    with pytest.raises(NotFound):
        await once(db, rid, request, failing)
    assert await applied(db, rid) == []
    # The key was released with the rollback: the retry does the work.
    answer = await once(db, rid, request, writer(rid, "retry"))
    assert answer.text == "retry"
    assert await applied(db, rid) == ["retry"]


async def test_a_twin_waiting_on_a_call_that_fails_does_the_work_itself(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("one")
    started = asyncio.Event()

    async def slow_failure(session: AsyncSession) -> probe_pb2.EchoResponse:
        await session.execute(insert(effects).values(request_id=rid, note="rolled back"))
        started.set()
        await asyncio.sleep(0.1)
        raise FailedPrecondition("not now", reason="NOT_NOW")

    async def twin() -> probe_pb2.EchoResponse:
        await started.wait()
        return await once(db, rid, request, writer(rid, "twin"))

    first, second = await asyncio.gather(
        once(db, rid, request, slow_failure),
        twin(),
        return_exceptions=True,
    )
    assert isinstance(first, FailedPrecondition)
    assert isinstance(second, probe_pb2.EchoResponse) and second.text == "twin"
    assert await applied(db, rid) == ["twin"]


async def test_a_returned_error_commits_the_work_and_is_raised_without_being_stored(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("log in")

    async def counted_failure(session: AsyncSession) -> probe_pb2.EchoResponse | OmniError:
        await session.execute(insert(effects).values(request_id=rid, note="failed attempt"))
        return FailedPrecondition("wrong code", reason="WRONG_CODE")

    for _ in range(2):
        with pytest.raises(FailedPrecondition, match="wrong code"):
            await once(db, rid, request, counted_failure)
    # Each attempt left its trace, and no answer was stored: the next try runs and succeeds.
    assert await applied(db, rid) == ["failed attempt", "failed attempt"]
    answer = await once(db, rid, request, writer(rid, "ok"))
    assert answer.text == "ok"
    again = await once(db, rid, request, writer(rid, "no"))
    assert again.text == "ok"
    assert await applied(db, rid) == ["failed attempt", "failed attempt", "ok"]


async def test_an_answer_given_early_is_the_one_stored(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("early")

    async def work(session: AsyncSession) -> probe_pb2.EchoResponse:
        response = probe_pb2.EchoResponse(text="early")
        await idempotency.answer_early(session, response)
        await session.execute(insert(effects).values(request_id=rid, note="early"))
        return response

    assert (await once(db, rid, request, work)).text == "early"
    async with db.transaction() as session:
        stored = await idempotency.recall(session, SCOPE, rid, request, probe_pb2.EchoResponse)
    assert stored is not None and stored.text == "early"
    # Outside ``once`` (no claim) it does nothing.
    async with db.transaction() as session:
        await idempotency.answer_early(session, probe_pb2.EchoResponse(text="stray"))


async def test_recall_answers_a_retry_before_once_and_ignores_its_own_claim(db: Database) -> None:
    rid = str(uuid.uuid4())
    request = echo("peek")
    async with db.transaction() as session:
        assert await idempotency.recall(session, SCOPE, rid, request, probe_pb2.EchoResponse) is None

    async def work(session: AsyncSession) -> probe_pb2.EchoResponse:
        # Inside the claiming transaction the empty claim is not an earlier answer.
        assert await idempotency.recall(session, SCOPE, rid, request, probe_pb2.EchoResponse) is None
        return probe_pb2.EchoResponse(text="done")

    await once(db, rid, request, work)
    async with db.transaction() as session:
        stored = await idempotency.recall(session, SCOPE, rid, request, probe_pb2.EchoResponse)
        assert stored is not None and stored.text == "done"
        with pytest.raises(InvalidArgument, match="different request"):
            await idempotency.recall(session, SCOPE, rid, echo("other"), probe_pb2.EchoResponse)


async def test_after_commit_runs_only_after_a_commit(db: Database) -> None:
    seen: list[str] = []
    rid = str(uuid.uuid4())

    async with db.transaction() as session:
        await session.execute(insert(effects).values(request_id=rid, note="kept"))
        after_commit(session, lambda: seen.append("committed"))
        assert seen == []
    assert seen == ["committed"]

    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            after_commit(session, lambda: seen.append("rolled back"))
            raise RuntimeError("boom")
    assert seen == ["committed"]

    # Work of ``once`` answered from storage never ran, so it registered nothing.
    request = echo("after")

    async def work(session: AsyncSession) -> probe_pb2.EchoResponse:
        after_commit(session, lambda: seen.append("once"))
        return probe_pb2.EchoResponse(text="after")

    for _ in range(2):
        await once(db, rid, request, work)
    assert seen == ["committed", "once"]
