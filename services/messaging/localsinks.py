"""The local stand-ins of messaging's providers, for ``make run``, the tests and the benchmark.

They speak the providers' real wire formats, so the real adapters talk to them unchanged:
- ``SmtpSink``: an SMTP server (aiosmtpd), STARTTLS when given a certificate; each message is
  written as one ``.eml`` file;
- ``HttpSink``: Twilio's Messages API (Basic auth, form fields, 201 with a message ``sid``;
  21211 for a number that is not E.164; status callbacks signed with X-Twilio-Signature when
  asked), FCM HTTP v1 with its OAuth token endpoint, and the signed webhook (signature checked,
  ``Idempotency-Key`` honoured); each message is written as one ``.json`` file.
Everything lands in one outbox folder (``.omni/outbox/`` under ``make run``), which
``omni dev outbox`` lists. ``faults`` let a test make the next requests fail the way the real
provider does (429, 503, an unregistered device…).

Run alone: ``python -m services.messaging.localsinks --outbox DIR --smtp-port 1025 --http-port 1026``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email
import email.policy
import itertools
import json
import re
import secrets
import signal
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.messaging.adapters import twilio, webhook

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_seq = itertools.count(1)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _write(outbox: Path | None, channel: str, suffix: str, data: bytes) -> Path | None:
    if outbox is None:
        return None
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{_stamp()}-{channel}-{next(_seq):06d}.{suffix}"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # a reader never sees half a file
    return path


# -- SMTP --------------------------------------------------------------------------------------


class SmtpSink:
    """An SMTP server that keeps every message it accepts (in memory and as .eml files)."""

    def __init__(self, outbox: Path | None = None, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.outbox = outbox
        self.tls_context = tls_context
        self.messages: list[EmailMessage] = []
        self.sessions_with_tls = 0
        # Tests: refuse recipients, or hold every transaction at RCPT (before any content) until released.
        self.refuse: dict[str, tuple[int, str]] = {}
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self.received = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.hold is not None:  # before the message is transferred: a cut-off send leaves nothing
            self.holding.set()
            await self.hold.wait()
        refused = self.refuse.get(address.lower())
        if refused is not None:
            return f"{refused[0]} {refused[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if session.ssl is not None:
            self.sessions_with_tls += 1
        _write(self.outbox, "email", "eml", raw)
        async with self.received:
            self.messages.append(message)
            self.received.notify_all()
        return "250 Message accepted for delivery"

    def _protocol(self) -> SMTP:
        return SMTP(
            self,
            hostname="omni-sink.local",
            tls_context=self.tls_context,
            require_starttls=self.tls_context is not None,
            timeout=60,
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        async with asyncio.timeout(timeout), self.received:
            await self.received.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if str(m["To"]).lower() == address.lower()]


def text_of(message: EmailMessage) -> str:
    """The plain-text part of a message."""
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


# -- HTTP providers ----------------------------------------------------------------------------


@dataclass
class Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpSink:
    """Twilio, FCM and the signed webhook, on one local HTTP server."""

    outbox: Path | None = None
    twilio_sid: str = "AClocal"
    twilio_token: str = "local-twilio-token"  # noqa: S105 (the local sink's own credential)
    webhook_secret: str = "local-webhook-secret"  # noqa: S105
    fcm_public_key: Any = None  # verify token assertions with it when set
    send_status_callbacks: bool = False
    sms: list[dict[str, str]] = field(default_factory=list)
    push: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    twilio_faults: deque[Fault] = field(default_factory=deque)
    fcm_faults: deque[Fault] = field(default_factory=deque)
    webhook_faults: deque[Fault] = field(default_factory=deque)
    unregistered_tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _tokens: set[str] = field(default_factory=set)
    _seen_keys: dict[str, str] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self.twilio_send, methods=["POST"]),
                Route("/token", self.oauth_token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self.fcm_send, methods=["POST"]),
                Route("/webhook", self.webhook, methods=["POST"]),
            ]
        )

    # Twilio -----------------------------------------------------------------------------------

    def _twilio_error(self, status: int, code: int, message: str) -> JSONResponse:
        return JSONResponse(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status_code=status,
        )

    async def twilio_send(self, request: Request) -> Response:
        self.requests.append(("twilio", request.url.path))
        expected = "Basic " + base64.b64encode(f"{self.twilio_sid}:{self.twilio_token}".encode()).decode()
        if request.path_params["sid"] != self.twilio_sid or request.headers.get("authorization") != expected:
            return self._twilio_error(401, 20003, "Authenticate")
        if self.twilio_faults:
            fault = self.twilio_faults.popleft()
            return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to = form.get("To", "")
        number = to.removeprefix("whatsapp:")
        if not E164.fullmatch(number):
            return self._twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not form.get("Body"):
            return self._twilio_error(400, 21602, "Message body is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._twilio_error(400, 21603, "A 'From' phone number is required.")
        sid = "SM" + secrets.token_hex(16)
        record = {"sid": sid, "to": to, "from": form.get("From", ""), "body": form["Body"]}
        self.sms.append(record)
        channel = "whatsapp" if to.startswith("whatsapp:") else "sms"
        _write(self.outbox, channel, "json", json.dumps({"channel": channel, **record}, indent=2).encode())
        if self.send_status_callbacks and form.get("StatusCallback"):
            task = asyncio.create_task(self._status_callback(form["StatusCallback"], sid, to))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": self.twilio_sid,
                "to": to,
                "from": form.get("From", ""),
                "body": form["Body"],
                "status": "queued",
                "num_segments": str(max(1, (len(form["Body"]) + 152) // 153)),
                "date_created": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
                "uri": f"/2010-04-01/Accounts/{self.twilio_sid}/Messages/{sid}.json",
            },
            status_code=201,
        )

    async def _status_callback(self, url: str, sid: str, to: str) -> None:
        """What Twilio does next: report the message delivered, signed with the auth token."""
        await asyncio.sleep(0.2)
        params = [
            ("MessageSid", sid),
            ("MessageStatus", "delivered"),
            ("To", to),
            ("AccountSid", self.twilio_sid),
        ]
        headers = {"X-Twilio-Signature": twilio.signature(self.twilio_token, url, params)}
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as client:
                await client.post(url, data=dict(params), headers=headers)

    # FCM --------------------------------------------------------------------------------------

    async def oauth_token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get(
            "assertion"
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if self.fcm_public_key is not None:
            try:
                jwt.decode(
                    form["assertion"], self.fcm_public_key, algorithms=["RS256"], audience=str(request.url)
                )
            except jwt.PyJWTError as exc:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": str(exc)}, status_code=400
                )
        token = "ya29." + secrets.token_urlsafe(24)
        self._tokens.add(token)
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _fcm_error(self, status: int, rpc_status: str, code: str, message: str) -> JSONResponse:
        return JSONResponse(
            {
                "error": {
                    "code": status,
                    "message": message,
                    "status": rpc_status,
                    "details": [
                        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
                    ],
                }
            },
            status_code=status,
        )

    async def fcm_send(self, request: Request) -> Response:
        self.requests.append(("fcm", request.url.path))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self._tokens:
            return self._fcm_error(
                401,
                "UNAUTHENTICATED",
                "THIRD_PARTY_AUTH_ERROR",
                "Request had invalid authentication credentials.",
            )
        if self.fcm_faults:
            fault = self.fcm_faults.popleft()
            return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
        body = json.loads(await request.body())
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or not message.get("token"):
            return self._fcm_error(
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            )
        if message["token"] in self.unregistered_tokens:
            return self._fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
        name = f"projects/{request.path_params['project']}/messages/0:{secrets.token_hex(8)}"
        self.push.append({"name": name, **message})
        _write(
            self.outbox,
            "push",
            "json",
            json.dumps({"channel": "push", "name": name, **message}, indent=2).encode(),
        )
        return JSONResponse({"name": name})

    # Signed webhook ---------------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        self.requests.append(("webhook", request.url.path))
        raw = await request.body()
        if not webhook.valid_signature(
            self.webhook_secret, raw, request.headers.get(webhook.SIGNATURE_HEADER, "")
        ):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        if self.webhook_faults:
            fault = self.webhook_faults.popleft()
            return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
        key = request.headers.get("idempotency-key", "")
        if key and key in self._seen_keys:
            return JSONResponse({"id": self._seen_keys[key], "duplicate": True})
        body = json.loads(raw)
        message_id = "wh_" + secrets.token_hex(8)
        if key:
            self._seen_keys[key] = message_id
        self.webhooks.append(body)
        channel = str(body.get("channel") or "social")
        _write(self.outbox, channel, "json", json.dumps({"id": message_id, **body}, indent=2).encode())
        return JSONResponse({"id": message_id})


@contextlib.asynccontextmanager
async def serving(app: Starlette, port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on ``port`` (0: a free one) for the duration of the block."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                await asyncio.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


# -- the outbox listing ----------------------------------------------------------------------


def list_outbox(outbox: Path) -> list[dict[str, str]]:
    """Every message in the outbox, oldest first: time, channel, to, subject or text."""
    rows: list[dict[str, str]] = []
    if not outbox.is_dir():
        return rows
    for path in sorted(outbox.glob("*-*-*.*")):
        if path.suffix == ".eml":
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            rows.append(
                {
                    "file": path.name,
                    "channel": "email",
                    "to": str(message["To"] or ""),
                    "text": str(message["Subject"] or ""),
                }
            )
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            to = data.get("to") or data.get("token") or ""
            if isinstance(to, dict):
                to = f"{to.get('kind')}:{to.get('value')}"
            text = data.get("body") or data.get("text") or (data.get("notification") or {}).get("title", "")
            rows.append(
                {"file": path.name, "channel": str(data.get("channel", "")), "to": str(to), "text": str(text)}
            )
    return rows


def format_outbox(rows: list[dict[str, str]], outbox: Path) -> str:
    if not rows:
        return f"nothing sent yet ({outbox} is empty)"
    lines = [f"  {'time (UTC)':<17} {'channel':<8} {'to':<34} subject / text"]
    for row in rows:
        when = row["file"][:15]
        stamp = f"{when[0:4]}-{when[4:6]}-{when[6:8]} {when[9:11]}:{when[11:13]}:{when[13:15]}"
        text = row["text"].replace("\n", " ")
        lines.append(f"  {stamp:<17} {row['channel']:<8} {row['to'][:34]:<34} {text[:70]}")
    lines.append(f"\n{len(rows)} message(s) in {outbox}")
    return "\n".join(lines)


# -- running alone ---------------------------------------------------------------------------


async def _main(
    outbox: Path, smtp_port: int, http_port: int, callbacks: bool, ready: Callable[[], None]
) -> None:
    smtp = SmtpSink(outbox)
    await smtp.start(port=smtp_port)
    http = HttpSink(outbox, send_status_callbacks=callbacks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serving(http.app(), http_port):
        ready()
        await stop.wait()
    await smtp.stop()


def _announce(smtp_port: int, http_port: int) -> None:
    sys.stdout.write(f"sinks ready: smtp {smtp_port}, http {http_port}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.messaging.localsinks", description=__doc__)
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=1026)
    parser.add_argument(
        "--status-callbacks", action="store_true", help="report SMS delivered to StatusCallback"
    )
    args = parser.parse_args(argv)
    asyncio.run(
        _main(
            args.outbox,
            args.smtp_port,
            args.http_port,
            args.status_callbacks,
            lambda: _announce(args.smtp_port, args.http_port),
        )
    )


if __name__ == "__main__":
    main()
