"""``omni serve gateway`` as a real process: health, readiness, OpenAPI, metrics, SIGTERM."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from omni_runtime.config import ConfigError
from omni_runtime.localinfra import free_port
from omni_runtime.testing import services as in_process
from services.gateway.main import SERVICE, services_to_expose

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_definition_and_service_selection() -> None:
    assert (SERVICE.name, SERVICE.uses_database) == ("gateway", False)
    settings = in_process.test_settings("gateway", database_url="", nats_url="")
    assert services_to_expose(settings, available=["cart", "identity"]) == ["identity", "cart"]
    chosen = dataclasses.replace(settings, extra={"OMNI_GATEWAY_SERVICES": "cart, inventory"})
    assert services_to_expose(chosen) == ["cart", "inventory"]
    with pytest.raises(ConfigError):
        services_to_expose(dataclasses.replace(settings, extra={"OMNI_GATEWAY_SERVICES": "billing"}))


def test_serve_runs_until_sigterm_and_reports_unreachable_backends() -> None:
    port, metrics_port, dead = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "OMNI_HTTP_PORT": str(port),
        "OMNI_METRICS_PORT": str(metrics_port),
        "OMNI_GATEWAY_SERVICES": "inventory",
        "OMNI_INVENTORY_TARGET": f"127.0.0.1:{dead}",
        "OMNI_IDENTITY_TARGET": f"127.0.0.1:{dead}",
        "OMNI_SHUTDOWN_GRACE_SECONDS": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "omni_runtime.cli", "serve", "gateway"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        assert status == 200
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and b'"omni.inventory.v1.InventoryService":"UNAVAILABLE"' in body
        status, body = get(f"http://127.0.0.1:{port}/openapi.json")
        assert status == 200 and b"/v1/items" in body and b"/v1/customers:register" not in body
        status, _ = get(f"http://127.0.0.1:{port}/v1/items")
        assert status == 400  # no X-Omni-Channel
        _, metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert b'omni_gateway_http_requests_total{method="GET",route="/v1/items",status="400"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "gateway stopped" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
