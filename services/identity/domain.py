"""Identity's rules, without I/O: identifier normalization, password policy, lock-out arithmetic,
one-time codes, role names and etags.

Everything here is a pure function or a small value object, so the rules can be read (and
tested) apart from the database and gRPC plumbing that apply them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from omni.identity.v1 import resources_pb2

# --- identifiers -------------------------------------------------------------------------------

Kind = resources_pb2.IdentifierKind
EMAIL = resources_pb2.IDENTIFIER_KIND_EMAIL
PHONE = resources_pb2.IDENTIFIER_KIND_PHONE
LOYALTY_CARD = resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD
FACEBOOK = resources_pb2.IDENTIFIER_KIND_FACEBOOK
WHATSAPP = resources_pb2.IDENTIFIER_KIND_WHATSAPP
INSTAGRAM = resources_pb2.IDENTIFIER_KIND_INSTAGRAM
DEVICE_ID = resources_pb2.IDENTIFIER_KIND_DEVICE_ID

LOGIN_KINDS = frozenset({EMAIL, PHONE})
SOCIAL_KINDS = frozenset({FACEBOOK, INSTAGRAM, WHATSAPP})
KNOWN_KINDS = frozenset({EMAIL, PHONE, LOYALTY_CARD, FACEBOOK, WHATSAPP, INSTAGRAM, DEVICE_ID})

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all. Stricter
# than what phone companies accept (no extensions), which is what log-in and SMS need.
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_PHONE_NOISE = re.compile(r"[\s().\-/]")
_EMAIL_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOYALTY = re.compile(r"[A-Z0-9]{4,32}")
_SOCIAL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_WA_ID = re.compile(r"[1-9][0-9]{7,14}")
_DEVICE = re.compile(r"[\x21-\x7e]{1,256}")


class InvalidIdentifier(ValueError):
    """The value cannot be normalized for its kind; the message says why (safe to show)."""


def normalize_email(raw: str) -> str:
    """Trimmed and lower-cased as a whole.

    The local part is case-sensitive in theory only: no mainstream provider treats ``Ana@`` and
    ``ana@`` as different mailboxes, and treating them as one stops duplicate accounts. Dots and
    ``+tags`` are kept (they are different addresses for some providers). International domains
    must be given in their ASCII (punycode) form.
    """
    value = raw.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise InvalidIdentifier("must be an e-mail address like name@example.com")
    if len(value) > 254 or not _EMAIL_LOCAL.fullmatch(local) or local.startswith(".") or ".." in local:
        raise InvalidIdentifier("has an invalid part before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise InvalidIdentifier("has an invalid domain")
    return value


def normalize_phone(raw: str) -> str:
    """E.164: spaces, dashes, dots, slashes and parentheses dropped, ``00`` read as ``+``."""
    value = _PHONE_NOISE.sub("", raw.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    if not _E164.fullmatch(value):
        raise InvalidIdentifier("must be a phone number in E.164 form, like +40712345678")
    return value


def normalize(kind: int, raw: str) -> str:
    """The stored form of an identifier value; raises InvalidIdentifier when there is none."""
    if kind == EMAIL:
        return normalize_email(raw)
    if kind == PHONE:
        return normalize_phone(raw)
    if kind == LOYALTY_CARD:
        value = re.sub(r"[\s-]", "", raw).upper()
        if not _LOYALTY.fullmatch(value):
            raise InvalidIdentifier("must be 4 to 32 letters and digits")
        return value
    if kind == WHATSAPP:
        value = _PHONE_NOISE.sub("", raw.strip()).removeprefix("+")
        if not _WA_ID.fullmatch(value):
            raise InvalidIdentifier("must be a WhatsApp id: the phone number in E.164 form without '+'")
        return value
    if kind in (FACEBOOK, INSTAGRAM):
        value = raw.strip()
        if not _SOCIAL_ID.fullmatch(value):
            raise InvalidIdentifier("must be the platform's user id")
        return value
    if kind == DEVICE_ID:
        value = raw.strip()
        if not _DEVICE.fullmatch(value):
            raise InvalidIdentifier("must be 1 to 256 printable characters without spaces")
        return value
    raise InvalidIdentifier("is not a known identifier kind")


def mask(kind: int, value: str) -> str:
    """A destination shown back to the person: enough to recognize it, not enough to learn it."""
    if kind == EMAIL:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind == PHONE:
        return f"{value[:3]}{'*' * max(len(value) - 5, 0)}{value[-2:]}"
    return f"{value[:2]}***"


# --- passwords ---------------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256  # Argon2 copes with more, but there is no reason to hash megabytes.

# The most common passwords of public breach corpora that are at least ten characters long. A
# full breached-password service (k-anonymity range queries) would replace this list; the check
# is one place, ``password_problem``.
_BREACHED = frozenset(
    {
        "1234567890",
        "12345678910",
        "0123456789",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "qwertyuiop",
        "qwerty12345",
        "qwerty123456",
        "password12",
        "password123",
        "password1234",
        "passw0rd123",
        "iloveyou123",
        "abcdefghij",
        "abc1234567",
        "1111111111",
        "0000000000",
        "9876543210",
        "asdfghjkl1",
        "zaq12wsxcde",
        "letmein123",
        "welcome123",
        "football123",
        "monkey12345",
        "dragon12345",
        "sunshine123",
        "princess123",
        "superman123",
        "baseball123",
        "trustno1234",
        "administrator",
        "changeme123",
        "qwertyuiop123",
        "1234qwerasdf",
        "q1w2e3r4t5y6",
        "aaaaaaaaaa",
    }
)


def password_problem(password: str) -> tuple[str, str] | None:
    """(reason, description) of what is wrong with a new password, or None if it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "PASSWORD_TOO_SHORT", f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return "PASSWORD_TOO_LONG", f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if password.lower() in _BREACHED or len(set(password)) <= 2:
        return "PASSWORD_BREACHED", "is too common; it appears in lists of breached passwords"
    return None


# --- lock-out and back-off ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """How repeated log-in failures slow an attacker down.

    Two counters, both reset by a successful log-in:
    - per identifier (known or unknown alike, so the answer never tells whether an account
      exists): after ``throttle_after`` consecutive failures, further attempts on that identifier
      are refused without checking the password for a back-off that doubles with each failure;
    - per account (across all its identifiers, so alternating e-mail and phone does not help):
      after ``lock_after`` consecutive failures the account is locked for a period that doubles
      with each further failure. A locked account tells the caller so only when the password
      was right; a wrong password gets the same INVALID_CREDENTIALS as everyone else.
    """

    throttle_after: int = 5
    throttle_base: timedelta = timedelta(seconds=30)
    throttle_max: timedelta = timedelta(minutes=15)
    lock_after: int = 10
    lock_base: timedelta = timedelta(minutes=15)
    lock_max: timedelta = timedelta(hours=24)

    def throttle_until(self, failures: int, now: datetime) -> datetime | None:
        if failures < self.throttle_after:
            return None
        factor = 2 ** min(failures - self.throttle_after, 16)
        delay: timedelta = min(self.throttle_base * factor, self.throttle_max)
        return now + delay

    def lock_until(self, failures: int, now: datetime) -> datetime | None:
        if failures < self.lock_after:
            return None
        factor = 2 ** min(failures - self.lock_after, 16)
        delay: timedelta = min(self.lock_base * factor, self.lock_max)
        return now + delay


def throttle_key(realm: str, kind: int, value: str) -> bytes:
    """The throttle row of an identifier; hashed so the table holds no personal data."""
    return hashlib.sha256(f"{realm}\x00{kind}\x00{value}".encode()).digest()


# --- one-time codes, refresh tokens, secrets ---------------------------------------------------

CODE_LENGTH = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"


def code_hash(challenge_id: str, code: str) -> bytes:
    """Codes are stored hashed and salted with their challenge id.

    A six-digit code has too little entropy for a hash to resist an attacker who can read the
    table; what protects a code is its short life and the attempt limit. The hash keeps codes
    out of backups, query logs and casual reads.
    """
    return hashlib.sha256(f"{challenge_id}:{code}".encode()).digest()


def same_code(stored: bytes | None, challenge_id: str, code: str) -> bool:
    return stored is not None and hmac.compare_digest(stored, code_hash(challenge_id, code))


REFRESH_TOKEN_PREFIX = "ort_"  # noqa: S105 - a prefix, recognizable by secret scanners


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """Refresh tokens are 256-bit random, so a plain SHA-256 is a safe and fast lookup key."""
    return hashlib.sha256(token.encode()).digest()


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(REFRESH_TOKEN_PREFIX)


def new_client_secret() -> str:
    return "ocs_" + secrets.token_urlsafe(32)


def new_id() -> str:
    return uuid.uuid4().hex


def new_challenge_id() -> str:
    return secrets.token_urlsafe(18)


# --- roles -------------------------------------------------------------------------------------

Role = resources_pb2.Role
ROLE_NAMES: dict[int, str] = {
    resources_pb2.ROLE_CUSTOMER: "customer",
    resources_pb2.ROLE_AGENT: "agent",
    resources_pb2.ROLE_STORE_ASSOCIATE: "store_associate",
    resources_pb2.ROLE_MARKETER: "marketer",
    resources_pb2.ROLE_ADMIN: "admin",
    resources_pb2.ROLE_SERVICE: "service",
    resources_pb2.ROLE_GUEST: "guest",
}
ROLE_VALUES: dict[str, int] = {name: value for value, name in ROLE_NAMES.items()}
STAFF_ROLES = frozenset({"agent", "store_associate", "marketer", "admin"})
SERVICE_CLIENT_ROLES = frozenset(ROLE_VALUES) - {"customer", "guest"}


def role_values(names: list[str] | tuple[str, ...] | frozenset[str]) -> list[int]:
    return [ROLE_VALUES[n] for n in sorted(names) if n in ROLE_VALUES]


# --- etags -------------------------------------------------------------------------------------


def etag(version: int) -> str:
    """AIP-154 etag of a row version; weak because it says nothing about the representation."""
    return f'W/"{version}"'


def etag_matches(given: str, version: int) -> bool:
    """An empty etag means "no precondition"; otherwise it must be the current one."""
    return not given or given == etag(version)
