"""The scripts the chart's hooks run, executed here against local stand-ins (loopback only)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .helpers import RELEASE, Release


def _test_command(release: Release, service: str) -> list[str]:
    pod = release.get("Pod", f"{RELEASE}-{service}-test-health").doc
    return [str(a) for a in pod["spec"]["containers"][0]["command"]]


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def _run(command: list[str], target: str, timeout: str) -> subprocess.CompletedProcess[str]:
    # command = [python, -c, script, <target>, <timeout>, *names]: swap in the local server.
    args = [sys.executable, "-c", command[2], target, timeout, *command[5:]]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_grpc_health_test_passes_only_when_serving(
    default_release: Release, health_server: tuple[str, health.HealthServicer]
) -> None:
    target, servicer = health_server
    command = _test_command(default_release, "cart")
    assert command[:2] == ["python", "-c"] and command[5:] == ["", "omni.cart.v1.CartService"]
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("omni.cart.v1.CartService", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _run(command, target, "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "omni.cart.v1.CartService: NOT_SERVING" in result.stdout
    servicer.set("omni.cart.v1.CartService", health_pb2.HealthCheckResponse.SERVING)
    result = _run(command, target, "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(server): SERVING" in result.stdout


def test_grpc_health_test_fails_when_nobody_answers(default_release: Release) -> None:
    result = _run(_test_command(default_release, "identity"), "127.0.0.1:9", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout or "DEADLINE_EXCEEDED" in result.stdout


class _Ready(BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_gateway_readiness_test(default_release: Release) -> None:
    command = _test_command(default_release, "gateway")
    assert command[3] == f"http://{RELEASE}-gateway:8080/readyz"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
    try:
        _Ready.status = 503
        result = subprocess.run(
            [sys.executable, "-c", command[2], url, "1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1 and "503" in result.stdout
        _Ready.status = 200
        result = subprocess.run(
            [sys.executable, "-c", command[2], url, "5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.shutdown()


def test_database_bootstrap_script_is_valid_bash(default_release: Release) -> None:
    job = default_release.get("Job", f"{RELEASE}-postgresql-bootstrap").doc
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["bash", "-ec"]
    result = subprocess.run(
        ["bash", "-n", "-c", container["args"][0]], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
