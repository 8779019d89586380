"""E-mail over SMTP (aiosmtplib): STARTTLS, authentication, multipart text + HTML.

Connections are pooled and kept open between messages (like any MTA client): opening a TLS
session per e-mail would cost more than the e-mail. A connection the server dropped is
replaced transparently, once, before the failure counts.

Classification (RFC 5321): a 5xx reply to RCPT (unknown mailbox, bad address) is permanent
(INVALID_DESTINATION); any other 5xx is a permanent REJECTED; 4xx replies, timeouts and
connection failures are transient. SMTP has no idempotency key: each message carries a stable
``Message-ID`` derived from the attempt, so the rare duplicate after a crash is recognisable (and
threaded as the same message by mail clients), but a relay will deliver it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from services.messaging.adapters.base import (
    INVALID_DESTINATION,
    PROVIDER_UNAVAILABLE,
    REJECTED,
    Outbound,
    ProviderError,
    Sent,
)
from services.messaging.domain.contacts import EMAIL, Destination

TLS_MODES = ("starttls", "opportunistic", "tls", "none")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 1025
    username: str = ""
    password: str = ""
    # starttls: required; opportunistic: if offered; tls: implicit TLS (port 465); none.
    tls: str = "starttls"
    validate_certs: bool = True
    sender: str = "Omni <no-reply@omni.local>"
    connections: int = 4
    timeout: float = 30.0

    @property
    def sender_domain(self) -> str:
        address = email.utils.parseaddr(self.sender)[1]
        return address.rpartition("@")[2] or "omni.local"


def build_message(config: SmtpConfig, message: Outbound) -> EmailMessage:
    """The MIME message: text part, HTML alternative when there is one, stable Message-ID."""
    mail = EmailMessage()
    mail["From"] = config.sender
    mail["To"] = message.destination.value
    mail["Subject"] = message.subject
    mail["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    key = message.idempotency_key or email.utils.make_msgid().strip("<>").partition("@")[0]
    mail["Message-ID"] = f"<{key}@{config.sender_domain}>"
    if message.reference:
        mail["X-Omni-Reference"] = message.reference
    mail.set_content(message.body)
    if message.html_body:
        mail.add_alternative(message.html_body, subtype="html")
    return mail


class SmtpProvider:
    name = "smtp"
    idempotent = False

    def __init__(self, config: SmtpConfig) -> None:
        if config.tls not in TLS_MODES:
            raise ValueError(f"SMTP TLS mode must be one of {', '.join(TLS_MODES)}")
        self.config = config
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max(1, config.connections))

    def accepts(self, destination: Destination) -> bool:
        return destination.kind == EMAIL

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.config
        context = ssl.create_default_context()
        if not cfg.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        start_tls = {"starttls": True, "opportunistic": None, "tls": False, "none": False}[cfg.tls]
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username or None,
            password=cfg.password or None,
            use_tls=cfg.tls == "tls",
            start_tls=start_tls,
            validate_certs=cfg.validate_certs,
            tls_context=context if cfg.tls != "none" else None,
            timeout=cfg.timeout,
        )

    async def _connected(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        client = self._client()
        await client.connect()
        return client

    async def send(self, message: Outbound) -> Sent:
        mail = build_message(self.config, message)
        async with self._slots:
            for attempt in (1, 2):
                client: aiosmtplib.SMTP | None = None
                try:
                    client = await self._connected()
                    await client.send_message(mail)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    if attempt == 1:
                        continue  # a pooled connection the server closed while idle: reconnect once
                    raise ProviderError(PROVIDER_UNAVAILABLE, str(exc), transient=True) from None
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    await self._discard(client)
                    refused = exc.recipients[0] if exc.recipients else None
                    code = refused.code if refused is not None else 550
                    text = refused.message if refused is not None else str(exc)
                    raise ProviderError(
                        INVALID_DESTINATION if code >= 500 else PROVIDER_UNAVAILABLE,
                        text,
                        transient=code < 500,
                        provider_code=str(code),
                    ) from None
                except aiosmtplib.SMTPResponseException as exc:
                    await self._discard(client)
                    raise ProviderError(
                        REJECTED if exc.code >= 500 else PROVIDER_UNAVAILABLE,
                        exc.message,
                        transient=exc.code < 500,
                        provider_code=str(exc.code),
                    ) from None
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    await self._discard(client)
                    raise ProviderError(
                        PROVIDER_UNAVAILABLE, str(exc) or type(exc).__name__, transient=True
                    ) from None
                except BaseException:
                    await self._discard(client)  # cancelled mid-transaction: the connection is unusable
                    raise
                self._release(client)
                return Sent(provider_message_id=str(mail["Message-ID"]).strip("<>"))
        raise AssertionError("unreachable")

    def _release(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None and client.is_connected:
            self._idle.put_nowait(client)

    async def _discard(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await client.quit()
