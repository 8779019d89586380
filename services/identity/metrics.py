"""Domain metrics of the identity service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards and alert rules under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter

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
