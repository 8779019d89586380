"""Registration, password log-in, lock-out and back-off, one-time codes, refresh, password change."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import grpc
import jwt
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.db.engine import Database
from services.identity import store
from tests.identity.conftest import (
    PASSWORD,
    Stub,
    auth,
    code_of,
    email,
    email_key,
    events_of,
    expect,
    phone,
    phone_key,
    register,
    rpc_error,
    violations,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def identity_overrides() -> dict[str, str]:
    # Low limits so the back-off and the account lock are reachable in a few calls.
    return {"login_throttle_after": "3", "login_lock_after": "5", "one_time_code_max_attempts": "3"}


def login(address: str, password: str = PASSWORD, **kw: object) -> pb.LoginRequest:
    return pb.LoginRequest(identifier=email_key(address), password=password, **kw)  # type: ignore[arg-type]


def hash_verifications() -> float:
    return (
        REGISTRY.get_sample_value("omni_identity_password_hash_seconds_count", {"operation": "verify"}) or 0.0
    )


# --- RegisterCustomer ------------------------------------------------------------------------


async def test_register_with_email_opens_a_session_and_announces_the_customer(
    stub: Stub, db: Database
) -> None:
    address = email()
    reply = await register(stub, f"  {address.upper()} ", display_name="Ana Pop")
    customer = reply.customer
    assert customer.state == resources_pb2.Customer.STATE_ACTIVE
    assert customer.primary_email == address  # normalized: trimmed and lower-cased
    assert customer.has_password and customer.display_name == "Ana Pop"
    token = reply.token
    assert token.principal == customer.name and list(token.roles) == [resources_pb2.ROLE_CUSTOMER]
    assert token.expires_in.seconds == 900 and token.refresh_token.startswith("ort_")
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert (
        claims["sub"] == customer.name and claims["roles"] == ["customer"] and claims["sid"] == token.session
    )
    assert claims["exp"] - claims["iat"] == 900
    # The new token works at once against identity itself.
    got = await stub.GetCustomer(pb.GetCustomerRequest(name=customer.name), metadata=auth(token))
    assert got.name == customer.name
    registered = [
        e for e in await events_of(db, events_pb2.CustomerRegisteredEvent) if e.customer == customer.name
    ]
    assert len(registered) == 1 and not registered[0].verified and not registered[0].upgraded_from_guest
    assert [(k.kind, k.value) for k in registered[0].identifiers] == [
        (resources_pb2.IDENTIFIER_KIND_EMAIL, address)
    ]
    linked = [e for e in await events_of(db, events_pb2.IdentifierLinkedEvent) if e.customer == customer.name]
    assert len(linked) == 1 and linked[0].value == address


async def test_register_with_phone_normalizes_to_e164(stub: Stub) -> None:
    raw = "0040 (721) 234-567"
    reply = await register(stub, identifier=phone_key(raw))
    assert reply.customer.primary_phone == "+40721234567"


@pytest.mark.parametrize(
    ("key", "password", "expected"),
    [
        (email_key("not-an-email"), PASSWORD, {("identifier.value", "INVALID_IDENTIFIER")}),
        (phone_key("+0712"), PASSWORD, {("identifier.value", "INVALID_IDENTIFIER")}),
        (
            resources_pb2.IdentifierKey(kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value="ABC123"),
            PASSWORD,
            {("identifier.kind", "UNSUPPORTED_IDENTIFIER_KIND")},
        ),
        (resources_pb2.IdentifierKey(), "", {("identifier.kind", "REQUIRED"), ("password", "REQUIRED")}),
        (email_key("a@example.com"), "short", {("password", "PASSWORD_TOO_SHORT")}),
        (email_key("a@example.com"), "password123", {("password", "PASSWORD_BREACHED")}),
    ],
)
async def test_register_rejects_bad_input_with_every_violation(
    stub: Stub, key: resources_pb2.IdentifierKey, password: str, expected: set[tuple[str, str]]
) -> None:
    err = await expect(
        stub.RegisterCustomer(pb.RegisterCustomerRequest(identifier=key, password=password)), INVALID
    )
    assert violations(err) == expected


async def test_register_rejects_a_request_id_that_is_not_a_uuid(stub: Stub) -> None:
    err = await expect(register(stub, request_id="twice"), INVALID)
    assert ("request_id", "INVALID_REQUEST_ID") in violations(err)


async def test_register_an_identifier_someone_holds_is_already_exists(stub: Stub) -> None:
    address = email()
    await register(stub, address)
    await expect(register(stub, address.upper()), grpc.StatusCode.ALREADY_EXISTS, "IDENTIFIER_ALREADY_LINKED")


async def test_register_retry_with_the_same_request_id_returns_the_first_result(stub: Stub) -> None:
    request_id = str(uuid.uuid4())
    address = email()
    first = await register(stub, address, request_id=request_id)
    again = await register(stub, address, request_id=request_id)
    assert again == first
    # The same id for a different request is refused rather than answered with someone else's result.
    err = await expect(register(stub, email(), request_id=request_id), INVALID)
    assert ("request_id", "REQUEST_ID_REUSED") in violations(err)


async def test_concurrent_registrations_of_one_email_exactly_one_wins(
    identity_settings: object, identity: object
) -> None:
    """Twenty real clients on their own connections race to register the same address."""
    address = email()
    target = identity.target  # type: ignore[attr-defined]
    channels = [grpc.aio.insecure_channel(target) for _ in range(20)]
    try:
        results = await asyncio.gather(
            *(register(Stub(ch), address) for ch in channels), return_exceptions=True
        )
    finally:
        for ch in channels:
            await ch.close()
    winners = [r for r in results if isinstance(r, pb.RegisterCustomerResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1, results
    assert len(losers) == 19 and {e.code() for e in losers} == {grpc.StatusCode.ALREADY_EXISTS}
    stub = Stub(channels[0])
    async with grpc.aio.insecure_channel(target) as ch:
        stub = Stub(ch)
        reply = await stub.Login(login(address))
        assert reply.customer.name == winners[0].customer.name


# --- Login -----------------------------------------------------------------------------------


async def test_login_opens_a_new_session(stub: Stub) -> None:
    address = email()
    registered = await register(stub, address)
    reply = await stub.Login(login(address.upper()))
    assert reply.customer.name == registered.customer.name
    assert reply.token.session != registered.token.session


async def test_wrong_password_and_unknown_account_are_indistinguishable(stub: Stub) -> None:
    address = email()
    await register(stub, address)
    wrong = await expect(
        stub.Login(login(address, "not the password")), UNAUTHENTICATED, "INVALID_CREDENTIALS"
    )
    before = hash_verifications()
    unknown = await expect(stub.Login(login(email())), UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert wrong.details() == unknown.details() == "invalid credentials"
    # The unknown account still cost one Argon2 verification (against a dummy hash).
    assert hash_verifications() == before + 1


async def test_repeated_failures_back_off_known_and_unknown_identifiers_alike(stub: Stub) -> None:
    known = email()
    await register(stub, known)
    for address in (known, email()):
        for _ in range(3):
            await expect(
                stub.Login(login(address, "wrong password!")), UNAUTHENTICATED, "INVALID_CREDENTIALS"
            )
        err = await expect(
            stub.Login(login(address)), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS"
        )
        assert err.details() == "too many failed attempts; try again later"


async def test_failures_across_identifiers_lock_the_account_which_only_the_right_password_learns(
    stub: Stub, admin: tuple[tuple[str, str], ...]
) -> None:
    address, number = email(), phone()
    registered = await register(stub, address)
    customer = registered.customer.name
    await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(parent=customer, identifier=phone_key(number)),
        metadata=auth(registered.token),
    )
    for _ in range(3):  # the e-mail is now backed off
        await expect(stub.Login(login(address, "wrong password!")), UNAUTHENTICATED)
    for _ in range(2):  # five failures on the account: locked
        await expect(
            stub.Login(pb.LoginRequest(identifier=phone_key(number), password="wrong password!")),
            UNAUTHENTICATED,
        )
    got = await stub.GetCustomer(pb.GetCustomerRequest(name=customer), metadata=admin)
    assert got.state == resources_pb2.Customer.STATE_LOCKED
    await expect(
        stub.Login(pb.LoginRequest(identifier=phone_key(number), password=PASSWORD)),
        grpc.StatusCode.PERMISSION_DENIED,
        "CUSTOMER_LOCKED",
    )
    unlocked = await stub.UnlockCustomer(pb.UnlockCustomerRequest(name=customer), metadata=admin)
    assert unlocked.state == resources_pb2.Customer.STATE_ACTIVE
    reply = await stub.Login(pb.LoginRequest(identifier=phone_key(number), password=PASSWORD))
    assert reply.customer.name == customer


async def test_login_retry_with_request_id_returns_the_same_session(stub: Stub) -> None:
    address = email()
    await register(stub, address)
    request_id = str(uuid.uuid4())
    first, second = await asyncio.gather(
        stub.Login(login(address, request_id=request_id)), stub.Login(login(address, request_id=request_id))
    )
    assert first.token == second.token


async def test_login_input_is_validated(stub: Stub) -> None:
    err = await expect(stub.Login(pb.LoginRequest(identifier=email_key("nope"))), INVALID)
    assert violations(err) == {("identifier.value", "INVALID_IDENTIFIER"), ("password", "REQUIRED")}


# --- one-time codes --------------------------------------------------------------------------


async def verified_customer(stub: Stub, db: Database) -> tuple[pb.RegisterCustomerResponse, str]:
    """A customer whose e-mail was proven with a one-time code (StartIdentifierVerification)."""
    address = email()
    reply = await register(stub, address)
    challenge = await stub.StartIdentifierVerification(
        pb.StartIdentifierVerificationRequest(parent=reply.customer.name, identifier=email_key(address)),
        metadata=auth(reply.token),
    )
    linked = await stub.LinkIdentifier(
        pb.LinkIdentifierRequest(
            parent=reply.customer.name,
            identifier=email_key(address),
            proof=pb.IdentifierProof(
                one_time_code=pb.IdentifierProof.OneTimeCode(
                    challenge_id=challenge.challenge_id, code=await code_of(db, challenge.challenge_id)
                )
            ),
        ),
        metadata=auth(reply.token),
    )
    assert linked.verified and linked.primary
    return reply, address


async def test_one_time_code_login_to_a_verified_email(
    stub: Stub, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    registered, address = await verified_customer(stub, db)
    with caplog.at_level(logging.DEBUG):
        challenge = await stub.StartOneTimeCodeLogin(
            pb.StartOneTimeCodeLoginRequest(destination=email_key(address))
        )
    assert challenge.code_length == 6 and challenge.masked_destination.endswith("@example.com")
    assert address not in challenge.masked_destination
    code = await code_of(db, challenge.challenge_id)
    assert code not in caplog.text  # the code travels only in the event, never in a log
    issued = [
        e
        for e in await events_of(db, events_pb2.OneTimeCodeIssuedEvent)
        if e.challenge_id == challenge.challenge_id
    ]
    assert issued[0].customer == registered.customer.name
    assert issued[0].purpose == resources_pb2.ONE_TIME_CODE_PURPOSE_LOGIN
    reply = await stub.VerifyOneTimeCode(
        pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code=code)
    )
    assert reply.customer.name == registered.customer.name and not reply.registered
    # A code works once.
    await expect(
        stub.VerifyOneTimeCode(pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code=code)),
        UNAUTHENTICATED,
        "INVALID_ONE_TIME_CODE",
    )
    # Asking again at once is refused until resend_time, for known and unknown destinations alike.
    await expect(
        stub.StartOneTimeCodeLogin(pb.StartOneTimeCodeLoginRequest(destination=email_key(address))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ONE_TIME_CODE_RESEND_TOO_SOON",
    )


async def test_unknown_or_unverified_destinations_get_a_decoy_challenge(stub: Stub, db: Database) -> None:
    unverified = email()
    await register(stub, unverified)  # holds the address, but unverified: no codes to it
    before = len(await events_of(db, events_pb2.OneTimeCodeIssuedEvent))
    for address in (unverified, email()):
        challenge = await stub.StartOneTimeCodeLogin(
            pb.StartOneTimeCodeLoginRequest(destination=email_key(address))
        )
        assert challenge.challenge_id and challenge.code_length == 6
        await expect(
            stub.VerifyOneTimeCode(
                pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code="000000")
            ),
            UNAUTHENTICATED,
            "INVALID_ONE_TIME_CODE",
        )
        await expect(
            stub.StartOneTimeCodeLogin(pb.StartOneTimeCodeLoginRequest(destination=email_key(address))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
    assert len(await events_of(db, events_pb2.OneTimeCodeIssuedEvent)) == before


async def test_one_time_code_registration_creates_a_verified_customer(stub: Stub, db: Database) -> None:
    number = phone()
    challenge = await stub.StartOneTimeCodeLogin(
        pb.StartOneTimeCodeLoginRequest(
            destination=phone_key(number), allow_registration=True, language_code="ro-RO"
        )
    )
    code = await code_of(db, challenge.challenge_id)
    reply = await stub.VerifyOneTimeCode(
        pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code=code, display_name="Ion")
    )
    assert reply.registered and reply.customer.primary_phone == number and not reply.customer.has_password
    registered = [
        e
        for e in await events_of(db, events_pb2.CustomerRegisteredEvent)
        if e.customer == reply.customer.name
    ]
    assert registered[0].verified and registered[0].display_name == "Ion"


async def test_wrong_codes_void_the_challenge_after_the_attempt_limit(stub: Stub, db: Database) -> None:
    _, address = await verified_customer(stub, db)
    challenge = await stub.StartOneTimeCodeLogin(
        pb.StartOneTimeCodeLoginRequest(destination=email_key(address))
    )
    code = await code_of(db, challenge.challenge_id)
    wrong = "111111" if code != "111111" else "222222"
    for _ in range(3):
        await expect(
            stub.VerifyOneTimeCode(
                pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code=wrong)
            ),
            UNAUTHENTICATED,
            "INVALID_ONE_TIME_CODE",
        )
    await expect(
        stub.VerifyOneTimeCode(pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code=code)),
        UNAUTHENTICATED,
        "INVALID_ONE_TIME_CODE",
    )


async def test_an_expired_code_is_refused(stub: Stub, db: Database) -> None:
    _, address = await verified_customer(stub, db)
    challenge = await stub.StartOneTimeCodeLogin(
        pb.StartOneTimeCodeLoginRequest(destination=email_key(address))
    )
    code = await code_of(db, challenge.challenge_id)
    async with db.transaction() as session:  # ten minutes pass
        await session.execute(
            store.challenges.update()
            .where(store.challenges.c.id == challenge.challenge_id)
            .values(expire_time=text("now() - interval '1 second'"))
        )
    await expect(
        stub.VerifyOneTimeCode(pb.VerifyOneTimeCodeRequest(challenge_id=challenge.challenge_id, code=code)),
        UNAUTHENTICATED,
        "INVALID_ONE_TIME_CODE",
    )


async def test_one_time_code_input_is_validated(stub: Stub) -> None:
    err = await expect(stub.VerifyOneTimeCode(pb.VerifyOneTimeCodeRequest()), INVALID)
    assert violations(err) == {("challenge_id", "REQUIRED"), ("code", "REQUIRED")}
    err = await expect(
        stub.StartOneTimeCodeLogin(
            pb.StartOneTimeCodeLoginRequest(
                destination=resources_pb2.IdentifierKey(
                    kind=resources_pb2.IDENTIFIER_KIND_DEVICE_ID, value="d"
                )
            )
        ),
        INVALID,
    )
    assert violations(err) == {("destination.kind", "UNSUPPORTED_IDENTIFIER_KIND")}


# --- RefreshToken ----------------------------------------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_whole_session(stub: Stub, db: Database) -> None:
    first = (await register(stub)).token
    second = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert second.session == first.session and second.refresh_token != first.refresh_token
    third = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=second.refresh_token))
    # The first token was rotated out: presenting it again means two holders; the family dies.
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token)),
        UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=third.refresh_token)),
        UNAUTHENTICATED,
        "SESSION_REVOKED",
    )
    revoked = [e for e in await events_of(db, events_pb2.SessionRevokedEvent) if e.session == first.session]
    assert [e.reason for e in revoked] == [events_pb2.SessionRevokedEvent.REASON_REFRESH_TOKEN_REUSED]


async def test_refresh_retry_with_the_same_request_id_is_not_reuse(stub: Stub) -> None:
    token = (await register(stub)).token
    request = pb.RefreshTokenRequest(refresh_token=token.refresh_token, request_id=str(uuid.uuid4()))
    a, b = await asyncio.gather(stub.RefreshToken(request), stub.RefreshToken(request))
    again = await stub.RefreshToken(request)  # the response was lost: retried later
    assert a.refresh_token == b.refresh_token == again.refresh_token
    fresh = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=a.refresh_token))
    assert fresh.session == token.session


async def test_unknown_and_expired_refresh_tokens_are_refused(stub: Stub, db: Database) -> None:
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token="ort_nope")),
        UNAUTHENTICATED,
        "INVALID_REFRESH_TOKEN",
    )
    token = (await register(stub)).token
    async with db.transaction() as session:  # thirty days pass
        await session.execute(
            text("UPDATE identity_refresh_tokens SET expire_time = now() - interval '1 second'")
        )
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=token.refresh_token)),
        UNAUTHENTICATED,
        "REFRESH_TOKEN_EXPIRED",
    )
    await expect(stub.RefreshToken(pb.RefreshTokenRequest()), INVALID)


async def test_expired_access_tokens_are_refused(stub: Stub, token_for: Callable[..., str]) -> None:
    customer = (await register(stub)).customer.name
    stale = token_for(customer, ["customer"], ttl_seconds=900, now=1_000_000)
    err = await rpc_error(
        stub.GetCustomer(
            pb.GetCustomerRequest(name=customer), metadata=(("authorization", f"Bearer {stale}"),)
        )
    )
    assert err.code() is UNAUTHENTICATED


# --- ChangePassword --------------------------------------------------------------------------


async def test_change_password_with_the_current_one(stub: Stub) -> None:
    address = email()
    reply = await register(stub, address)
    other = await stub.Login(login(address))
    await expect(
        stub.ChangePassword(
            pb.ChangePasswordRequest(current_password="wrong password!", new_password="a new long secret"),
            metadata=auth(reply.token),
        ),
        INVALID,
    )
    await stub.ChangePassword(
        pb.ChangePasswordRequest(
            current_password=PASSWORD, new_password="a new long secret", revoke_other_sessions=True
        ),
        metadata=auth(reply.token),
    )
    await expect(stub.Login(login(address)), UNAUTHENTICATED, "INVALID_CREDENTIALS")
    await stub.Login(login(address, "a new long secret"))
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=other.token.refresh_token)), UNAUTHENTICATED
    )
    kept = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=reply.token.refresh_token))
    assert kept.session == reply.token.session


async def test_change_password_without_the_current_one_needs_a_fresh_code_session(
    stub: Stub, db: Database
) -> None:
    registered, address = await verified_customer(stub, db)
    err = await expect(
        stub.ChangePassword(
            pb.ChangePasswordRequest(new_password="forgotten and reset"), metadata=auth(registered.token)
        ),
        INVALID,
    )
    assert violations(err) == {("current_password", "REQUIRED")}
    challenge = await stub.StartOneTimeCodeLogin(
        pb.StartOneTimeCodeLoginRequest(destination=email_key(address))
    )
    code_login = await stub.VerifyOneTimeCode(
        pb.VerifyOneTimeCodeRequest(
            challenge_id=challenge.challenge_id, code=await code_of(db, challenge.challenge_id)
        )
    )
    await stub.ChangePassword(
        pb.ChangePasswordRequest(new_password="forgotten and reset"), metadata=auth(code_login.token)
    )
    await stub.Login(login(address, "forgotten and reset"))


async def test_guests_have_no_password_to_change(stub: Stub) -> None:
    guest = await stub.CreateGuest(pb.CreateGuestRequest())
    await expect(
        stub.ChangePassword(
            pb.ChangePasswordRequest(new_password="a long new secret"), metadata=auth(guest.token)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_PASSWORD",
    )
