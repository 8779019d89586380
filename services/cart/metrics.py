"""Domain metrics of the cart service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards and alert rules under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from omni_runtime.metrics import initialise

CHECKOUTS = Counter(
    "omni_cart_checkouts_total",
    "Checkout attempts by outcome (e.g. completed, rejected, failed).",
    ("outcome",),
)
MUTATIONS = Counter(
    "omni_cart_mutations_total",
    "Changes to carts by kind (e.g. add_item, update_quantity, remove_item, merge, apply_promotion).",
    ("kind",),
)
WATCHERS = Gauge(
    "omni_cart_watchers",
    "Open live-update streams (WatchCart) on this process.",
)

# Outcomes known in advance start at 0, so ratios and alerts read 0 before the first event.
initialise(CHECKOUTS, [("completed",), ("rejected",), ("failed",)])
