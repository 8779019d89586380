"""Targets and the summary table ``make bench`` prints at the end.

A scenario states what it aims for by adding ``"targets": [target(...), ...]`` to its result;
the runner collects them from every scenario and prints one table (scenario, level, figure,
value, target, met / not met), so a reader does not have to open the JSON. Every figure is a
ratio or a count measured within the same run, never an absolute time: on a shared machine
absolute numbers move with the neighbours' load, same-run ratios much less.
"""

from __future__ import annotations

from typing import Any


def target(
    figure: str, level: str, value: float | None, goal: float, *, at_most: bool = False
) -> dict[str, Any]:
    """One target: ``value >= goal`` (or ``<=`` with ``at_most``); ``value`` None means not measured."""
    met = None if value is None else (value <= goal if at_most else value >= goal)
    return {
        "figure": figure,
        "level": level,
        "value": value,
        "goal": f"{'<=' if at_most else '>='} {goal:g}",
        "met": met,
    }


def table(scenarios: dict[str, Any]) -> str:
    rows = [("scenario", "level", "figure", "value", "target", "met")]
    for name, result in scenarios.items():
        if "error" in result:
            rows.append((name, "-", "scenario failed", "-", "-", "ERROR"))
        for t in result.get("targets", []):
            value = "-" if t["value"] is None else f"{t['value']:g}"
            met = "not measured" if t["met"] is None else "met" if t["met"] else "NOT MET"
            rows.append((name, t["level"], t["figure"], value, t["goal"], met))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def counts(scenarios: dict[str, Any]) -> tuple[int, int]:
    """(targets met, targets in all)."""
    every = [t for r in scenarios.values() for t in r.get("targets", [])]
    return sum(1 for t in every if t["met"]), len(every)
