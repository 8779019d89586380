"""Sessions, refresh-token rotation with reuse detection, and access-token issuance.

A session is one refresh-token family. Each RefreshToken call marks the presented token
rotated and adds a new one; only the newest works. Presenting a rotated token again means two
parties hold the family (a stolen token, or a client bug), and since the server cannot tell
which one is legitimate it revokes the whole session: both must log in again.

Access tokens carry the principal's roles as they are at issue time; roles are re-read at
every refresh, so a staff member's role change applies within one access-token lifetime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2, resources_pb2
from omni_runtime.auth.tokens import issue_token
from omni_runtime.context import ChannelInfo, channel_name
from omni_runtime.errors import OmniError, Unauthenticated
from omni_runtime.events.outbox import Outbox
from omni_runtime.metrics import initialise
from services.identity import domain, metrics, store
from services.identity.config import IdentityConfig
from services.identity.events import session_revoked, session_started, ts
from services.identity.keys import KeyRing

ACTIVE = resources_pb2.Session.STATE_ACTIVE
REVOKED = resources_pb2.Session.STATE_REVOKED
Reason = events_pb2.SessionRevokedEvent.Reason

DOMAIN = "omni.identity"
_REASON_LABELS = {
    value.number: value.name.removeprefix("REASON_").lower()
    for value in events_pb2.SessionRevokedEvent.Reason.DESCRIPTOR.values
}
initialise(metrics.SESSIONS_REVOKED, [(label,) for label in (*_REASON_LABELS.values(), "other")])


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a token is for, as of now."""

    name: str
    roles: tuple[str, ...]
    store: str = ""
    guest: bool = False


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the gateway tells about the end user's client (informational, for ListSessions)."""

    user_agent: str = ""
    ip_address: str = ""


def session_name(principal: str, session_id: str) -> str:
    return f"{principal}/sessions/{session_id}"


def split_session_name(name: str) -> tuple[str, str]:
    principal, _, session_id = name.rpartition("/sessions/")
    return principal, session_id


def customer_subject(row: Any) -> Subject | None:
    """The token subject of a customer row; None when it may not hold a session."""
    if row is None:
        return None
    name = f"customers/{row.id}"
    if row.state == resources_pb2.Customer.STATE_GUEST:
        return Subject(name, ("guest",), guest=True)
    if row.state == resources_pb2.Customer.STATE_ACTIVE:
        return Subject(name, ("customer",))
    return None


def staff_subject(row: Any) -> Subject | None:
    if row is None or row.state != resources_pb2.StaffMember.STATE_ACTIVE:
        return None
    return Subject(f"staffMembers/{row.id}", tuple(sorted(row.roles)), store=row.store or "")


async def load_subject(session: AsyncSession, principal: str) -> Subject | None:
    """The current subject for a session's principal (None: it may no longer hold sessions)."""
    collection, _, ident = principal.partition("/")
    if collection == "customers":
        return customer_subject(await store.customer(session, ident))
    if collection == "staffMembers":
        row = (
            await session.execute(select(store.staff_members).where(store.staff_members.c.id == ident))
        ).first()
        return staff_subject(row)
    return None


def duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


class SessionManager:
    def __init__(self, keyring: KeyRing, config: IdentityConfig, outbox: Outbox) -> None:
        self.keyring = keyring
        self.config = config
        self.outbox = outbox

    # -- tokens -------------------------------------------------------------------------------

    def access_token(
        self, subject: Subject, *, session: str, channel: str, ttl: int, kind: str = "access"
    ) -> tuple[str, datetime]:
        now = time.time()
        token = issue_token(
            self.keyring.current(),
            subject=subject.name,
            roles=subject.roles,
            ttl_seconds=ttl,
            store=subject.store,
            session=session,
            channel=channel,
            now=now,
        )
        metrics.TOKENS_ISSUED.labels(kind).inc()
        return token, datetime.fromtimestamp(int(now) + ttl, UTC)

    def auth_token(
        self,
        subject: Subject,
        *,
        session: str = "",
        channel: str = "",
        refresh_token: str = "",
        refresh_expire: datetime | None = None,
        ttl: int | None = None,
        kind: str = "access",
    ) -> resources_pb2.AuthToken:
        lifetime = ttl or self.config.access_token_ttl
        access, expire = self.access_token(subject, session=session, channel=channel, ttl=lifetime, kind=kind)
        out = resources_pb2.AuthToken(
            access_token=access,
            token_type="Bearer",  # noqa: S106 - the token scheme, not a secret
            expires_in=duration(lifetime),
            expire_time=ts(expire),
            refresh_token=refresh_token,
            principal=subject.name,
            roles=domain.role_values(subject.roles),  # type: ignore[arg-type]
            session=session,
            guest=subject.guest,
            store=subject.store,
        )
        if refresh_expire is not None:
            out.refresh_token_expire_time.CopyFrom(ts(refresh_expire))
        return out

    def refresh_ttl(self, principal: str) -> timedelta:
        staff = principal.startswith("staffMembers/")
        return timedelta(
            seconds=self.config.staff_refresh_token_ttl if staff else self.config.refresh_token_ttl
        )

    # -- sessions -----------------------------------------------------------------------------

    async def open(
        self,
        session: AsyncSession,
        subject: Subject,
        auth_method: int,
        channel: ChannelInfo,
        client: ClientInfo,
    ) -> resources_pb2.AuthToken:
        """Open a session for ``subject`` and return its first token pair."""
        now = datetime.now(UTC)
        session_id = domain.new_id()
        refresh = domain.new_refresh_token()
        expire = now + self.refresh_ttl(subject.name)
        await session.execute(
            store.sessions.insert().values(
                id=session_id,
                principal=subject.name,
                state=ACTIVE,
                auth_method=auth_method,
                channel=channel.channel,
                store=channel.store,
                device=channel.device,
                user_agent=client.user_agent[:512],
                ip_address=client.ip_address[:64],
                create_time=now,
                last_refresh_time=now,
                expire_time=expire,
            )
        )
        await session.execute(
            store.refresh_tokens.insert().values(
                token_hash=domain.token_hash(refresh),
                session_id=session_id,
                create_time=now,
                expire_time=expire,
            )
        )
        metrics.TOKENS_ISSUED.labels("refresh").inc()
        name = session_name(subject.name, session_id)
        await self.outbox.emit(
            session, session_started(name, subject.name, auth_method, channel, guest=subject.guest)
        )
        return self.auth_token(
            subject,
            session=name,
            channel=channel_name(channel.channel) if channel.channel else "",
            refresh_token=refresh,
            refresh_expire=expire,
        )

    async def find_by_refresh_token(self, session: AsyncSession, token: str) -> Any:
        """The token row joined with its session, locked; None when unknown."""
        return (
            await session.execute(
                select(
                    store.refresh_tokens.c.token_hash,
                    store.refresh_tokens.c.expire_time.label("token_expire_time"),
                    store.refresh_tokens.c.rotated_time,
                    store.sessions,
                )
                .join(store.sessions, store.sessions.c.id == store.refresh_tokens.c.session_id)
                .where(store.refresh_tokens.c.token_hash == domain.token_hash(token))
                # Both rows locked: a concurrent rotation of the same token is seen once the lock
                # is granted (PostgreSQL re-reads locked rows only).
                .with_for_update()
            )
        ).first()

    async def refresh(self, session: AsyncSession, token: str) -> resources_pb2.AuthToken | OmniError:
        """Rotate ``token``. Failures that changed state (reuse revokes the session) are
        returned, to raise after commit."""
        row = await self.find_by_refresh_token(session, token)
        now = datetime.now(UTC)
        if row is None:
            return Unauthenticated(
                "the refresh token is not valid", reason="INVALID_REFRESH_TOKEN", domain=DOMAIN
            )
        if row.state != ACTIVE:
            return Unauthenticated(
                "the session of this refresh token has ended", reason="SESSION_REVOKED", domain=DOMAIN
            )
        if row.rotated_time is not None:
            metrics.REFRESH_TOKEN_REUSE.inc()
            await self.revoke(session, row, Reason.REASON_REFRESH_TOKEN_REUSED)
            return Unauthenticated(
                "this refresh token was already used; the session has been revoked",
                reason="REFRESH_TOKEN_REUSED",
                domain=DOMAIN,
            )
        if row.token_expire_time <= now:
            return Unauthenticated(
                "the refresh token has expired", reason="REFRESH_TOKEN_EXPIRED", domain=DOMAIN
            )
        subject = await load_subject(session, row.principal)
        if subject is None:
            await self.revoke(session, row, Reason.REASON_PRINCIPAL_DISABLED)
            return Unauthenticated(
                "the session's principal can no longer log in", reason="SESSION_REVOKED", domain=DOMAIN
            )
        refresh = domain.new_refresh_token()
        expire = now + self.refresh_ttl(row.principal)
        await session.execute(
            update(store.refresh_tokens)
            .where(store.refresh_tokens.c.token_hash == row.token_hash)
            .values(rotated_time=now)
        )
        await session.execute(
            store.refresh_tokens.insert().values(
                token_hash=domain.token_hash(refresh), session_id=row.id, create_time=now, expire_time=expire
            )
        )
        await session.execute(
            update(store.sessions)
            .where(store.sessions.c.id == row.id)
            .values(last_refresh_time=now, expire_time=expire)
        )
        metrics.TOKENS_ISSUED.labels("refresh").inc()
        return self.auth_token(
            subject,
            session=session_name(row.principal, row.id),
            channel=channel_name(row.channel) if row.channel else "",
            refresh_token=refresh,
            refresh_expire=expire,
        )

    async def revoke(self, session: AsyncSession, row: Any, reason: int) -> bool:
        """Revoke one session row (locked by the caller); False when it was already revoked."""
        if row.state != ACTIVE:
            return False
        await session.execute(
            update(store.sessions)
            .where(store.sessions.c.id == row.id, store.sessions.c.state == ACTIVE)
            .values(state=REVOKED, revoke_time=datetime.now(UTC), revoke_reason=reason)
        )
        await self.outbox.emit(
            session, session_revoked(session_name(row.principal, row.id), row.principal, reason)
        )
        metrics.SESSIONS_REVOKED.labels(_REASON_LABELS.get(reason, "other")).inc()
        return True

    async def revoke_all(self, session: AsyncSession, principal: str, reason: int, *, keep: str = "") -> int:
        count = 0
        for row in await store.active_sessions_of(session, principal):
            if row.id != keep and await self.revoke(session, row, reason):
                count += 1
        return count

    def to_proto(self, row: Any) -> resources_pb2.Session:
        state = row.state
        if state == ACTIVE and row.expire_time <= datetime.now(UTC):
            state = resources_pb2.Session.STATE_EXPIRED
        out = resources_pb2.Session(
            name=session_name(row.principal, row.id),
            state=state,
            auth_method=row.auth_method,
            user_agent=row.user_agent,
            ip_address=row.ip_address,
            create_time=ts(row.create_time),
            last_refresh_time=ts(row.last_refresh_time),
            expire_time=ts(row.expire_time),
        )
        out.channel.channel = row.channel
        out.channel.store = row.store
        out.channel.device = row.device
        if row.revoke_time is not None:
            out.revoke_time.CopyFrom(ts(row.revoke_time))
        return out
