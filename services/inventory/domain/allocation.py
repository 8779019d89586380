"""Allocation of a reservation's lines to locations: the strategies, without I/O.

The planner works on a snapshot of availability; the ledger then takes the planned quantities
with guarded updates (``available >= quantity`` in one SQL statement). A snapshot that went
stale makes a guarded update miss, and the caller plans again from a fresh snapshot. The plan is
therefore only ever a proposal: the guard is what prevents overselling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from omni.inventory.v1 import resources_pb2 as res

FIXED = res.ALLOCATION_STRATEGY_FIXED_LOCATION
PRIORITY = res.ALLOCATION_STRATEGY_PRIORITY
MOST_STOCK = res.ALLOCATION_STRATEGY_MOST_STOCK
NEAREST = res.ALLOCATION_STRATEGY_NEAREST


@dataclass(frozen=True, slots=True)
class Line:
    """One requested line: ``location`` empty when the server chooses."""

    index: int
    item: str
    quantity: int
    location: str = ""


@dataclass(frozen=True, slots=True)
class Site:
    """A location as the strategies see it."""

    location: str
    priority: int
    distance_m: float | None = None


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A line that cannot be fully reserved: what was asked and what was there."""

    line_index: int
    item: str
    requested: int
    available: int
    location: str = ""


@dataclass
class Plan:
    """Where each line's units come from, and the lines that cannot be served."""

    allocations: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    shortfalls: list[Shortfall] = field(default_factory=list)
    # The item of each line index, to total quantities per (location, item).
    line_items: dict[int, str] = field(default_factory=dict)

    def takes(self) -> list[tuple[str, str, int]]:
        """Quantities per (location, item), sorted: the order in which rows are locked."""
        totals: dict[tuple[str, str], int] = {}
        for line_index, parts in self.allocations.items():
            item = self.line_items[line_index]
            for location, quantity in parts:
                totals[(location, item)] = totals.get((location, item), 0) + quantity
        return [(loc, item, qty) for (loc, item), qty in sorted(totals.items())]


def effective_strategy(strategy: int, lines: Iterable[Line]) -> int:
    """UNSPECIFIED means FIXED_LOCATION when every line names a location, otherwise PRIORITY."""
    if strategy != res.ALLOCATION_STRATEGY_UNSPECIFIED:
        return strategy
    return FIXED if all(line.location for line in lines) else PRIORITY


def order_sites(strategy: int, sites: Iterable[Site], available: Mapping[str, int]) -> list[Site]:
    """Candidate sites in the order the strategy draws on them (ties: priority, then name)."""
    eligible = [s for s in sites if strategy != NEAREST or s.distance_m is not None]
    if strategy == MOST_STOCK:
        return sorted(eligible, key=lambda s: (-available.get(s.location, 0), s.priority, s.location))
    if strategy == NEAREST:
        return sorted(eligible, key=lambda s: (s.distance_m or 0.0, s.priority, s.location))
    return sorted(eligible, key=lambda s: (s.priority, s.location))


def plan(
    lines: Sequence[Line],
    *,
    strategy: int,
    allow_split: bool,
    sites: Sequence[Site],
    available: Mapping[tuple[str, str], int],
) -> Plan:
    """Allocate every line against the snapshot ``available[(location, item)]``.

    Lines that name a location draw only there. The others draw on ``sites`` in the strategy's
    order, one site per line unless ``allow_split``. Earlier lines consume the snapshot before
    later ones, so two lines of one item never count the same units twice.
    """
    left = dict(available)
    result = Plan(line_items={line.index: line.item for line in lines})
    for line in sorted(lines, key=lambda ln: (not ln.location, ln.index)):
        if line.location:
            have = left.get((line.location, line.item), 0)
            if have < line.quantity:
                result.shortfalls.append(Shortfall(line.index, line.item, line.quantity, have, line.location))
                continue
            left[(line.location, line.item)] = have - line.quantity
            result.allocations[line.index] = [(line.location, line.quantity)]
            continue
        per_site = {s.location: left.get((s.location, line.item), 0) for s in sites}
        ordered = order_sites(strategy, sites, per_site)
        parts: list[tuple[str, int]] = []
        if allow_split:
            need = line.quantity
            for site in ordered:
                have = per_site[site.location]
                if have <= 0:
                    continue
                take = min(have, need)
                parts.append((site.location, take))
                need -= take
                if need == 0:
                    break
            if need > 0:
                parts = []
        else:
            for site in ordered:
                if per_site[site.location] >= line.quantity:
                    parts = [(site.location, line.quantity)]
                    break
        if not parts:
            total = sum(max(0, per_site[s.location]) for s in ordered)
            best = max((per_site[s.location] for s in ordered), default=0)
            result.shortfalls.append(
                Shortfall(line.index, line.item, line.quantity, total if allow_split else max(0, best))
            )
            continue
        for location, take in parts:
            left[(location, line.item)] = left.get((location, line.item), 0) - take
        result.allocations[line.index] = parts
    result.shortfalls.sort(key=lambda s: s.line_index)
    return result
