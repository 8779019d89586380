"""Domain metrics of the inventory service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards and alert rules under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from omni_runtime.metrics import initialise

RESERVATIONS = Counter(
    "omni_inventory_reservations_total",
    "Reservation lifecycle events; outcome is created, rejected, committed, released or expired.",
    ("outcome",),
)
RESERVATION_FAILURES = Counter(
    "omni_inventory_reservation_failures_total",
    "Reservation attempts that failed, by reason (e.g. insufficient_stock, unknown_item, conflict).",
    ("reason",),
)
STOCK_MOVEMENTS = Counter(
    "omni_inventory_stock_movements_total",
    "Stock ledger movements by kind (e.g. receipt, sale, adjustment, transfer).",
    ("kind",),
)
RESERVATION_RETRIES = Counter(
    "omni_inventory_reservation_retries_total",
    "Reservation attempts planned from a snapshot a concurrent reservation invalidated, and retried.",
)
GROUP_SIZE = Histogram(
    "omni_inventory_reservation_group_size",
    "Calls served by one transaction on a stock level (reservations, commits and releases of one "
    "(location, item) arriving together); a flash sale shows as large groups.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SWEEPS = Counter(
    "omni_inventory_expiry_sweeps_total",
    "Passes of the reservation expiry sweeper, by result (ok or error).",
    ("result",),
)

# Outcomes known in advance start at 0, so ratios and alerts read 0 before the first event.
initialise(RESERVATIONS, [(o,) for o in ("created", "rejected", "committed", "released", "expired")])
initialise(
    RESERVATION_FAILURES,
    [(r,) for r in ("insufficient_stock", "item_inactive", "unknown_item_or_location")],
)
initialise(SWEEPS, [("ok",), ("error",)])
