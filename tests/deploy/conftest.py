"""Renders shared by the deploy tests: each value set is rendered once per session."""

from __future__ import annotations

import pytest

from .helpers import VALUE_SETS, Release, render


@pytest.fixture(scope="session")
def releases() -> dict[str, Release]:
    return {name: render(files) for name, files in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def default_release(releases: dict[str, Release]) -> Release:
    return releases["default"]


@pytest.fixture(scope="session")
def production_release(releases: dict[str, Release]) -> Release:
    return releases["production"]
