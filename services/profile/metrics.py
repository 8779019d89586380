"""Domain metrics of the profile service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_APPLIED = Counter(
    "omni_profile_events_applied_total",
    "Interactions recorded on timelines by source (an event subject such as cart.order_placed, or rpc).",
    ("source",),
)
SEGMENT_EVALUATIONS = Counter(
    "omni_profile_segment_evaluations_total",
    "Segment evaluations by kind (incremental, time_pass, recompute).",
    ("kind",),
)
SEGMENT_CHANGES = Counter(
    "omni_profile_segment_membership_changes_total",
    "Segment joins and leaves (change = joined or left).",
    ("change",),
)
VIEW_FANOUT_SECONDS = Histogram(
    "omni_profile_view_fanout_seconds",
    "Time GetCustomerView waited for each source service (cart, messaging, preferences).",
    ("source",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
VIEW_UNAVAILABLE = Counter(
    "omni_profile_view_unavailable_sources_total",
    "Customer views answered without a source's part (it did not answer in time, or failed).",
    ("source",),
)
MERGES = Counter(
    "omni_profile_merges_total", "Profile merges and unmerges (kind = merge or unmerge).", ("kind",)
)
ERASURE_RECEIPTS = Counter(
    "omni_profile_erasure_receipts_total",
    "Erasure receipts collected, by service and state (done, failed).",
    ("service", "state"),
)
