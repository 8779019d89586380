"""The preferences service's own settings, ``OMNI_PREFERENCES_*`` (read once at start-up).

Business defaults apply to every customer on top of the customer's own choices (the stricter
wins: both sets of quiet hours and both sets of caps apply):
- ``DEFAULT_TIME_ZONE`` (``UTC``): the zone of customers who set none.
- ``BUSINESS_QUIET_HOURS``: comma-separated ``HH:MM-HH:MM`` windows, each optionally prefixed by
  a channel and ``=`` (``21:00-08:00,sms=20:00-09:00``), in the customer's time zone. Default none.
- ``BUSINESS_FREQUENCY_CAPS``: comma-separated ``[channel:][topic:]COUNT/SECONDS``
  (``email:3/604800,10/604800``): marketing limits for every customer. Default none.
- ``CHANNEL_ORDER``: the order in which channels are tried after the customer's preferred ones
  (``push,email,sms,mobile_app,web,social,call_center``).
- ``CONFIRMATION_TTL_SECONDS`` (259200, 3 days): how long a double opt-in token is valid.
- ``SWEEP_INTERVAL_SECONDS`` (60): how often expired pending consents are dropped to DENIED.
- ``DEFAULT_LANGUAGE`` (``en``): DecideContact's language_code when neither the preferences nor
  the profile name one.
- ``PSEUDONYM_KEY``: the HMAC key that turns an erased customer's id into the pseudonym kept on
  the consent ledger (required outside local development; keep it secret and stable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from omni_runtime.config import ConfigError, Settings
from omni_runtime.context import channel_from_name
from omni_runtime.validation import Checker
from services.preferences.domain import checks
from services.preferences.domain.caps import Cap
from services.preferences.domain.channels import CONTACTABLE
from services.preferences.domain.quiet import Window, overlapping

DEFAULT_ORDER = "push,email,sms,mobile_app,web,social,call_center"
LOCAL_PSEUDONYM_KEY = "omni-local-development-only"


def _channel(text: str, setting: str) -> int:
    channel = channel_from_name(text)
    if channel is None or channel not in CONTACTABLE:
        raise ConfigError(f"OMNI_PREFERENCES_{setting}: {text!r} is not a channel that can carry contacts")
    return channel


def _clock(text: str, setting: str) -> int:
    try:
        hours, minutes = (int(p) for p in text.split(":"))
    except ValueError:
        raise ConfigError(f"OMNI_PREFERENCES_{setting}: {text!r} is not HH:MM") from None
    if not (0 <= hours <= 24 and 0 <= minutes <= 59) or (hours == 24 and minutes):
        raise ConfigError(f"OMNI_PREFERENCES_{setting}: {text!r} is not a time of day")
    return hours * 3600 + minutes * 60


def parse_quiet_hours(raw: str) -> tuple[Window, ...]:
    windows: list[Window] = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        channels: frozenset[int] = frozenset()
        name, _, part = item.rpartition("=")
        if name:
            channels = frozenset({_channel(name, "BUSINESS_QUIET_HOURS")})
        start, _, end = part.partition("-")
        window = Window(
            _clock(start, "BUSINESS_QUIET_HOURS"), _clock(end, "BUSINESS_QUIET_HOURS"), channels=channels
        )
        if window.start == window.end or window.start >= 86_400:
            raise ConfigError(f"OMNI_PREFERENCES_BUSINESS_QUIET_HOURS: {part!r} is an empty window")
        windows.append(window)
    if overlapping(windows):
        raise ConfigError("OMNI_PREFERENCES_BUSINESS_QUIET_HOURS: windows overlap; join them")
    return tuple(windows)


def parse_caps(raw: str) -> tuple[Cap, ...]:
    caps: list[Cap] = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        *scope, limit = part.split(":")
        channel, topic = 0, ""
        for item in scope:
            if channel_from_name(item) is not None:
                channel = _channel(item, "BUSINESS_FREQUENCY_CAPS")
            elif checks.TOPIC.fullmatch(item):
                topic = item
            else:
                raise ConfigError(
                    f"OMNI_PREFERENCES_BUSINESS_FREQUENCY_CAPS: {item!r} is no channel or topic"
                )
        count, _, seconds = limit.partition("/")
        try:
            cap = Cap(int(count), timedelta(seconds=int(seconds)), channel, topic)
        except ValueError:
            raise ConfigError(
                f"OMNI_PREFERENCES_BUSINESS_FREQUENCY_CAPS: {part!r} is not COUNT/SECONDS"
            ) from None
        if cap.max_count < 1 or cap.period <= timedelta(0):
            raise ConfigError(
                f"OMNI_PREFERENCES_BUSINESS_FREQUENCY_CAPS: {part!r} needs a count and period > 0"
            )
        caps.append(cap)
    return tuple(caps)


def _language(tag: str) -> str:
    check = Checker()
    checks.language(check, "DEFAULT_LANGUAGE", tag)
    if check.violations or not tag:
        raise ConfigError(f"OMNI_PREFERENCES_DEFAULT_LANGUAGE must be a BCP-47 tag, got {tag!r}")
    return tag


def _seconds(settings: Settings, name: str, default: float) -> float:
    raw = settings.setting(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"OMNI_PREFERENCES_{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"OMNI_PREFERENCES_{name} must be positive")
    return value


@dataclass(frozen=True, slots=True)
class PreferencesConfig:
    default_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    business_quiet_hours: tuple[Window, ...] = ()
    business_caps: tuple[Cap, ...] = ()
    channel_order: tuple[int, ...] = tuple(_channel(c, "CHANNEL_ORDER") for c in DEFAULT_ORDER.split(","))
    confirmation_ttl: timedelta = timedelta(days=3)
    sweep_interval: float = 60.0
    pseudonym_key: bytes = LOCAL_PSEUDONYM_KEY.encode()
    default_language: str = "en"

    @classmethod
    def from_settings(cls, settings: Settings) -> PreferencesConfig:
        zone_name = settings.setting("DEFAULT_TIME_ZONE", "UTC")
        zone = checks.zone(zone_name)
        if zone is None:
            raise ConfigError(f"OMNI_PREFERENCES_DEFAULT_TIME_ZONE: unknown IANA time zone {zone_name!r}")
        order = [
            _channel(c.strip(), "CHANNEL_ORDER")
            for c in settings.setting("CHANNEL_ORDER", DEFAULT_ORDER).split(",")
            if c.strip()
        ]
        if len(set(order)) != len(order):
            raise ConfigError("OMNI_PREFERENCES_CHANNEL_ORDER repeats a channel")
        return cls(
            default_zone=zone,
            business_quiet_hours=parse_quiet_hours(settings.setting("BUSINESS_QUIET_HOURS", "")),
            business_caps=parse_caps(settings.setting("BUSINESS_FREQUENCY_CAPS", "")),
            channel_order=tuple(order),
            confirmation_ttl=timedelta(seconds=_seconds(settings, "CONFIRMATION_TTL_SECONDS", 259_200)),
            sweep_interval=_seconds(settings, "SWEEP_INTERVAL_SECONDS", 60),
            pseudonym_key=settings.setting("PSEUDONYM_KEY", LOCAL_PSEUDONYM_KEY).encode(),
            default_language=_language(settings.setting("DEFAULT_LANGUAGE", "en")),
        )
