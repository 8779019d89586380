"""pytest plugin with Omni's shared fixtures.

- ``omni_infra``: one embedded PostgreSQL and one NATS JetStream for the whole test session,
  on free ports (never the platform's fixed ones), in a temporary directory.
- ``database_url``: a fresh, empty database per test module.
- ``signing_key`` / ``key_source`` / ``make_token``: a real Ed25519 key and real signed tokens,
  so authentication in tests goes through exactly the code production runs.
- ``service_settings``: settings for an in-process service bound to those resources.

Loaded for every test through ``-p omni_runtime.testing.plugin`` in pyproject's pytest options.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.auth.tokens import SigningKey, issue_token
from omni_runtime.config import Settings
from omni_runtime.localinfra import EmbeddedNats, EmbeddedPostgres, free_port
from omni_runtime.testing.services import test_settings

_counter = itertools.count(1)


@dataclass
class Infra:
    postgres: EmbeddedPostgres
    nats: EmbeddedNats

    @property
    def nats_url(self) -> str:
        return self.nats.url

    def new_database(self, hint: str) -> str:
        name = f"t{next(_counter)}_" + re.sub(r"[^a-z0-9_]", "_", hint.lower())[-40:]
        return self.postgres.create_database(name)


@pytest.fixture(scope="session")
def omni_infra() -> Iterator[Infra]:
    # Not under pytest's basetemp: every pytest session re-tightens /tmp/pytest-of-<user> to 0700,
    # which locks the PostgreSQL system user out of a concurrently starting session's data dir.
    root = Path(tempfile.mkdtemp(prefix="omni-infra-"))
    try:
        yield from _infra(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _infra(root: Path) -> Iterator[Infra]:
    postgres = EmbeddedPostgres(root / "pg", free_port(), durable=False)
    nats = EmbeddedNats(root / "nats", free_port())
    postgres.start()
    try:
        nats.start()
        try:
            yield Infra(postgres, nats)
        finally:
            nats.stop()
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def database_url(omni_infra: Infra, request: pytest.FixtureRequest) -> str:
    return omni_infra.new_database(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate("test-key-1")


@pytest.fixture(scope="session")
def key_source(signing_key: SigningKey) -> StaticKeySource:
    return StaticKeySource({signing_key.kid: signing_key.private_key.public_key()})


@pytest.fixture(scope="session")
def make_token(signing_key: SigningKey) -> Callable[..., str]:
    """``make_token("customers/c1", roles=["customer"])`` → a real signed access token."""

    def make(subject: str, roles: list[str] | tuple[str, ...] = ("customer",), **kw: object) -> str:
        return issue_token(signing_key, subject=subject, roles=roles, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def service_settings(omni_infra: Infra, database_url: str) -> Callable[..., Settings]:
    def make(service: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "nats_url": omni_infra.nats_url,
            **overrides,
        }
        return test_settings(service, **values)  # type: ignore[arg-type]

    return make


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
