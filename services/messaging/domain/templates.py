"""Templates: ``{{param}}`` placeholders, checked when a template is written, filled when sent.

A placeholder is ``{{name}}`` with letters, digits and ``_``; ``{{{{`` is a literal ``{{``. A
``{{`` that opens anything else is an error at create/update time, so a broken template never
reaches a customer. Text bodies insert values as they are; HTML bodies escape them (a customer's
name cannot inject markup into an e-mail).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from omni.type.v1 import channel_pb2

_TOKEN = re.compile(r"\{\{\{\{|\{\{([A-Za-z0-9_]+)\}\}|\{\{")
ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")
LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
MAX_SMS_LENGTH = 1600
MAX_SUBJECT_LENGTH = 500
MAX_BODY_LENGTH = 100_000
MAX_CONTENTS = 200
# The channels a template can carry content for (outbound notification channels).
CHANNELS = frozenset(
    {
        channel_pb2.CHANNEL_EMAIL,
        channel_pb2.CHANNEL_SMS,
        channel_pb2.CHANNEL_PUSH,
        channel_pb2.CHANNEL_SOCIAL,
        channel_pb2.CHANNEL_MOBILE_APP,
        channel_pb2.CHANNEL_WEB,
    }
)


def channel_label(channel: int) -> str:
    """``CHANNEL_EMAIL`` for a known channel number, the number otherwise."""
    for value in channel_pb2.Channel.DESCRIPTOR.values:
        if value.number == channel:
            return str(value.name)
    return str(channel)


class PlaceholderError(ValueError):
    """A ``{{`` that is neither a placeholder nor the ``{{{{`` escape."""


def placeholders(text: str) -> list[str]:
    """The placeholder names of ``text`` in order of appearance (PlaceholderError if malformed)."""
    found: list[str] = []
    for match in _TOKEN.finditer(text):
        piece = match.group(0)
        if piece == "{{{{":
            continue
        if match.group(1) is None:
            raise PlaceholderError(
                f"'{{{{' at position {match.start()} opens no placeholder "
                "(placeholders are {{name}} with letters, digits and _; write {{{{ for a literal {{)"
            )
        found.append(match.group(1))
    return found


def fill(text: str, params: Mapping[str, str], *, escape: bool = False) -> str:
    """``text`` with its placeholders replaced (values HTML-escaped when ``escape``)."""

    def replace(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece == "{{{{":
            return "{{"
        value = params[match.group(1)]
        return html.escape(value, quote=True) if escape else value

    return _TOKEN.sub(replace, text)


@dataclass(frozen=True, slots=True)
class Content:
    """One (channel, locale) content of a template."""

    channel: int
    locale: str
    subject: str = ""
    body: str = ""
    html_body: str = ""

    def texts(self) -> tuple[str, ...]:
        return (self.subject, self.body, self.html_body)


@dataclass(frozen=True, slots=True)
class Rendered:
    """What is sent on one channel: the template's content with the params filled in."""

    channel: int
    locale: str
    subject: str
    body: str
    html_body: str


def check_contents(
    contents: Sequence[Content], default_locale: str, field: str = "template.contents"
) -> list[tuple[str, str]]:
    """Problems of a template's contents as (field path, description); empty when valid."""
    problems: list[tuple[str, str]] = []
    if not contents:
        problems.append((field, "needs at least one content"))
    if len(contents) > MAX_CONTENTS:
        problems.append((field, f"must have at most {MAX_CONTENTS} contents"))
    seen: dict[tuple[int, str], int] = {}
    for i, content in enumerate(contents):
        path = f"{field}[{i}]"
        if content.channel not in CHANNELS:
            problems.append((f"{path}.channel", "must be EMAIL, SMS, PUSH, SOCIAL, MOBILE_APP or WEB"))
        if not LOCALE.fullmatch(content.locale):
            problems.append((f"{path}.locale", "must be a BCP-47 locale such as en or ro-RO"))
        key = (content.channel, content.locale.lower())
        if key in seen:
            problems.append((path, f"repeats the channel and locale of {field}[{seen[key]}]"))
        seen.setdefault(key, i)
        if not content.body.strip():
            problems.append((f"{path}.body", "is required"))
        if len(content.body) > MAX_BODY_LENGTH or len(content.html_body) > MAX_BODY_LENGTH:
            problems.append((f"{path}.body", f"must be at most {MAX_BODY_LENGTH} characters"))
        if len(content.subject) > MAX_SUBJECT_LENGTH:
            problems.append((f"{path}.subject", f"must be at most {MAX_SUBJECT_LENGTH} characters"))
        if content.channel == channel_pb2.CHANNEL_SMS and len(content.body) > MAX_SMS_LENGTH:
            problems.append((f"{path}.body", f"an SMS body must be at most {MAX_SMS_LENGTH} characters"))
        if content.html_body and content.channel != channel_pb2.CHANNEL_EMAIL:
            problems.append((f"{path}.html_body", "is only for CHANNEL_EMAIL content"))
        for name, text in (
            ("subject", content.subject),
            ("body", content.body),
            ("html_body", content.html_body),
        ):
            try:
                placeholders(text)
            except PlaceholderError as exc:
                problems.append((f"{path}.{name}", str(exc)))
    if not LOCALE.fullmatch(default_locale):
        problems.append(("template.default_locale", "must be a BCP-47 locale such as en or ro-RO"))
    else:
        have_default = {c.channel for c in contents if c.locale.lower() == default_locale.lower()}
        for channel in sorted({c.channel for c in contents} - have_default):
            name = channel_label(channel)
            problems.append(
                (
                    "template.default_locale",
                    f"{name} has content but none in the default locale {default_locale}",
                )
            )
    return problems


def params_of(contents: Iterable[Content]) -> list[str]:
    """Every placeholder the contents use, sorted (the template's ``params``)."""
    names: set[str] = set()
    for content in contents:
        for text in content.texts():
            names.update(placeholders(text))
    return sorted(names)


def locale_chain(wanted: str, default_locale: str) -> list[str]:
    """``ro-RO`` → [``ro-ro``, ``ro``, default]: the locales tried, most specific first."""
    chain: list[str] = []
    parts = wanted.lower().split("-") if wanted else []
    while parts:
        candidate = "-".join(parts)
        if candidate not in chain:
            chain.append(candidate)
        parts.pop()
    if default_locale.lower() not in chain:
        chain.append(default_locale.lower())
    return chain


def pick(contents: Sequence[Content], channel: int, language: str, default_locale: str) -> Content | None:
    """The content for ``channel`` in the best locale for ``language``; None if the channel has none."""
    by_locale = {c.locale.lower(): c for c in contents if c.channel == channel}
    for locale in locale_chain(language, default_locale):
        found = by_locale.get(locale)
        if found is not None:
            return found
    return None


def channels_of(contents: Iterable[Content]) -> list[int]:
    return sorted({c.channel for c in contents})


def render(content: Content, params: Mapping[str, str]) -> Rendered:
    """Fill ``content``; every placeholder must have a value (checked at SendNotification)."""
    return Rendered(
        channel=content.channel,
        locale=content.locale,
        subject=fill(content.subject, params),
        body=fill(content.body, params),
        html_body=fill(content.html_body, params, escape=True),
    )
