"""GetJourneyReport: how customers move between channels before they buy, in one SQL query
over the timeline (purchases of the window from the partial index on ORDER_PLACED, each
purchase's touches from the customer's timeline index)."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf import duration_pb2
from sqlalchemy import text

from omni.profile.v1 import profile_service_pb2 as r
from omni_runtime.db.engine import Database
from omni_runtime.timestamps import to_proto, utcnow

_REPORT = text(
    """
WITH p AS (
  SELECT id, customer, occur_time AS t, channel
  FROM interactions
  WHERE type = 6 AND occur_time >= :start AND occur_time < :end
),
touch AS (
  SELECT p.id AS pid, p.t, i.id AS iid, i.channel, i.occur_time
  FROM p JOIN interactions i
    ON i.customer = p.customer AND i.occur_time >= p.t - CAST(:lookback AS interval) AND i.occur_time <= p.t
   AND i.channel <> 0 AND (i.occur_time < p.t OR i.id <= p.id)
),
marked AS (
  SELECT pid, t, iid, channel, occur_time,
         lag(channel) OVER (PARTITION BY pid ORDER BY occur_time, iid) AS prev,
         row_number() OVER (PARTITION BY pid ORDER BY occur_time DESC, iid DESC) AS from_end
  FROM touch
),
journeys AS (
  SELECT pid, min(t) AS t,
         array_agg(channel ORDER BY occur_time, iid) FILTER (WHERE prev IS DISTINCT FROM channel) AS path,
         (array_agg(channel ORDER BY occur_time, iid))[1] AS first_channel,
         coalesce(
           (array_agg(channel ORDER BY occur_time DESC, iid DESC) FILTER (WHERE from_end > 1))[1],
           (array_agg(channel ORDER BY occur_time DESC, iid DESC))[1]
         ) AS last_channel,
         min(t) - min(occur_time) AS lead_time
  FROM marked GROUP BY pid
),
cut AS (
  SELECT pid, first_channel, last_channel, lead_time,
         path[greatest(1, cardinality(path) - :max_len + 1) : cardinality(path)] AS path
  FROM journeys
)
SELECT 'path' AS kind, array_to_string(path, ',') AS k, count(*) AS n, NULL::interval AS median
FROM cut GROUP BY path
UNION ALL SELECT 'first', first_channel::text, count(*), NULL FROM cut GROUP BY first_channel
UNION ALL SELECT 'last', last_channel::text, count(*), NULL FROM cut GROUP BY last_channel
UNION ALL SELECT 'median', '', count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_time) FROM cut
UNION ALL SELECT 'purchases', '', (SELECT count(*) FROM p), NULL
UNION ALL SELECT 'customers', '', (SELECT count(DISTINCT customer) FROM p), NULL
"""
)


class Journeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def report(
        self, start: datetime, end: datetime, lookback_days: int, max_paths: int, max_len: int
    ) -> r.JourneyReport:
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    _REPORT,
                    {
                        "start": start,
                        "end": end,
                        "lookback": timedelta(days=lookback_days),
                        "max_len": max_len,
                    },
                )
            ).all()
        out = r.JourneyReport(
            start_time=to_proto(start),
            end_time=to_proto(end),
            lookback_days=lookback_days,
            compute_time=to_proto(utcnow()),
        )
        totals = {row.kind: row.n for row in rows if row.kind in ("purchases", "customers")}
        out.purchase_count = int(totals.get("purchases", 0))
        out.customer_count = int(totals.get("customers", 0))
        total = out.purchase_count or 1
        paths = sorted((row for row in rows if row.kind == "path" and row.k), key=lambda row: (-row.n, row.k))
        for row in paths[:max_paths]:
            out.paths.append(
                r.JourneyPath(
                    channels=[int(c) for c in row.k.split(",")],  # type: ignore[misc]
                    purchase_count=row.n,
                    share=row.n / total,
                )
            )
        for kind, target in (("first", out.first_touch), ("last", out.last_touch)):
            for row in sorted((row for row in rows if row.kind == kind and row.k), key=lambda row: -row.n):
                target.append(
                    r.ChannelTouchShare(
                        channel=int(row.k),  # type: ignore[arg-type]
                        purchase_count=row.n,
                        share=row.n / total,
                    )
                )
        median = next((row.median for row in rows if row.kind == "median"), None)
        if median is not None:
            out.median_time_to_purchase.CopyFrom(duration_pb2.Duration(seconds=int(median.total_seconds())))
        return out
