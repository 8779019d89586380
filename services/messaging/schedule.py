"""The delivery schedule: a PostgreSQL-backed queue of due notifications, worked by every replica.

A pass claims due rows (``due_time <= now``, no live lease) with ``FOR UPDATE SKIP LOCKED`` and
gives them a lease (``lease_until``, ``lease_token``); two replicas never claim the same row, and a
row whose worker died comes back when its lease runs out. Each claimed notification then:

1. asks preferences when it must (held by quiet hours or a cap, or enqueued by an event):
   send, hold again, or suppress;
2. renders the template for its current channel in the customer's language (locale fallback);
3. records the attempt as SENDING with its idempotency key, and commits, *before* calling the
   provider; a worker that crashes after this re-sends with the same key: no duplicate where the
   provider honours the key (webhook, in-app), at most one where it does not (SMTP, Twilio, FCM);
4. calls the provider, then records the outcome under its lease: SENT; or a transient failure
   retried after back-off with jitter; or a permanent one (or an exhausted budget) that moves to
   the next allowed channel; FAILED when none is left. Every write checks the lease token, so a
   worker that lost its lease (it was too slow) cannot overwrite the work of the one that took over.

A commit that makes something due wakes this replica's worker at once; other replicas find it at
their next poll (``OMNI_MESSAGING_POLL_INTERVAL_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni_runtime.db.engine import after_commit
from omni_runtime.events.bus import stop_requested
from services.messaging import contacts, convert, events, metrics, notifications, store
from services.messaging.adapters import base
from services.messaging.adapters.preferences import PreferencesRefused, PreferencesUnavailable
from services.messaging.domain import delivery, plans
from services.messaging.domain import templates as rules
from services.messaging.domain.contacts import ContactPoint, Destination
from services.messaging.unit import Unit

log = logging.getLogger("omni.messaging.schedule")
T = TypeVar("T")

N = store.notifications
A = store.delivery_attempts
PENDING = res.NOTIFICATION_STATE_PENDING
SENT = res.NOTIFICATION_STATE_SENT
DELIVERED = res.NOTIFICATION_STATE_DELIVERED
FAILED = res.NOTIFICATION_STATE_FAILED
SUPPRESSED = res.NOTIFICATION_STATE_SUPPRESSED
A_SENDING = res.DELIVERY_ATTEMPT_STATE_SENDING
A_SENT = res.DELIVERY_ATTEMPT_STATE_SENT
A_DELIVERED = res.DELIVERY_ATTEMPT_STATE_DELIVERED
A_FAILED = res.DELIVERY_ATTEMPT_STATE_FAILED


channel_label = metrics.channel_label


class LeaseLost(Exception):
    """Another worker owns the notification now (ours expired): stop touching it."""


@dataclass
class Claim:
    row: store.AnyRow
    token: str


@dataclass
class Job:
    """A notification ready to go out on one channel through one provider."""

    claim: Claim
    channel: int
    provider: base.Provider
    destination: Destination
    rendered: rules.Rendered
    attempt_id: int = 0
    key: str = ""


@dataclass
class SendResult:
    job: Job
    sent: base.Sent | None = None
    error: base.ProviderError | None = None


class DeliveryWorker:
    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(unit.config.concurrency)
        self._points: dict[str, list[ContactPoint]] = {}
        unit.wake = self._wake.set

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        last_backlog = 0.0
        while True:
            try:
                while await self.pass_() >= self.unit.config.batch_size:
                    pass
                metrics.WORKER_PASSES.labels("ok").inc()
                if time.monotonic() - last_backlog > 5:
                    await self.refresh_backlog()
                    last_backlog = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.WORKER_PASSES.labels("error").inc()
                log.warning("delivery pass failed; retrying: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.unit.config.poll_interval)
            if stop_requested():
                raise asyncio.CancelledError
            if self._wake.is_set():
                # Woken by a commit: let the burst it may be part of arrive, and claim it as one batch.
                await asyncio.sleep(self.unit.config.gather)

    async def pass_(self) -> int:
        """Claim one batch of due notifications and work it; how many were claimed.

        Preparing (decisions, rendering, addresses) and sending run concurrently; recording the
        attempts before the sends, and the successes after them, takes one transaction each
        for the whole batch (failures, the rarer case, are recorded one by one).
        """
        claims = await self.claim(self.unit.config.batch_size)
        if not claims:
            return 0
        renewal = asyncio.create_task(self._renew(claims[0].token), name="omni-messaging-lease-renewal")
        try:
            await self._work(claims)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        return len(claims)

    async def _renew(self, token: str) -> None:
        """Keep the pass's leases alive while it works (a third of the lease at a time): a slow
        pass must not let another replica take its rows, and a dead worker's renewals stop."""
        lease = self.unit.config.lease.total_seconds()
        while True:
            await asyncio.sleep(lease / 3)
            try:
                async with self.unit.db.transaction() as session:
                    await session.execute(
                        update(N)
                        .where(N.c.lease_token == token, N.c.lease_until.is_not(None))
                        .values(lease_until=func.now() + text(f"interval '{lease:.3f} seconds'"))
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing leases failed: %s", exc)

    async def _work(self, claims: list[Claim]) -> None:
        ids = {c.row.template_id for c in claims}
        async with self.unit.db.transaction() as session:
            found = await session.execute(select(store.templates).where(store.templates.c.id.in_(ids)))
            templates = {t.id: t for t in found}
            self._points = await contacts.points_of(
                session, {c.row.customer for c in claims if not c.row.fixed_kind}
            )
        prepared = await asyncio.gather(
            *(self._guarded(c, self.process(c, templates.get(c.row.template_id))) for c in claims)
        )
        jobs = [job for job in prepared if isinstance(job, Job)]
        if jobs:
            begun = await self._begin_attempts(jobs)
            outcomes = await asyncio.gather(*(self._guarded(job.claim, self._send(job)) for job in begun))
            results = [o for o in outcomes if isinstance(o, SendResult)]
            await self._record_sent([r for r in results if r.sent is not None])
            await asyncio.gather(
                *(
                    self._guarded(
                        r.job.claim,
                        self._attempt_failed(r.job.claim, r.job.attempt_id, r.job.channel, r.error),
                    )
                    for r in results
                    if r.error is not None
                )
            )

    async def _guarded(self, claim: Claim, work: Awaitable[T]) -> T | None:
        async with self._slots:
            try:
                return await work
            except LeaseLost:
                log.warning("lost the lease of notification %s; another worker has it", claim.row.id)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Left leased: it comes back when the lease runs out, and is retried then.
                log.exception("delivering notification %s failed unexpectedly", claim.row.id)
        return None

    async def claim(self, limit: int) -> list[Claim]:
        now = self.unit.clock.now()
        token = uuid.uuid4().hex
        lease = self.unit.config.lease.total_seconds()
        async with self.unit.db.transaction() as session:
            due = (
                select(N.c.id)
                .where(N.c.due_time <= now, or_(N.c.lease_until.is_(None), N.c.lease_until < func.now()))
                .order_by(N.c.due_time)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .cte("due")
            )
            rows = (
                await session.execute(
                    update(N)
                    .where(N.c.id == due.c.id)
                    .values(
                        lease_until=func.now() + text(f"interval '{lease:.3f} seconds'"), lease_token=token
                    )
                    .returning(*N.c)
                )
            ).all()
        for row in rows:
            metrics.SCHEDULE_LAG.observe(max((now - row.due_time).total_seconds(), 0.0))
        return [Claim(row, token) for row in rows]

    async def refresh_backlog(self) -> None:
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(N.c.due_time)).where(
                        N.c.due_time <= now, or_(N.c.lease_until.is_(None), N.c.lease_until < func.now())
                    )
                )
            ).one()
        metrics.SCHEDULE_DUE.set(count)
        metrics.SCHEDULE_OLDEST_DUE.set(
            max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        )

    # -- one notification ---------------------------------------------------------------------

    async def process(self, claim: Claim, template: store.AnyRow | None) -> Job | None:
        """Everything before the send: the decision, the content, the address, the provider. A
        Job to send, or None when the notification took another turn (held, suppressed, failed
        over to its next channel)."""
        unit = self.unit
        row = claim.row
        now = unit.clock.now()
        if row.state != PENDING:
            await self._write(claim, due_time=None, lease_until=None)
            return None
        if row.expire_time is not None and row.expire_time <= now:
            await self._suppress(claim, res.SUPPRESSION_REASON_EXPIRED)
            return None
        if template is None:
            await self._suppress(claim, res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
            return None
        if row.decide and row.consult:
            decided = await self._decide(claim, template, now)
            if decided is None:
                return None
            claim = Claim(decided, claim.token)
        return await self._prepare(claim, template)

    async def _decide(self, claim: Claim, template: store.AnyRow, now: datetime) -> store.AnyRow | None:
        """Ask preferences; the updated row when it may be sent now, else None (held/suppressed)."""
        unit = self.unit
        row = claim.row
        channels = notifications.deliverable(unit, template)
        if not channels or (row.requested_channel and row.requested_channel not in channels):
            await self._suppress(claim, res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
            return None
        try:
            decision = await unit.preferences.decide(
                row.customer,
                topic=row.topic,
                purpose=row.purpose,
                channel=row.requested_channel,
                eligible=channels,
                evaluate_time=now,
                request_id=notifications.decision_request_id(row.id, row.decisions),
            )
        except PreferencesUnavailable as exc:
            log.warning("preferences unavailable for %s; asking again later: %s", row.id, exc)
            wait = unit.config.retry.delay(min(row.decisions + 1, 10), unit.rng)
            await self._write(claim, due_time=now + wait, lease_until=None, decisions=row.decisions + 1)
            return None
        except PreferencesRefused as exc:
            log.error("preferences refused to decide for %s; it fails: %s", row.id, exc)
            await self._refused(claim, str(exc))
            return None
        plan = plans.plan(
            decision,
            requested=row.requested_channel,
            deliverable=channels,
            now=now,
            expire_time=row.expire_time,
            limits=unit.config.limits,
        )
        if isinstance(plan, plans.Suppress):
            await self._suppress(claim, plan.reason, decisions=row.decisions + 1)
            return None
        if isinstance(plan, plans.Hold):
            await self._write(
                claim,
                due_time=plan.until,
                lease_until=None,
                decisions=row.decisions + 1,
                language=plan.language,
            )
            metrics.count("held")
            return None
        return await self._write(
            claim,
            decide=False,
            decisions=row.decisions + 1,
            channels=list(plan.channels),
            language=plan.language,
            reserved_channel=plan.reserved_channel,
            tries=0,
        )

    async def _prepare(self, claim: Claim, template: store.AnyRow) -> Job | None:
        unit = self.unit
        row = claim.row
        if not row.channels:
            await self._suppress(claim, res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
            return None
        channel = row.channels[0]
        contents = convert.contents_from_json(template.contents)
        content = rules.pick(contents, channel, row.language, template.default_locale)
        if content is None:
            await self._next_channel(claim, channel, error=None)
            return None
        if row.fixed_kind:
            destination: Destination | None = Destination(row.fixed_kind, row.fixed_value)
        else:
            destination = await contacts.resolve(
                unit, row.customer, channel, self._points.get(row.customer, [])
            )
        if destination is None:
            await self._failed_attempt(
                claim, channel, "", base.NO_CONTACT_POINT, "no contact point for the channel", transient=False
            )
            return None
        provider = next((p for p in unit.providers.for_channel(channel) if p.accepts(destination)), None)
        if provider is None:
            await self._failed_attempt(
                claim,
                channel,
                destination.masked,
                base.MISCONFIGURED,
                f"no provider reaches a {destination.kind}",
                transient=False,
            )
            return None
        params: Mapping[str, str] = row.params
        missing = [p for p in rules.params_of([content]) if p not in params]
        if missing:  # the template changed after the notification was accepted
            await self._next_channel(claim, channel, error=None)
            return None
        return Job(claim, channel, provider, destination, rules.render(content, params))

    async def _send(self, job: Job) -> SendResult:
        outbound = base.Outbound(
            channel=job.channel,
            destination=job.destination,
            subject=job.rendered.subject,
            body=job.rendered.body,
            html_body=job.rendered.html_body,
            idempotency_key=job.key,
            reference=convert.notification_name(job.claim.row.id),
        )
        provider = job.provider
        started = time.perf_counter()
        try:
            sent = await provider.send(outbound)
        except base.ProviderError as exc:
            metrics.PROVIDER_SECONDS.labels(provider.name).observe(time.perf_counter() - started)
            outcome = "transient" if exc.transient else "permanent"
            metrics.PROVIDER_REQUESTS.labels(provider.name, channel_label(job.channel), outcome).inc()
            return SendResult(job, error=exc)
        metrics.PROVIDER_SECONDS.labels(provider.name).observe(time.perf_counter() - started)
        metrics.PROVIDER_REQUESTS.labels(provider.name, channel_label(job.channel), "ok").inc()
        return SendResult(job, sent=sent)

    # -- writes under the lease ---------------------------------------------------------------

    async def _locked(self, session: AsyncSession, claim: Claim) -> store.AnyRow:
        row = (
            await session.execute(
                select(N).where(N.c.id == claim.row.id, N.c.lease_token == claim.token).with_for_update()
            )
        ).first()
        if row is None:
            raise LeaseLost(claim.row.id)
        return row

    async def _write(self, claim: Claim, **values: Any) -> store.AnyRow:
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            values.setdefault("update_time", self.unit.clock.now())
            row = (
                await session.execute(
                    update(N).where(N.c.id == claim.row.id).values(**values).returning(*N.c)
                )
            ).one()
            if values.get("due_time") is not None and values["due_time"] <= self.unit.clock.now():
                after_commit(session, self.unit.wake)
            return row

    async def _suppress(self, claim: Claim, reason: int, **values: Any) -> None:
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            row = (
                await session.execute(
                    update(N)
                    .where(N.c.id == claim.row.id)
                    .values(
                        state=SUPPRESSED,
                        suppression_reason=reason,
                        due_time=None,
                        lease_until=None,
                        update_time=now,
                        **values,
                    )
                    .returning(*N.c)
                )
            ).one()
            await self.unit.outbox.emit(session, events.suppressed(row, now))
        metrics.count("suppressed", 0, reason)

    async def _owned(self, session: AsyncSession, jobs: list[Job]) -> set[str]:
        """Lock the jobs' notifications that are still under their claim's lease."""
        found: set[str] = set()
        for token in {j.claim.token for j in jobs}:
            ids = [j.claim.row.id for j in jobs if j.claim.token == token]
            rows = await session.execute(
                select(N.c.id).where(N.c.id.in_(ids), N.c.lease_token == token).with_for_update()
            )
            found.update(r.id for r in rows)
        for job in jobs:
            if job.claim.row.id not in found:
                log.warning("lost the lease of notification %s; another worker has it", job.claim.row.id)
        return found

    async def _begin_attempts(self, jobs: list[Job]) -> list[Job]:
        """Record every job's attempt (SENDING) before any provider is called, in one transaction.
        A crashed worker's SENDING attempt on the same channel and provider is resumed with its
        idempotency key. The jobs whose notification is still ours, with attempt id and key."""
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            owned = await self._owned(session, jobs)
            mine = [j for j in jobs if j.claim.row.id in owned]
            if not mine:
                return []
            ids = [j.claim.row.id for j in mine]
            last = {
                r.notification_id: r
                for r in await session.execute(
                    select(A)
                    .ext(distinct_on(A.c.notification_id))
                    .where(A.c.notification_id.in_(ids))
                    .order_by(A.c.notification_id, A.c.id.desc())
                )
            }
            counts: dict[str, int] = dict(
                (
                    await session.execute(
                        select(A.c.notification_id, func.count())
                        .where(A.c.notification_id.in_(ids))
                        .group_by(A.c.notification_id)
                    )
                ).all()
            )
            fresh: list[Job] = []
            for job in mine:
                previous = last.get(job.claim.row.id)
                if (
                    previous is not None
                    and previous.state == A_SENDING
                    and previous.channel == job.channel
                    and previous.provider == job.provider.name
                ):
                    job.attempt_id, job.key = int(previous.id), str(previous.idempotency_key)
                else:
                    job.key = f"{job.claim.row.id}.{counts.get(job.claim.row.id, 0) + 1}"
                    fresh.append(job)
            if fresh:
                inserted = await session.execute(
                    A.insert()
                    .values(
                        [
                            {
                                "notification_id": j.claim.row.id,
                                "channel": j.channel,
                                "provider": j.provider.name,
                                "state": A_SENDING,
                                "destination": j.destination.masked,
                                "idempotency_key": j.key,
                                "attempt_time": now,
                                "update_time": now,
                            }
                            for j in fresh
                        ]
                    )
                    .returning(A.c.id, A.c.idempotency_key)
                )
                by_key = {r.idempotency_key: int(r.id) for r in inserted}
                for job in fresh:
                    job.attempt_id = by_key[job.key]
        return mine

    async def _record_sent(self, results: list[SendResult]) -> None:
        """Record every accepted send of the pass in one transaction: attempts SENT (DELIVERED
        for in-app), notifications SENT with what they rendered, and their events."""
        if not results:
            return
        unit = self.unit
        now = unit.clock.now()
        async with unit.db.transaction() as session:
            owned = await self._owned(session, [r.job for r in results])
            done = [r for r in results if r.job.claim.row.id in owned and r.sent is not None]
            if not done:
                return
            await session.execute(
                update(A)
                .where(A.c.id == bindparam("attempt_id"))
                .values(
                    state=bindparam("a_state"), provider_message_id=bindparam("message_id"), update_time=now
                ),
                [
                    {
                        "attempt_id": r.job.attempt_id,
                        "a_state": A_DELIVERED if r.sent.delivered else A_SENT,  # type: ignore[union-attr]
                        "message_id": r.sent.provider_message_id,  # type: ignore[union-attr]
                    }
                    for r in done
                ],
            )
            await session.execute(
                update(N)
                .where(N.c.id == bindparam("nid"))
                .values(
                    state=bindparam("n_state"),
                    chosen_channel=bindparam("n_channel"),
                    locale=bindparam("n_locale"),
                    rendered_subject=bindparam("n_subject"),
                    rendered_body=bindparam("n_body"),
                    deliver_time=bindparam("n_delivered"),
                    due_time=None,
                    lease_until=None,
                    update_time=now,
                ),
                [
                    {
                        "nid": r.job.claim.row.id,
                        "n_state": DELIVERED if r.sent.delivered else SENT,  # type: ignore[union-attr]
                        "n_channel": r.job.channel,
                        "n_locale": r.job.rendered.locale,
                        "n_subject": r.job.rendered.subject,
                        "n_body": r.job.rendered.body,
                        "n_delivered": now if r.sent.delivered else None,  # type: ignore[union-attr]
                    }
                    for r in done
                ],
            )
            published: list[Message] = []
            for r in done:
                published.append(
                    events.sent(r.job.claim.row, r.job.channel, now, locale=r.job.rendered.locale)
                )
                if r.sent.delivered:  # type: ignore[union-attr]
                    published.append(events.delivered(r.job.claim.row, r.job.channel, now))
            await unit.outbox.emit_many(session, published)
        for r in done:
            metrics.count("sent", r.job.channel)
            if r.sent.delivered:  # type: ignore[union-attr]
                metrics.count("delivered", r.job.channel)
            row = r.job.claim.row
            marketing = row.purpose in (pref.CONTACT_PURPOSE_MARKETING, pref.CONTACT_PURPOSE_UNSPECIFIED)
            if marketing and row.consult and r.job.channel != row.reserved_channel:
                await self._record_contact(row, r.job.channel, now)

    async def _refused(self, claim: Claim, message: str) -> None:
        """Preferences will not decide (it refused the question): FAILED, with the refusal as the
        attempt, so the operator sees why instead of a notification pending for ever."""
        now = self.unit.clock.now()
        channel = claim.row.requested_channel
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            await _failed_row(
                session, claim.row.id, channel, "preferences", "", base.PREFERENCES_REFUSED, message, now
            )
            final = (
                await session.execute(
                    update(N)
                    .where(N.c.id == claim.row.id)
                    .values(state=FAILED, due_time=None, lease_until=None, update_time=now)
                    .returning(*N.c)
                )
            ).one()
            attempts = (
                await session.execute(select(A).where(A.c.notification_id == claim.row.id).order_by(A.c.id))
            ).all()
            await self.unit.outbox.emit(session, events.failed(final, attempts, now))
        metrics.count("failed", channel)

    async def _record_contact(self, row: store.AnyRow, channel: int, now: datetime) -> None:
        """A marketing contact made on a channel the decision did not reserve (a fallback)."""
        try:
            await self.unit.preferences.record_contact(
                row.customer,
                channel=channel,
                topic=row.topic,
                purpose=row.purpose,
                contact_time=now,
                request_id=notifications.decision_request_id(row.id, -channel),
            )
        except (PreferencesUnavailable, PreferencesRefused) as exc:
            log.warning("RecordContact for %s failed; the contact is not counted: %s", row.id, exc)

    async def _attempt_failed(
        self, claim: Claim, attempt_id: int, channel: int, error: base.ProviderError
    ) -> None:
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            await session.execute(
                update(A)
                .where(A.c.id == attempt_id)
                .values(
                    state=A_FAILED,
                    error_code=error.code,
                    error_message=(f"{error.provider_code}: " if error.provider_code else "")
                    + error.message[:500],
                    update_time=self.unit.clock.now(),
                )
            )
        await self._after_failure(claim, channel, transient=error.transient, retry_after=error.retry_after)

    async def _failed_attempt(
        self, claim: Claim, channel: int, masked: str, code: str, message: str, *, transient: bool
    ) -> None:
        """An attempt that failed before reaching a provider (no address, no provider)."""
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            await _failed_row(session, claim.row.id, channel, "", masked, code, message, now)
        await self._after_failure(claim, channel, transient=transient, retry_after=None)

    async def _after_failure(self, claim: Claim, channel: int, *, transient: bool, retry_after: Any) -> None:
        unit = self.unit
        row = claim.row
        now = unit.clock.now()
        step = delivery.after_failure(
            transient=transient,
            tries_on_channel=row.tries + 1,
            remaining_channels=tuple(row.channels[1:]),
            policy=unit.config.retry,
            now=now,
            rng=unit.rng,
            retry_after=retry_after,
        )
        if isinstance(step, delivery.Retry):
            await self._write(
                claim, tries=row.tries + 1, due_time=step.at, lease_until=None, chosen_channel=channel
            )
        else:
            await self._next_channel(claim, channel, error=step)

    async def _next_channel(self, claim: Claim, channel: int, *, error: delivery.Step | None) -> None:
        """Give up ``channel``: on to the next allowed one, or FAILED (SUPPRESSED when no channel
        had an address at all)."""
        unit = self.unit
        row = claim.row
        remaining = list(row.channels[1:])
        now = unit.clock.now()
        if remaining:
            await self._write(
                claim,
                channels=remaining,
                failed_channels=[*row.failed_channels, channel],
                tries=0,
                due_time=now,
                lease_until=None,
                chosen_channel=channel,
            )
            return
        async with unit.db.transaction() as session:
            await self._locked(session, claim)
            attempts = (
                await session.execute(select(A).where(A.c.notification_id == row.id).order_by(A.c.id))
            ).all()
            if not attempts or all(a.error_code == base.NO_CONTACT_POINT for a in attempts):
                reason = (
                    res.SUPPRESSION_REASON_NO_CONTACT_POINT
                    if attempts
                    else res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT
                )
                final = (
                    await session.execute(
                        update(N)
                        .where(N.c.id == row.id)
                        .values(
                            state=SUPPRESSED,
                            suppression_reason=reason,
                            due_time=None,
                            lease_until=None,
                            update_time=now,
                        )
                        .returning(*N.c)
                    )
                ).one()
                await unit.outbox.emit(session, events.suppressed(final, now))
                state, counted = "suppressed", int(reason)
            else:
                final = (
                    await session.execute(
                        update(N)
                        .where(N.c.id == row.id)
                        .values(
                            state=FAILED,
                            failed_channels=[*row.failed_channels, channel],
                            channels=[],
                            chosen_channel=channel,
                            due_time=None,
                            lease_until=None,
                            update_time=now,
                        )
                        .returning(*N.c)
                    )
                ).one()
                await unit.outbox.emit(session, events.failed(final, attempts, now))
                state, counted = "failed", 0
        metrics.count(state, channel, counted)


async def _failed_row(
    session: AsyncSession,
    notification_id: str,
    channel: int,
    provider: str,
    masked: str,
    code: str,
    message: str,
    now: datetime,
) -> None:
    """An attempt that failed before any provider took it (no address, no provider, no decision)."""
    count = (
        await session.execute(
            select(func.count()).select_from(A).where(A.c.notification_id == notification_id)
        )
    ).scalar_one()
    await session.execute(
        A.insert().values(
            notification_id=notification_id,
            channel=channel,
            provider=provider,
            state=A_FAILED,
            destination=masked,
            error_code=code,
            error_message=message[:500],
            idempotency_key=f"{notification_id}.{count + 1}",
            attempt_time=now,
            update_time=now,
        )
    )
