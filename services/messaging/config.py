"""The messaging service's settings, ``OMNI_MESSAGING_*`` (read once at start-up), and the
providers they configure per channel.

A channel is served only when its provider is configured: SMTP for e-mail (always; locally the
embedded sink), Twilio for SMS and WhatsApp (account SID + auth token), FCM for push (a service
account file), a signed webhook for the rest of social, and in-app for MOBILE_APP/WEB.
``CHANNEL_PROVIDERS`` may narrow or reorder that (``email=smtp,sms=twilio,social=twilio+webhook``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from omni.type.v1 import channel_pb2
from omni_runtime.config import ConfigError, Settings
from omni_runtime.context import channel_from_name, channel_name
from services.messaging.adapters.base import Provider
from services.messaging.adapters.fcm import FcmConfig, FcmProvider, ServiceAccount
from services.messaging.adapters.inapp import InAppProvider
from services.messaging.adapters.smtp import TLS_MODES, SmtpConfig, SmtpProvider
from services.messaging.adapters.twilio import TwilioConfig, TwilioProvider
from services.messaging.adapters.webhook import WebhookConfig, WebhookProvider
from services.messaging.domain.contacts import FACEBOOK, INSTAGRAM, WHATSAPP
from services.messaging.domain.delivery import RetryPolicy
from services.messaging.domain.plans import Limits

DEFAULT_PROVIDERS: dict[int, tuple[str, ...]] = {
    channel_pb2.CHANNEL_EMAIL: ("smtp",),
    channel_pb2.CHANNEL_SMS: ("twilio",),
    channel_pb2.CHANNEL_SOCIAL: ("twilio", "webhook"),
    channel_pb2.CHANNEL_PUSH: ("fcm",),
    channel_pb2.CHANNEL_MOBILE_APP: ("inapp",),
    channel_pb2.CHANNEL_WEB: ("inapp",),
}


def _number(settings: Settings, name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = settings.setting(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"OMNI_MESSAGING_{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"OMNI_MESSAGING_{name} must be at least {minimum:g}")
    return value


def _pairs(settings: Settings, name: str) -> dict[str, str]:
    """``a=x,b=y`` → {"a": "x", "b": "y"}."""
    out: dict[str, str] = {}
    for part in settings.setting(name, "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"OMNI_MESSAGING_{name}: expected name=value pairs, got {part!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class MessagingConfig:
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    twilio: TwilioConfig | None = None
    fcm: FcmConfig | None = None
    webhook: WebhookConfig | None = None
    channel_providers: Mapping[int, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PROVIDERS))
    # HMAC secrets of callback sources other than Twilio (id → secret), and their header.
    callback_secrets: Mapping[str, str] = field(default_factory=dict)
    callback_signature_header: str = "X-Omni-Signature"
    # Public base URL of the gateway (callback and confirmation links); also what signatures are
    # checked against when set, whatever host the request came through.
    public_url: str = "http://127.0.0.1:8080"
    # Link of the double opt-in confirmation page; {token} is replaced.
    consent_confirm_url: str = "http://127.0.0.1:8080/consent/confirm?token={token}"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Limits = field(default_factory=Limits)
    batch_size: int = 100
    concurrency: int = 32
    poll_interval: float = 1.0
    # After a wake-up, how long the worker lets a burst gather before it claims (latency traded
    # for batches: one claim, one attempts write and one outcomes write for the whole burst).
    gather: float = 0.05
    lease: timedelta = timedelta(seconds=60)
    seed_default_templates: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> MessagingConfig:
        s = settings.setting
        tls = s("SMTP_TLS", "starttls").lower()
        if tls not in TLS_MODES:
            raise ConfigError(f"OMNI_MESSAGING_SMTP_TLS must be one of {', '.join(TLS_MODES)}")
        smtp = SmtpConfig(
            host=s("SMTP_HOST", "127.0.0.1"),
            port=int(_number(settings, "SMTP_PORT", 1025, minimum=1)),
            username=s("SMTP_USERNAME", ""),
            password=s("SMTP_PASSWORD", ""),
            tls=tls,
            validate_certs=s("SMTP_VALIDATE_CERTS", "true").lower() != "false",
            sender=s("SMTP_FROM", "Omni <no-reply@omni.local>"),
            connections=int(_number(settings, "SMTP_CONNECTIONS", 4, minimum=1)),
            timeout=_number(settings, "SMTP_TIMEOUT_SECONDS", 30, minimum=0.1),
        )
        public_url = s("PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/")
        twilio = None
        if s("TWILIO_ACCOUNT_SID", "") and s("TWILIO_AUTH_TOKEN", ""):
            twilio = TwilioConfig(
                account_sid=s("TWILIO_ACCOUNT_SID", ""),
                auth_token=s("TWILIO_AUTH_TOKEN", ""),
                from_number=s("TWILIO_FROM", ""),
                messaging_service_sid=s("TWILIO_MESSAGING_SERVICE_SID", ""),
                whatsapp_from=s("TWILIO_WHATSAPP_FROM", ""),
                base_url=s("TWILIO_BASE_URL", "https://api.twilio.com"),
                status_callback_url=f"{public_url}/v1/providerCallbacks/twilio",
            )
        fcm = None
        if s("FCM_SERVICE_ACCOUNT_FILE", ""):
            path = Path(s("FCM_SERVICE_ACCOUNT_FILE", ""))
            try:
                account = ServiceAccount.from_file(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"OMNI_MESSAGING_FCM_SERVICE_ACCOUNT_FILE: {exc}") from None
            fcm = FcmConfig(account=account, base_url=s("FCM_BASE_URL", "https://fcm.googleapis.com"))
        webhook = None
        if s("WEBHOOK_URL", ""):
            kinds = frozenset(
                k.strip()
                for k in s("WEBHOOK_KINDS", f"{FACEBOOK},{INSTAGRAM},{WHATSAPP}").split(",")
                if k.strip()
            )
            webhook = WebhookConfig(url=s("WEBHOOK_URL", ""), secret=s("WEBHOOK_SECRET", ""), kinds=kinds)
            if not webhook.secret:
                raise ConfigError("OMNI_MESSAGING_WEBHOOK_URL needs OMNI_MESSAGING_WEBHOOK_SECRET")
        channel_providers = dict(DEFAULT_PROVIDERS)
        for name, providers in _pairs(settings, "CHANNEL_PROVIDERS").items():
            channel = channel_from_name(name)
            if channel is None or channel not in DEFAULT_PROVIDERS:
                raise ConfigError(f"OMNI_MESSAGING_CHANNEL_PROVIDERS: {name!r} is not an outbound channel")
            channel_providers[channel] = tuple(p.strip() for p in providers.split("+") if p.strip())
        secrets = _pairs(settings, "CALLBACK_SECRETS")
        if webhook is not None:
            secrets.setdefault(webhook.name, webhook.secret)
        return cls(
            smtp=smtp,
            twilio=twilio,
            fcm=fcm,
            webhook=webhook,
            channel_providers=channel_providers,
            callback_secrets=secrets,
            callback_signature_header=s("CALLBACK_SIGNATURE_HEADER", "X-Omni-Signature"),
            public_url=public_url,
            consent_confirm_url=s("CONSENT_CONFIRM_URL", f"{public_url}/consent/confirm?token={{token}}"),
            retry=RetryPolicy(
                attempts_per_channel=int(_number(settings, "RETRY_ATTEMPTS", 4, minimum=1)),
                base_delay=timedelta(seconds=_number(settings, "RETRY_BASE_SECONDS", 2)),
                max_delay=timedelta(seconds=_number(settings, "RETRY_MAX_SECONDS", 300)),
            ),
            limits=Limits(max_hold=timedelta(seconds=_number(settings, "MAX_HOLD_SECONDS", 7 * 86400))),
            batch_size=int(_number(settings, "WORKER_BATCH", 100, minimum=1)),
            concurrency=int(_number(settings, "WORKER_CONCURRENCY", 32, minimum=1)),
            poll_interval=_number(settings, "POLL_INTERVAL_SECONDS", 1.0, minimum=0.01),
            gather=_number(settings, "WORKER_GATHER_SECONDS", 0.05),
            lease=timedelta(seconds=_number(settings, "LEASE_SECONDS", 60, minimum=0.1)),
            seed_default_templates=s("SEED_DEFAULT_TEMPLATES", "true").lower() != "false",
        )

    def build_providers(self) -> dict[str, Provider]:
        """Every configured provider by name."""
        providers: dict[str, Provider] = {"smtp": SmtpProvider(self.smtp), "inapp": InAppProvider()}
        if self.twilio is not None:
            providers["twilio"] = TwilioProvider(self.twilio)
        if self.fcm is not None:
            providers["fcm"] = FcmProvider(self.fcm)
        if self.webhook is not None:
            providers[self.webhook.name] = WebhookProvider(self.webhook)
        return providers


class Providers:
    """The providers of each channel, in order; the first that reaches a destination carries it."""

    def __init__(
        self, by_name: Mapping[str, Provider], channel_providers: Mapping[int, tuple[str, ...]]
    ) -> None:
        self.by_name = dict(by_name)
        self.by_channel = {
            channel: tuple(self.by_name[n] for n in names if n in self.by_name)
            for channel, names in channel_providers.items()
        }

    def channels(self) -> frozenset[int]:
        """The channels some configured provider serves."""
        return frozenset(c for c, providers in self.by_channel.items() if providers)

    def for_channel(self, channel: int) -> tuple[Provider, ...]:
        return self.by_channel.get(channel, ())

    async def close(self) -> None:
        for provider in self.by_name.values():
            await provider.close()

    def describe(self) -> str:
        return ", ".join(
            f"{channel_name(c)}={'+'.join(p.name for p in ps)}"
            for c, ps in sorted(self.by_channel.items())
            if ps
        )
