"""Operations several identity handlers share: loading customers, guest tokens and merges,
one-time-code challenges, counted log-in failures, identifier validation."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2, identity_service_pb2, resources_pb2
from omni_runtime.context import ChannelInfo, current_channel
from omni_runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OmniError,
    ResourceExhausted,
    Unauthenticated,
)
from omni_runtime.validation import Checker
from services.identity import domain, events, metrics, store
from services.identity.api import convert
from services.identity.api.common import DOMAIN, Deps
from services.identity.sessions import ACTIVE as SESSION_ACTIVE
from services.identity.sessions import Reason

Customer = resources_pb2.Customer
CUSTOMER_PATTERN = "customers/{customer}"
IDENTIFIER_PATTERN = "customers/{customer}/identifiers/{identifier}"
UNLINK = events_pb2.IdentifierUnlinkedEvent
M = TypeVar("M", bound=Message)


def customer_is_guest(name: str, message: str) -> FailedPrecondition:
    """What a guest cannot do (be locked, hold a log-in identifier): FAILED_PRECONDITION."""
    return FailedPrecondition(
        message,
        reason="CUSTOMER_IS_GUEST",
        domain=DOMAIN,
        violations=[("STATE", name, "the customer is a guest")],
    )


def check_etag(name: str, given: str, version: int) -> None:
    """AIP-154: a given etag must be the row's current one; ABORTED with the current etag if not."""
    if not domain.etag_matches(given, version):
        raise Aborted(
            f"{name} changed since it was read; read it again",
            current_etag=domain.etag(version),
            domain=DOMAIN,
        )


@dataclass(frozen=True)
class Rows(Generic[M]):
    """A table of versioned rows named ``<collection>/<id>``, and the resource a row becomes."""

    table: Table
    collection: str
    to_proto: Callable[[Any], M]

    async def row(self, session: AsyncSession, name: str, *, for_update: bool = False) -> Any:
        """The row ``name`` names; NOT_FOUND if there is none."""
        query = select(self.table).where(self.table.c.id == name.removeprefix(self.collection))
        row = (await session.execute(query.with_for_update() if for_update else query)).first()
        if row is None:
            raise NotFound(name, domain=DOMAIN)
        return row

    async def reload(self, session: AsyncSession, row_id: str) -> M:
        """The resource as it is now (after a change in this transaction)."""
        row = (await session.execute(select(self.table).where(self.table.c.id == row_id))).one()
        return self.to_proto(row)

    async def bump(self, session: AsyncSession, row_id: str, **values: Any) -> None:
        await store.bump(session, self.table, row_id, **values)


def with_changes(row: Any, **changes: Any) -> SimpleNamespace:
    """A row with some columns replaced, for building events from the state after an update."""
    return SimpleNamespace(**{**row._asdict(), **changes})


def identifier_key(
    check: Checker, field: str, key: resources_pb2.IdentifierKey, allowed: Collection[int]
) -> tuple[int, str] | None:
    """Validate and normalize an IdentifierKey; records violations on ``check``."""
    if not key.kind:
        check.fail(f"{field}.kind", "is required", "REQUIRED")
        return None
    if key.kind not in allowed:
        names = ", ".join(resources_pb2.IdentifierKind.Name(k) for k in sorted(allowed))  # type: ignore[arg-type]
        check.fail(f"{field}.kind", f"must be one of {names}", "UNSUPPORTED_IDENTIFIER_KIND")
        return None
    if not key.value.strip():
        check.fail(f"{field}.value", "is required", "REQUIRED")
        return None
    try:
        return key.kind, domain.normalize(key.kind, key.value)
    except domain.InvalidIdentifier as exc:
        check.fail(f"{field}.value", str(exc), "INVALID_IDENTIFIER")
        return None


def new_password(check: Checker, field: str, password: str) -> None:
    if not check.require(field, password):
        return
    problem = domain.password_problem(password)
    if problem is not None:
        check.fail(field, problem[1], problem[0])


def invalid_credentials() -> Unauthenticated:
    return Unauthenticated("invalid credentials", reason="INVALID_CREDENTIALS", domain=DOMAIN)


def customer_locked() -> OmniError:
    from omni_runtime.errors import PermissionDenied

    return PermissionDenied(
        "this account is locked; contact support or try again later", reason="CUSTOMER_LOCKED", domain=DOMAIN
    )


def too_many_attempts(until: datetime) -> ResourceExhausted:
    return ResourceExhausted(
        "too many failed attempts; try again later",
        reason="TOO_MANY_ATTEMPTS",
        domain=DOMAIN,
        metadata={"retry_after": until.isoformat(timespec="seconds")},
    )


class HandlerBase:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    # -- customers ----------------------------------------------------------------------------

    async def customer_proto(self, session: AsyncSession, row: Any) -> resources_pb2.Customer:
        email, phone = await store.primary_values(session, row.id)
        return convert.customer(row, email, phone)

    async def reload_customer(self, session: AsyncSession, customer_id: str) -> resources_pb2.Customer:
        row = await store.customer(session, customer_id)
        assert row is not None
        return await self.customer_proto(session, row)

    async def customer_row(
        self, session: AsyncSession, name: str, *, for_update: bool = False, usable: bool = False
    ) -> Any:
        """The customer named ``name``; NOT_FOUND when missing. With ``usable``, FAILED_PRECONDITION
        for erased and merged customers (nothing can change them any more)."""
        customer_id = name.removeprefix("customers/")
        row = await (store.customer_for_update if for_update else store.customer)(session, customer_id)
        if row is None:
            raise NotFound(name, domain=DOMAIN)
        if usable and row.state in (Customer.STATE_ERASED, Customer.STATE_MERGED):
            state = Customer.State.Name(row.state)
            raise FailedPrecondition(
                f"{name} is {state.removeprefix('STATE_').lower()}",
                reason="CUSTOMER_NOT_USABLE",
                domain=DOMAIN,
                violations=[("STATE", name, f"the customer is in state {state}")],
            )
        return row

    # -- guests -------------------------------------------------------------------------------

    async def guest_from_token(self, session: AsyncSession, token: str) -> str:
        """The id of the live guest an access or refresh token belongs to; INVALID_ARGUMENT otherwise."""
        bad = InvalidArgument(
            [FieldViolation("guest_token", "is not a live guest token", "INVALID_GUEST_TOKEN")]
        )
        subject = ""
        if domain.looks_like_jwt(token):
            try:
                principal = await self.d.verifier.verify(token)
            except Unauthenticated:
                raise bad from None
            if "guest" in principal.roles:
                subject = principal.subject
        else:
            row = await self.d.sessions.find_by_refresh_token(session, token)
            now = datetime.now(UTC)
            if (
                row is not None
                and row.state == SESSION_ACTIVE
                and row.rotated_time is None
                and row.token_expire_time > now
            ):
                subject = row.principal
        if not subject.startswith("customers/"):
            raise bad
        guest = await store.customer_for_update(session, subject.removeprefix("customers/"))
        if guest is None or guest.state != Customer.STATE_GUEST:
            raise bad
        return str(guest.id)

    async def merge_guest(self, session: AsyncSession, guest_id: str, target_id: str) -> None:
        """A guest logged into an existing account: its devices move, it becomes MERGED."""
        channel = current_channel.get()
        moved = (
            await session.execute(
                select(store.identifiers).where(store.identifiers.c.customer_id == guest_id).with_for_update()
            )
        ).all()
        for row in moved:
            await self.d.outbox.emit(session, events.identifier_unlinked(row, UNLINK.REASON_MOVED))
            await session.execute(
                update(store.identifiers)
                .where(store.identifiers.c.id == row.id)
                .values(customer_id=target_id, is_primary=False)
            )
            await self.d.outbox.emit(
                session, events.identifier_linked(with_changes(row, customer_id=target_id, is_primary=False))
            )
        await store.bump_customer(session, guest_id, state=Customer.STATE_MERGED, merged_into=target_id)
        await self.d.sessions.revoke_all(session, f"customers/{guest_id}", Reason.REASON_GUEST_MERGED)
        await self.d.outbox.emit(
            session, events.guest_upgraded(guest_id, target_id, merged=True, channel=channel)
        )

    def resolution(
        self, guest_id: str, customer_id: str, *, merged: bool
    ) -> identity_service_pb2.GuestResolution:
        return identity_service_pb2.GuestResolution(
            guest=f"customers/{guest_id}",
            customer=f"customers/{customer_id}",
            outcome=(
                identity_service_pb2.GuestResolution.OUTCOME_MERGED
                if merged
                else identity_service_pb2.GuestResolution.OUTCOME_UPGRADED
            ),
        )

    # -- identifiers --------------------------------------------------------------------------

    def identifier_values(
        self,
        customer_id: str,
        kind: int,
        value: str,
        *,
        verified: bool,
        primary: bool,
        linked_by: str,
        channel: ChannelInfo,
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "id": domain.new_id(),
            "customer_id": customer_id,
            "kind": kind,
            "value": value,
            "verified": verified,
            "is_primary": primary,
            "source_channel": channel.channel,
            "source_store": channel.store,
            "source_device": channel.device,
            "linked_by": linked_by,
            "create_time": now,
            "verify_time": now if verified else None,
        }

    async def claim_from(self, session: AsyncSession, holder: Any) -> None:
        """Take an unverified identifier away from its holder (a verified link wins)."""
        await session.execute(store.identifiers.delete().where(store.identifiers.c.id == holder.id))
        await self.d.outbox.emit(session, events.identifier_unlinked(holder, UNLINK.REASON_CLAIMED))

    async def make_primary(
        self, session: AsyncSession, customer_id: str, kind: int, identifier_id: str
    ) -> None:
        await session.execute(
            update(store.identifiers)
            .where(
                store.identifiers.c.customer_id == customer_id,
                store.identifiers.c.kind == kind,
                store.identifiers.c.id != identifier_id,
                store.identifiers.c.is_primary.is_(True),
            )
            .values(is_primary=False)
        )
        await session.execute(
            update(store.identifiers).where(store.identifiers.c.id == identifier_id).values(is_primary=True)
        )

    # -- one-time codes -----------------------------------------------------------------------

    async def issue_challenge(
        self,
        session: AsyncSession,
        *,
        purpose: int,
        kind: int,
        value: str,
        customer_id: str | None,
        real: bool,
        allow_registration: bool,
        language_code: str,
    ) -> resources_pb2.OneTimeCodeChallenge | OmniError:
        """Create a challenge and (when ``real``) publish its code; decoys look the same to callers."""
        now = datetime.now(UTC)
        config = self.d.config
        last = (
            await session.execute(
                select(store.challenges.c.resend_time)
                .where(
                    store.challenges.c.kind == kind,
                    store.challenges.c.value == value,
                    store.challenges.c.purpose == purpose,
                )
                .order_by(store.challenges.c.create_time.desc())
                .limit(1)
                .with_for_update()
            )
        ).first()
        if last is not None and last.resend_time > now:
            return ResourceExhausted(
                "a code was sent to this destination moments ago; wait before asking again",
                reason="ONE_TIME_CODE_RESEND_TOO_SOON",
                domain=DOMAIN,
                metadata={"resend_time": last.resend_time.isoformat(timespec="seconds")},
            )
        challenge_id = domain.new_challenge_id()
        code = domain.new_code()
        expire = now + timedelta(seconds=config.code_ttl)
        resend = now + timedelta(seconds=config.code_resend)
        await session.execute(
            store.challenges.insert().values(
                id=challenge_id,
                purpose=purpose,
                kind=kind,
                value=value,
                customer_id=customer_id,
                code_hash=domain.code_hash(challenge_id, code) if real else None,
                max_attempts=config.code_max_attempts,
                allow_registration=allow_registration,
                create_time=now,
                expire_time=expire,
                resend_time=resend,
            )
        )
        if real:
            await self.d.outbox.emit(
                session,
                events.one_time_code_issued(
                    challenge_id,
                    customer_id,
                    kind,
                    value,
                    code,
                    expire,
                    purpose,
                    language_code,
                    current_channel.get(),
                ),
            )
        metrics.ONE_TIME_CODES.labels("issued" if real else "decoy").inc()
        return resources_pb2.OneTimeCodeChallenge(
            challenge_id=challenge_id,
            masked_destination=domain.mask(kind, value),
            code_length=domain.CODE_LENGTH,
            expire_time=events.ts(expire),
            resend_time=events.ts(resend),
        )

    async def answer_challenge(
        self,
        session: AsyncSession,
        challenge_id: str,
        code: str,
        purpose: int,
        *,
        expect: tuple[str, int, str] | None = None,
        wrong: OmniError | None = None,
    ) -> Any | OmniError:
        """The challenge row when ``code`` answers it (it is then consumed); otherwise the error to
        raise after commit (a wrong code counts an attempt). ``expect``: the (customer id, kind,
        value) the challenge must be for; a challenge for anything else is answered as wrong."""
        row = (
            await session.execute(
                select(store.challenges).where(store.challenges.c.id == challenge_id).with_for_update()
            )
        ).first()
        wrong = wrong or Unauthenticated(
            "the code is wrong or has expired", reason="INVALID_ONE_TIME_CODE", domain=DOMAIN
        )
        now = datetime.now(UTC)
        foreign = expect is not None and row is not None and (row.customer_id, row.kind, row.value) != expect
        if row is None or row.purpose != purpose or row.consumed_time is not None:
            metrics.ONE_TIME_CODES.labels("wrong").inc()
            return wrong
        if row.expire_time <= now or row.attempts >= row.max_attempts:
            metrics.ONE_TIME_CODES.labels("expired" if row.expire_time <= now else "exhausted").inc()
            return wrong
        if foreign or not domain.same_code(row.code_hash, challenge_id, code):
            await session.execute(
                update(store.challenges)
                .where(store.challenges.c.id == challenge_id)
                .values(attempts=store.challenges.c.attempts + 1)
            )
            metrics.ONE_TIME_CODES.labels("wrong").inc()
            return wrong
        await session.execute(
            update(store.challenges).where(store.challenges.c.id == challenge_id).values(consumed_time=now)
        )
        metrics.ONE_TIME_CODES.labels("verified").inc()
        return row

    # -- failed log-ins -----------------------------------------------------------------------

    async def throttled_until(self, session: AsyncSession, key: bytes) -> datetime | None:
        row = await store.throttle_row(session, key)
        now = datetime.now(UTC)
        if row is not None and row.blocked_until is not None and row.blocked_until > now:
            return row.blocked_until  # type: ignore[no-any-return]
        return None

    async def count_failure(self, session: AsyncSession, key: bytes, account: Any | None = None) -> None:
        """One failed log-in: the identifier's throttle, and the account's lock counter."""
        now = datetime.now(UTC)
        policy = self.d.config.lockout
        await store.record_throttle_failure(session, key, lambda n: policy.throttle_until(n, now), now)
        if account is not None:
            table, ident = account
            row = (
                await session.execute(
                    update(table)
                    .where(table.c.id == ident)
                    .values(failed_logins=table.c.failed_logins + 1)
                    .returning(table.c.failed_logins)
                )
            ).one()
            until = policy.lock_until(int(row.failed_logins), now)
            if until is not None:
                await session.execute(update(table).where(table.c.id == ident).values(locked_until=until))
