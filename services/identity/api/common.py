"""What every identity handler shares: its dependencies, AIP-155 transactions, call details.

Handlers validate the request, then run one ``transact`` body: the change of an AIP-155
``idempotency.once`` (a repeated request id gets the stored response). A body may *return* an
OmniError instead of raising it when the failure itself must be committed (a counted failed
log-in, a revoked session after refresh-token reuse); it is committed and then raised.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError

from omni_runtime.auth.tokens import TokenVerifier
from omni_runtime.context import current_principal
from omni_runtime.db.engine import Database
from omni_runtime.db.idempotency import Work, once
from omni_runtime.errors import Aborted
from omni_runtime.events.outbox import Outbox
from omni_runtime.listing import Listing
from services.identity.config import IdentityConfig
from services.identity.keys import KeyRing
from services.identity.passwords import Passwords
from services.identity.sessions import ClientInfo, SessionManager

M = TypeVar("M", bound=Message)

DOMAIN = "omni.identity"
# Identity's List methods: its domain, at most 200 per page.
identity_listing = functools.partial(Listing, domain=DOMAIN, max_page_size=200)


@dataclass
class Deps:
    db: Database
    outbox: Outbox
    config: IdentityConfig
    keyring: KeyRing
    passwords: Passwords
    sessions: SessionManager
    verifier: TokenVerifier


def scope(method: str, *, per_caller: bool = True) -> str:
    """Idempotency scope: per method, and per caller for authenticated methods (so two callers'
    request ids never collide); public methods rely on the request fingerprint instead."""
    if not per_caller:
        return f"identity.{method}"
    return f"identity.{method}:{current_principal.get().subject}"


async def transact(
    db: Database, scope_name: str, request: Message, response_type: type[M], body: Work[M]
) -> M:
    """``omni_runtime.db.idempotency.once`` for the request's ``request_id`` (if it has one).

    A unique constraint that a concurrent *different* request won (two registrations of one
    e-mail address) surfaces as an IntegrityError at the insert or the commit; the caller gets
    ABORTED (retry: it will then see the winner's row and get the precise error) rather than
    INTERNAL.
    """
    try:
        return await once(db, scope_name, getattr(request, "request_id", ""), request, response_type, body)
    except IntegrityError:
        raise Aborted(
            "the change conflicted with a concurrent one; retry", reason="CONFLICT", domain=DOMAIN
        ) from None


def client_info(context: grpc.aio.ServicerContext) -> ClientInfo:
    """User agent and IP as forwarded by the gateway; the peer address otherwise."""
    meta = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    agent = meta.get("x-forwarded-user-agent", "")
    forwarded = meta.get("x-forwarded-for", "").split(",")[0].strip()
    if not forwarded:
        peer = context.peer() or ""
        kind, _, rest = peer.partition(":")
        if kind == "ipv4":
            forwarded = rest.rsplit(":", 1)[0]
        elif kind == "ipv6":
            forwarded = rest.rsplit(":", 1)[0].strip("[]")
    return ClientInfo(user_agent=agent, ip_address=forwarded)
