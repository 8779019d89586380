"""Sessions: list, revoke one, log out with a refresh token, log out everywhere."""

from __future__ import annotations

import grpc

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.db.engine import Database
from tests.identity.conftest import (
    PASSWORD,
    Stub,
    auth,
    email,
    email_key,
    events_of,
    expect,
    register,
    violations,
)

Session = resources_pb2.Session
Admin = tuple[tuple[str, str], ...]


async def sessions_of(stub: Stub, address: str, count: int) -> list[resources_pb2.AuthToken]:
    first = await register(stub, address)
    tokens = [first.token]
    for _ in range(count - 1):
        reply = await stub.Login(
            pb.LoginRequest(identifier=email_key(address), password=PASSWORD),
            metadata=(("x-omni-channel", "web"), ("x-forwarded-for", "203.0.113.7, 10.0.0.1")),
        )
        tokens.append(reply.token)
    return tokens


async def test_list_sessions_shows_active_ones_newest_first(stub: Stub) -> None:
    tokens = await sessions_of(stub, email(), 3)
    parent = tokens[0].principal
    listed = await stub.ListSessions(pb.ListSessionsRequest(parent=parent), metadata=auth(tokens[0]))
    assert [s.name for s in listed.sessions] == [t.session for t in reversed(tokens)]
    newest = listed.sessions[0]
    assert newest.state == Session.STATE_ACTIVE and newest.auth_method == resources_pb2.AUTH_METHOD_PASSWORD
    assert newest.ip_address == "203.0.113.7" and newest.channel.channel == 1  # CHANNEL_WEB
    page = await stub.ListSessions(
        pb.ListSessionsRequest(parent=parent, page_size=2), metadata=auth(tokens[0])
    )
    assert len(page.sessions) == 2 and page.next_page_token
    rest = await stub.ListSessions(
        pb.ListSessionsRequest(parent=parent, page_size=2, page_token=page.next_page_token),
        metadata=auth(tokens[0]),
    )
    assert len(rest.sessions) == 1 and not rest.next_page_token


async def test_every_new_session_publishes_session_started_with_its_channel(stub: Stub, db: Database) -> None:
    tokens = await sessions_of(stub, email(), 2)
    started = {e.session: e for e in await events_of(db, events_pb2.SessionStartedEvent)}
    login = started[tokens[1].session]
    assert login.principal == tokens[1].principal and not login.guest
    assert login.auth_method == resources_pb2.AUTH_METHOD_PASSWORD
    assert login.channel.channel == 1 and login.HasField("occur_time")  # CHANNEL_WEB
    assert tokens[0].session in started  # registration opens a session too
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=tokens[1].refresh_token))
    again = [e for e in await events_of(db, events_pb2.SessionStartedEvent) if e.principal == login.principal]
    assert len(again) == 2  # a refresh continues a session: nothing new is published


async def test_revoke_one_session(stub: Stub, db: Database) -> None:
    tokens = await sessions_of(stub, email(), 2)
    revoked = await stub.RevokeSession(
        pb.RevokeSessionRequest(name=tokens[1].session), metadata=auth(tokens[0])
    )
    assert revoked.state == Session.STATE_REVOKED and revoked.HasField("revoke_time")
    again = await stub.RevokeSession(
        pb.RevokeSessionRequest(name=tokens[1].session), metadata=auth(tokens[0])
    )
    assert again.state == Session.STATE_REVOKED  # revoking a revoked session changes nothing
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=tokens[1].refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_REVOKED",
    )
    listed = await stub.ListSessions(
        pb.ListSessionsRequest(parent=tokens[0].principal, filter="state = STATE_REVOKED"),
        metadata=auth(tokens[0]),
    )
    assert [s.name for s in listed.sessions] == [tokens[1].session]
    events = [
        e for e in await events_of(db, events_pb2.SessionRevokedEvent) if e.session == tokens[1].session
    ]
    assert [e.reason for e in events] == [events_pb2.SessionRevokedEvent.REASON_LOGOUT]
    await expect(
        stub.RevokeSession(
            pb.RevokeSessionRequest(name=f"{tokens[0].principal}/sessions/nope"), metadata=auth(tokens[0])
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_logout_with_the_refresh_token(stub: Stub) -> None:
    token = (await register(stub)).token
    await stub.Logout(pb.LogoutRequest(refresh_token=token.refresh_token))
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=token.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await stub.Logout(pb.LogoutRequest(refresh_token=token.refresh_token))  # again: nothing to say
    await stub.Logout(pb.LogoutRequest(refresh_token="ort_unknown"))
    await expect(stub.Logout(pb.LogoutRequest()), grpc.StatusCode.INVALID_ARGUMENT)


async def test_revoke_all_sessions_except_the_current_one(stub: Stub, db: Database) -> None:
    tokens = await sessions_of(stub, email(), 3)
    parent = tokens[0].principal
    reply = await stub.RevokeAllSessions(
        pb.RevokeAllSessionsRequest(parent=parent, except_session=tokens[0].session), metadata=auth(tokens[0])
    )
    assert reply.revoked_count == 2
    listed = await stub.ListSessions(pb.ListSessionsRequest(parent=parent), metadata=auth(tokens[0]))
    assert [s.name for s in listed.sessions] == [tokens[0].session]
    events = [e for e in await events_of(db, events_pb2.SessionRevokedEvent) if e.principal == parent]
    assert {e.reason for e in events} == {events_pb2.SessionRevokedEvent.REASON_LOGOUT_ALL}
    other = (await register(stub)).token
    err = await expect(
        stub.RevokeAllSessions(
            pb.RevokeAllSessionsRequest(parent=parent, except_session=other.session), metadata=auth(tokens[0])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("except_session", "INVALID_NAME")}


async def test_customers_cannot_touch_other_customers_sessions(stub: Stub) -> None:
    mine, theirs = (await register(stub)).token, (await register(stub)).token
    for call in (
        stub.ListSessions(pb.ListSessionsRequest(parent=theirs.principal), metadata=auth(mine)),
        stub.RevokeSession(pb.RevokeSessionRequest(name=theirs.session), metadata=auth(mine)),
        stub.RevokeAllSessions(pb.RevokeAllSessionsRequest(parent=theirs.principal), metadata=auth(mine)),
    ):
        await expect(call, grpc.StatusCode.PERMISSION_DENIED, "NOT_OWNER")


async def test_session_list_input_is_validated(stub: Stub, admin: Admin) -> None:
    err = await expect(
        stub.ListSessions(pb.ListSessionsRequest(parent="carts/x"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("parent", "INVALID_NAME")}
    err = await expect(
        stub.ListSessions(pb.ListSessionsRequest(parent="customers/x", order_by="colour"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("order_by", "INVALID_ORDER_BY")}
    await expect(
        stub.ListSessions(pb.ListSessionsRequest(parent="customers/nobody"), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
