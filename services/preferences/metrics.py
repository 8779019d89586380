"""Domain metrics of the preferences service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards and alert rules under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter

DECISIONS = Counter(
    "omni_preferences_decisions_total",
    "DecideContact answers by purpose, outcome (allowed, refused) and the first blocking reason "
    "on the answered channel (allowed when none).",
    ("purpose", "outcome", "reason"),
)
CONSENT_CHANGES = Counter(
    "omni_preferences_consent_changes_total",
    "Consent ledger entries by channel, new state and cause (set, confirm, expire, merge).",
    ("channel", "state", "cause"),
)
CONFIRMATIONS = Counter(
    "omni_preferences_confirmations_total",
    "Double opt-in confirmation attempts by outcome (confirmed, used, expired, superseded, unknown).",
    ("outcome",),
)
CONTACTS = Counter(
    "omni_preferences_contacts_total",
    "Marketing contacts counted against frequency caps, by how (reserved, recorded) and result "
    "(counted, capped).",
    ("via", "result"),
)
SWEEPS = Counter(
    "omni_preferences_sweeps_total",
    "Passes of the pending-consent expiry sweeper by outcome (ok, error).",
    ("outcome",),
)
