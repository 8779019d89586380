"""The omni-client wheel built from this checkout and installed alone, as a channel backend has it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from omni_runtime.devtools import client_wheel


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    site: Path

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for ``python -S``: the wheel and third-party packages, none of the repo's.

        ``-S`` skips site-packages' ``.pth`` files, and with them the editable install that puts
        ``omni_runtime``, ``services`` and the repo's ``gen/`` on the path.
        """
        third_party = sysconfig.get_paths()["purelib"]
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.site), third_party]), **extra}

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", *args],
            env=self.env(**env),
            cwd=self.site,  # not the repo root, whose packages would be importable from ""
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def install(tmp: Path) -> InstalledWheel:
    wheel = client_wheel.build(tmp / "dist")
    site = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return InstalledWheel(wheel, site)
