"""Domain metrics of the identity service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards and alert rules under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from omni_runtime.metrics import initialise

LOGINS = Counter(
    "omni_identity_logins_total",
    "Login attempts by outcome (e.g. success, bad_credentials, locked, unknown_identifier).",
    ("outcome",),
)
TOKENS_ISSUED = Counter(
    "omni_identity_tokens_issued_total",
    "Tokens issued by kind (e.g. access, refresh, service).",
    ("kind",),
)
REGISTRATIONS = Counter(
    "omni_identity_registrations_total",
    "Customer registrations by outcome (created, upgraded_guest, identifier_taken).",
    ("outcome",),
)
REFRESH_TOKEN_REUSE = Counter(
    "omni_identity_refresh_token_reuse_total",
    "Rotated-out refresh tokens presented again; each revoked its whole session (possible theft).",
)
ONE_TIME_CODES = Counter(
    "omni_identity_one_time_codes_total",
    "One-time codes by outcome (issued, decoy, verified, wrong, expired, exhausted).",
    ("outcome",),
)
SESSIONS_REVOKED = Counter(
    "omni_identity_sessions_revoked_total",
    "Sessions revoked by reason (logout, logout_all, refresh_token_reused, ...).",
    ("reason",),
)
PASSWORD_HASH_SECONDS = Histogram(
    "omni_identity_password_hash_seconds",
    "Time spent in Argon2id (hash or verify), including the wait for a worker thread.",
    ("operation",),
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
GUESTS_FROM_IDENTIFIERS = Counter(
    "omni_identity_guests_from_identifiers_total",
    "Guest customers created by ResolveIdentity (create_guest) for a handle nobody held: a message "
    "from an unknown phone number, address or social account.",
)
SIGNING_KEYS = Gauge(
    "omni_identity_signing_keys",
    "Token signing keys currently published in the JWKS (2 during a rotation).",
)

# Outcomes known in advance start at 0, so ratios and alerts read 0 before the first event.
LOGIN_OUTCOMES = ("success", "bad_credentials", "unknown_identifier", "locked", "throttled")
initialise(LOGINS, [(o,) for o in LOGIN_OUTCOMES])
initialise(TOKENS_ISSUED, [(k,) for k in ("access", "refresh", "service")])
initialise(REGISTRATIONS, [(o,) for o in ("created", "upgraded_guest", "identifier_taken")])
initialise(ONE_TIME_CODES, [(o,) for o in ("issued", "decoy", "verified", "wrong", "expired", "exhausted")])
initialise(PASSWORD_HASH_SECONDS, [("hash",), ("verify",)])
