"""The environment the chart gives each container is one the runtime's configuration accepts."""

from __future__ import annotations

import pytest

from omni_runtime.config import Settings

from .helpers import ALL_SERVICES, EXPECTED_CALLS, RELEASE, Release, env_of
from .invariants import _container


def _resolved_env(release: Release, service: str) -> dict[str, str]:
    """Literal values as they are; Secret and downward-API references as plausible stand-ins."""
    container = _container(release, service)
    assert container is not None
    env: dict[str, str] = {}
    for name, value in env_of(container).items():
        if isinstance(value, str):
            env[name] = value
        elif "secretKeyRef" in value:
            env[name] = (
                f"postgresql+asyncpg://u:p@db:5432/{service}" if "DATABASE" in name else "nats://n:4222"
            )
        else:
            env[name] = "stand-in"
    return env


@pytest.mark.parametrize("value_set", ["default", "production", "dev"])
@pytest.mark.parametrize("service", ALL_SERVICES)
def test_runtime_settings_accept_the_chart_environment(
    releases: dict[str, Release], value_set: str, service: str
) -> None:
    env = _resolved_env(releases[value_set], service)
    settings = Settings.from_env(service, env)
    if service == "gateway":
        assert settings.http_port == 8080
    else:
        assert settings.grpc_port == 50051
        assert settings.database_url.endswith(f"/{service}")
        assert env["OMNI_NATS_URL"].startswith("nats://")
    assert settings.metrics_port == 9464
    assert settings.shutdown_grace_seconds == float(env["OMNI_SHUTDOWN_GRACE_SECONDS"])
    for peer in EXPECTED_CALLS[service]:
        assert settings.target(peer) == f"{RELEASE}-{peer}:50051"
    if service == "identity":
        assert settings.jwt_private_keys_dir is not None
