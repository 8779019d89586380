"""The inventory's rules without I/O: stock arithmetic, allocation, distance, opening hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.type import dayofweek_pb2, timeofday_pb2

from omni.inventory.v1 import resources_pb2 as res
from services.inventory.domain import allocation, geo, hours
from services.inventory.domain.stock import Quantities, crossings

# --- stock -----------------------------------------------------------------------------------


def test_available_never_negative_and_status_follows_the_numbers() -> None:
    assert Quantities(10, 3, 2, 0).available == 5
    assert Quantities(2, 5, 0, 0).available == 0
    assert Quantities(2, 5, 0, 0).status == res.STOCK_STATUS_OVERSOLD
    assert Quantities(5, 5, 0, 0).status == res.STOCK_STATUS_OUT_OF_STOCK
    assert Quantities(5, 0, 0, 5).status == res.STOCK_STATUS_LOW_STOCK
    assert Quantities(6, 0, 0, 5).status == res.STOCK_STATUS_IN_STOCK
    assert Quantities(1, 0, 0, 0).status == res.STOCK_STATUS_IN_STOCK  # threshold 0 disables LOW


@pytest.mark.parametrize(
    ("before", "after", "low", "out", "back"),
    [
        (Quantities(10, 0, 0, 3), Quantities(3, 0, 0, 3), True, False, False),
        (Quantities(3, 0, 0, 3), Quantities(2, 0, 0, 3), False, False, False),  # already low: once
        (Quantities(10, 0, 0, 3), Quantities(0, 0, 0, 3), False, True, False),  # straight to zero
        (Quantities(0, 0, 0, 3), Quantities(2, 0, 0, 3), False, False, True),  # back, not "dropped"
        (Quantities(1, 1, 0, 0), Quantities(1, 0, 0, 0), False, False, True),  # released
        (Quantities(-2, 0, 0, 0), Quantities(0, 0, 0, 0), False, False, False),
    ],
)
def test_threshold_crossings(before: Quantities, after: Quantities, low: bool, out: bool, back: bool) -> None:
    c = crossings(before, after)
    assert (c.low_stock, c.out_of_stock, c.back_in_stock) == (low, out, back)


# --- allocation ------------------------------------------------------------------------------

SITES = [
    allocation.Site("a", priority=2, distance_m=100.0),
    allocation.Site("b", priority=1, distance_m=5000.0),
    allocation.Site("c", priority=3, distance_m=None),
]


def _plan(strategy: int, quantity: int, split: bool, stock: dict[str, int]) -> allocation.Plan:
    return allocation.plan(
        [allocation.Line(0, "X", quantity)],
        strategy=strategy,
        allow_split=split,
        sites=SITES,
        available={(loc, "X"): n for loc, n in stock.items()},
    )


def test_priority_draws_on_the_lowest_priority_number_first() -> None:
    assert _plan(allocation.PRIORITY, 2, False, {"a": 5, "b": 5, "c": 5}).allocations == {0: [("b", 2)]}


def test_most_stock_draws_on_the_fullest_location() -> None:
    assert _plan(allocation.MOST_STOCK, 2, False, {"a": 5, "b": 1, "c": 9}).allocations == {0: [("c", 2)]}


def test_nearest_ignores_locations_without_coordinates() -> None:
    assert _plan(allocation.NEAREST, 2, False, {"a": 1, "b": 5, "c": 50}).allocations == {0: [("b", 2)]}


def test_a_line_splits_only_when_allowed() -> None:
    stock = {"a": 2, "b": 2, "c": 0}
    whole = _plan(allocation.PRIORITY, 3, False, stock)
    assert whole.allocations == {}
    assert whole.shortfalls == [allocation.Shortfall(0, "X", 3, 2)]
    split = _plan(allocation.PRIORITY, 3, True, stock)
    assert split.allocations == {0: [("b", 2), ("a", 1)]}


def test_earlier_lines_consume_the_snapshot_before_later_ones() -> None:
    lines = [allocation.Line(0, "X", 3, "a"), allocation.Line(1, "X", 3)]
    plan = allocation.plan(
        lines,
        strategy=allocation.PRIORITY,
        allow_split=False,
        sites=[allocation.Site("a", 0)],
        available={("a", "X"): 4},
    )
    assert plan.allocations == {0: [("a", 3)]}
    assert plan.shortfalls == [allocation.Shortfall(1, "X", 3, 1)]


def test_takes_are_totalled_per_level_and_sorted_for_lock_order() -> None:
    lines = [
        allocation.Line(0, "Y", 1, "b"),
        allocation.Line(1, "X", 2, "b"),
        allocation.Line(2, "X", 1, "a"),
    ]
    plan = allocation.plan(
        lines,
        strategy=allocation.FIXED,
        allow_split=False,
        sites=[],
        available={("b", "Y"): 9, ("b", "X"): 9, ("a", "X"): 9},
    )
    assert plan.takes() == [("a", "X", 1), ("b", "X", 2), ("b", "Y", 1)]


def test_unspecified_strategy_means_fixed_only_when_every_line_names_a_location() -> None:
    fixed = [allocation.Line(0, "X", 1, "a")]
    assert allocation.effective_strategy(0, fixed) == allocation.FIXED
    assert allocation.effective_strategy(0, [*fixed, allocation.Line(1, "Y", 1)]) == allocation.PRIORITY


# --- geo -------------------------------------------------------------------------------------


def test_haversine_matches_known_distances() -> None:
    # Cluj-Napoca → Bucharest is about 324 km as the crow flies.
    assert geo.haversine_m(46.7712, 23.6236, 44.4268, 26.1025) == pytest.approx(324_000, rel=0.01)
    assert geo.haversine_m(10, 10, 10, 10) == 0


def test_bounding_box_contains_the_circle_and_drops_longitude_near_poles() -> None:
    box = geo.bounding_box(46.77, 23.59, 10_000)
    assert box.min_lat < 46.77 - 0.08 and box.max_lat > 46.77 + 0.08
    assert box.min_lng is not None and box.min_lng < 23.59 - 0.1
    assert geo.bounding_box(89.99, 0, 10_000).min_lng is None
    assert geo.bounding_box(0, 179.99, 10_000).min_lng is None  # antimeridian


# --- opening hours ---------------------------------------------------------------------------


def _hours(
    *periods: tuple[int, tuple[int, int], tuple[int, int]], zone: str = "Europe/Bucharest"
) -> res.OpeningHours:
    return res.OpeningHours(
        time_zone=zone,
        periods=[
            res.OpeningPeriod(
                day=day,  # type: ignore[arg-type]
                open_time=timeofday_pb2.TimeOfDay(hours=o[0], minutes=o[1]),
                close_time=timeofday_pb2.TimeOfDay(hours=c[0], minutes=c[1]),
            )
            for day, o, c in periods
        ],
    )


def test_open_now_in_the_stores_time_zone() -> None:
    weekday = _hours(*((d, (9, 0), (18, 0)) for d in range(dayofweek_pb2.MONDAY, dayofweek_pb2.SATURDAY)))
    # Monday 2025-06-02 06:30 UTC is 09:30 in Bucharest (UTC+3 in summer).
    assert hours.is_open(weekday, datetime(2025, 6, 2, 6, 30, tzinfo=UTC))
    assert not hours.is_open(weekday, datetime(2025, 6, 2, 5, 30, tzinfo=UTC))  # 08:30 local
    assert not hours.is_open(weekday, datetime(2025, 6, 7, 10, 0, tzinfo=UTC))  # Saturday
    assert not hours.is_open(res.OpeningHours(), datetime(2025, 6, 2, 10, 0, tzinfo=UTC))


def test_overnight_and_sunday_to_monday_periods() -> None:
    late = _hours((dayofweek_pb2.SUNDAY, (20, 0), (2, 0)), zone="UTC")
    assert hours.is_open(late, datetime(2025, 6, 1, 21, 0, tzinfo=UTC))  # Sunday 21:00
    assert hours.is_open(late, datetime(2025, 6, 2, 1, 59, tzinfo=UTC))  # Monday 01:59
    assert not hours.is_open(late, datetime(2025, 6, 2, 2, 0, tzinfo=UTC))
    midnight = _hours((dayofweek_pb2.FRIDAY, (18, 0), (24, 0)), zone="UTC")
    assert hours.is_open(midnight, datetime(2025, 6, 6, 23, 59, tzinfo=UTC))
    assert hours.validate(midnight, "h") == []


def test_opening_hours_validation() -> None:
    assert hours.validate(_hours((dayofweek_pb2.MONDAY, (9, 0), (18, 0)), zone="Mars/Olympus"), "h") == [
        ("h.time_zone", "must be an IANA time zone such as Europe/Bucharest")
    ]
    overlapping = _hours((dayofweek_pb2.MONDAY, (9, 0), (18, 0)), (dayofweek_pb2.MONDAY, (17, 0), (19, 0)))
    assert [p for p, _ in hours.validate(overlapping, "h")] == ["h.periods"]
    wrapping = _hours((dayofweek_pb2.SUNDAY, (20, 0), (3, 0)), (dayofweek_pb2.MONDAY, (1, 0), (9, 0)))
    assert [p for p, _ in hours.validate(wrapping, "h")] == ["h.periods"]
    bad = _hours((0, (25, 0), (9, 0)))
    assert {p for p, _ in hours.validate(bad, "h")} == {"h.periods[0].day", "h.periods[0].open_time"}
    no_zone = _hours((dayofweek_pb2.MONDAY, (9, 0), (9, 0)), zone="")
    assert {p for p, _ in hours.validate(no_zone, "h")} == {"h.time_zone", "h.periods[0].close_time"}
