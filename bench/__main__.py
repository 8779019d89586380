"""``make bench``: run every scenario in bench/scenarios/ and write bench/results/latest.json.

Each scenario module exposes ``async def run(env: BenchEnv) -> dict``. Scenarios run one after
another against one embedded PostgreSQL and NATS; each gets fresh databases. Pass scenario names
to run a subset: ``python -m bench runtime identity``.
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

from bench import scenarios
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
    return results


def main() -> int:
    names = discover(sys.argv[1:])
    if not names:
        print("no such scenario; available:", ", ".join(discover([])))
        return 2
    with tempfile.TemporaryDirectory(prefix="omni-bench-") as tmp:
        env = BenchEnv(Path(tmp))
        env.start()
        try:
            results = asyncio.run(run_all(names, env))
        finally:
            env.stop()
    report = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "scenarios": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] results written to {out.relative_to(ROOT)}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
