"""Fixtures of the messaging tests: the real service on a real socket over real PostgreSQL and
NATS, its providers pointed at local servers that speak their wire formats (an SMTP server, and
Twilio/FCM/webhook-shaped HTTP servers), the real preferences service when this checkout has it,
and a clock the tests move instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from omni.messaging.v1 import messaging_service_pb2_grpc
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.errors import status_of, unpack_details
from omni_runtime.testing.plugin import Infra, bearer
from omni_runtime.testing.services import RunningService, running_service, test_settings
from omni_runtime.timestamps import utcnow
from services.messaging.localsinks import HttpSink, SmtpSink, serving
from services.messaging.main import definition
from tests.messaging.providers import service_account

Token = Callable[..., str]
HAVE_PREFERENCES = importlib.util.find_spec("services.preferences.main") is not None
needs_preferences = pytest.mark.skipif(
    not HAVE_PREFERENCES, reason="the real preferences service is not in this checkout yet"
)


def rid() -> str:
    return str(uuid.uuid4())


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class OffsetClock:
    """Real time plus an offset the test moves: leases and back-offs keep working, and quiet
    hours end when the test says so."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta

    def set(self, moment: datetime) -> None:
        self.offset = moment - utcnow()


@dataclass
class Sinks:
    smtp: SmtpSink
    http: HttpSink
    http_url: str
    service_account: Path


@pytest.fixture(scope="module")
async def sinks(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sinks]:
    tmp = tmp_path_factory.mktemp("messaging-sinks")
    smtp = SmtpSink(tmp / "outbox")
    await smtp.start()
    http = HttpSink(tmp / "outbox")
    async with serving(http.app()) as port:
        url = f"http://127.0.0.1:{port}"
        account, public_key = service_account(tmp, f"{url}/token")
        http.fcm_public_key = public_key
        yield Sinks(smtp, http, url, account)
    await smtp.stop()


def messaging_extra(sinks: Sinks, **overrides: str) -> dict[str, str]:
    """OMNI_MESSAGING_* for a service whose providers are the local sinks (fast retries)."""
    values = {
        "SMTP_PORT": str(sinks.smtp.port),
        "SMTP_TLS": "none",
        "SMTP_FROM": "Omni <no-reply@omni.test>",
        "TWILIO_ACCOUNT_SID": sinks.http.twilio_sid,
        "TWILIO_AUTH_TOKEN": sinks.http.twilio_token,
        "TWILIO_FROM": "+15005550006",
        "TWILIO_WHATSAPP_FROM": "+14155238886",
        "TWILIO_BASE_URL": sinks.http_url,
        "FCM_SERVICE_ACCOUNT_FILE": str(sinks.service_account),
        "FCM_BASE_URL": sinks.http_url,
        "WEBHOOK_URL": f"{sinks.http_url}/webhook",
        "WEBHOOK_SECRET": sinks.http.webhook_secret,
        "RETRY_BASE_SECONDS": "0.05",
        "RETRY_MAX_SECONDS": "0.2",
        "POLL_INTERVAL_SECONDS": "0.1",
        "LEASE_SECONDS": "2",
        "PUBLIC_URL": "https://api.omni.test",
        **overrides,
    }
    return {f"OMNI_MESSAGING_{k}": v for k, v in values.items()}


@contextlib.asynccontextmanager
async def messaging_replica(
    settings: Settings, key_source: StaticKeySource, make_token: Token, clock: OffsetClock | None = None
) -> AsyncIterator[RunningService]:
    """One messaging process; it calls its peers with a service token."""
    token = make_token("serviceClients/omni-messaging", ["service"], ttl_seconds=3600)

    async def provider() -> str:
        return token

    async with running_service(definition(clock), settings, key_source=key_source) as running:
        assert running.host.runtime is not None
        running.host.runtime.peers.token_provider = provider
        yield running


@pytest.fixture(scope="module")
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture(scope="module")
async def preferences(omni_infra: Infra, key_source: StaticKeySource) -> AsyncIterator[RunningService | None]:
    """The real preferences service in a database of its own, when this checkout has it."""
    if not HAVE_PREFERENCES:
        yield None
        return
    module = importlib.import_module("services.preferences.main")
    settings = test_settings(
        "preferences", database_url=omni_infra.new_database("preferences"), nats_url=omni_infra.nats_url
    )
    async with running_service(module.SERVICE, settings, key_source=key_source) as running:
        yield running


@pytest.fixture(scope="module")
def messaging_settings(
    service_settings: Callable[..., Settings], sinks: Sinks, preferences: RunningService | None
) -> Callable[..., Settings]:
    def make(**extra: str) -> Settings:
        targets = {"preferences": preferences.target} if preferences is not None else {}
        base = service_settings("messaging", extra=messaging_extra(sinks, **extra))
        return dataclasses.replace(base, targets={**base.targets, **targets})

    return make


@pytest.fixture(scope="module")
async def messaging(
    messaging_settings: Callable[..., Settings],
    key_source: StaticKeySource,
    make_token: Token,
    clock: OffsetClock,
) -> AsyncIterator[RunningService]:
    async with messaging_replica(messaging_settings(), key_source, make_token, clock) as running:
        yield running


class Caller:
    """A stub bound to one caller's token and channel headers."""

    def __init__(self, stub: Any, token: str, channel: str = "backoffice") -> None:
        self.stub = stub
        self.metadata: tuple[tuple[str, str], ...] = (*bearer(token), ("x-omni-channel", channel))

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self.stub, method)

        def invoke(request: Any, **kw: Any) -> Any:
            return call(request, metadata=self.metadata, timeout=kw.pop("timeout", 20), **kw)

        return invoke


@pytest.fixture(scope="module")
def as_role(messaging: RunningService, make_token: Token) -> Callable[..., Caller]:
    def make(subject: str, *roles: str, channel: str = "backoffice") -> Caller:
        stub = messaging_service_pb2_grpc.MessagingServiceStub(messaging.channel)
        return Caller(stub, make_token(subject, list(roles), ttl_seconds=3600), channel)

    return make


@pytest.fixture(scope="module")
def api(as_role: Callable[..., Caller]) -> Caller:
    """A channel backend (role ``service``)."""
    return as_role("serviceClients/web-backend", "service")


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = status_of(error)
    assert status is not None, "the error carries no google.rpc.Status"
    return unpack_details(status)


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return {v.field for v in details(error)["BadRequest"].field_violations}


def reason(error: grpc.aio.AioRpcError) -> str:
    return str(details(error)["ErrorInfo"].reason)


async def eventually(predicate: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            found = await predicate()
            if found:
                return found
            await asyncio.sleep(0.05)
