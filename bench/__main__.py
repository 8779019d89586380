"""``make bench``: run every scenario in bench/scenarios/ and write bench/results/latest.json.

Each scenario module exposes ``async def run(env: BenchEnv) -> dict``. Scenarios run one after
another against one embedded PostgreSQL and NATS; each gets fresh databases. Pass scenario names
to run a subset: ``python -m bench runtime identity``. A scenario lists its goals under
``"targets"`` (bench/report.py); the table of every target is printed at the end. The load
average before and after the run is recorded: on a shared machine it says how far to trust
the figures. See bench/README.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.env import ROOT, BenchEnv

RESULTS = ROOT / "bench" / "results"


def discover(selected: list[str]) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(scenarios.__path__))
    return [n for n in names if not selected or n in selected]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def run_all(names: list[str], env: BenchEnv) -> dict[str, Any]:
    results: dict[str, Any] = {}
    try:
        await _run_each(names, env, results)
    finally:
        await env.close()
    return results


async def _run_each(names: list[str], env: BenchEnv, results: dict[str, Any]) -> None:
    for name in names:
        module = importlib.import_module(f"bench.scenarios.{name}")
        print(f"[bench] {name}…", flush=True)
        started = time.perf_counter()
        try:
            results[name] = await module.run(env)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["_wall_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(results[name], indent=2), flush=True)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def main() -> int:
    names = discover(sys.argv[1:])
    if not names:
        print("no such scenario; available:", ", ".join(discover([])))
        return 2
    started = time.perf_counter()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="omni-bench-") as tmp:
        env = BenchEnv(Path(tmp))
        env.start()
        try:
            results = asyncio.run(run_all(names, env))
        finally:
            env.stop()
    document = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "scenarios": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"[bench] results written to {out.relative_to(ROOT)}")
    met, every = report.counts(results)
    print(
        f"\n[bench] {met} of {every} targets met in {document['wall_s']:.0f} s; "
        f"load average {load_before} before, {document['machine']['load_average_after']} after "
        f"({os.cpu_count()} CPUs)\n"
    )
    print(report.table(results))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
