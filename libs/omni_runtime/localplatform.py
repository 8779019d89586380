"""``omni dev up``: the whole platform on one machine, on the architecture's fixed ports.

Starts embedded PostgreSQL and NATS (data under ``.omni/``, kept across restarts), creates each
service's database and applies its migrations, provisions the service clients Omni's services
use to call each other, seeds demo principals, then runs every service as its own process and
supervises it (a crashed service is restarted with backoff). Ctrl-C stops the services first
(each drains gracefully), then NATS, then PostgreSQL: no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omni_runtime import demo
from omni_runtime.config import LOCAL_PORTS, SERVICES
from omni_runtime.localinfra import EmbeddedNats, EmbeddedPostgres

POSTGRES_PORT = 15432
NATS_PORT = 14222
# Messaging's local providers: an SMTP server and an HTTP server speaking Twilio's, FCM's and the
# signed webhook's wire formats; what they receive lands in .omni/outbox/ (``omni dev outbox``).
SMTP_SINK_PORT = 1025
HTTP_SINK_PORT = 1026
# Order matters: identity first (everyone verifies tokens with its keys), gateway last.
START_ORDER = ("identity", "inventory", "profile", "preferences", "messaging", "cart", "gateway")


def available_services() -> list[str]:
    """The services that exist in this checkout (``services/<name>/main.py``), in start order."""
    return [name for name in START_ORDER if importlib.util.find_spec(f"services.{name}.main") is not None]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Child:
    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    stopping: bool = False

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omni_runtime.cli", "serve", self.name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
        )
        log.close()
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        self.stopping = True
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Platform:
    home: Path
    services: list[str]
    postgres: EmbeddedPostgres = field(init=False)
    nats: EmbeddedNats = field(init=False)
    children: list[Child] = field(default_factory=list)
    sinks: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.postgres = EmbeddedPostgres(self.home / "postgres", POSTGRES_PORT, durable=True)
        self.nats = EmbeddedNats(self.home / "nats", NATS_PORT)

    # -- set-up ---------------------------------------------------------------------------

    def check_ports(self) -> None:
        sink_ports = (SMTP_SINK_PORT, HTTP_SINK_PORT) if "messaging" in self.services else ()
        busy = [
            p
            for p in (POSTGRES_PORT, NATS_PORT, *sink_ports, *(LOCAL_PORTS[s][0] for s in self.services))
            if port_in_use(p)
        ]
        if busy:
            raise SystemExit(
                f"ports already in use: {', '.join(map(str, busy))}. Is another `make run` running? "
                "Stop it (Ctrl-C) or free the ports."
            )

    def service_clients(self) -> list[dict[str, object]]:
        """Credentials each service uses to call its peers; generated once, kept in .omni/secrets."""
        path = self.home / "secrets" / "service-clients.json"
        if path.exists():
            clients: list[dict[str, object]] = json.loads(path.read_text())
        else:
            clients = []
        known = {c["client_id"] for c in clients}
        for name in (*SERVICES, "gateway"):
            if f"omni-{name}" not in known:
                clients.append(
                    {
                        "client_id": f"omni-{name}",
                        "secret": secrets.token_urlsafe(32),
                        "roles": ["service"],
                        "display_name": f"Omni {name} service",
                    }
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clients, indent=2))
        path.chmod(0o600)
        return clients

    def env_for(self, name: str, clients: list[dict[str, object]]) -> dict[str, str]:
        grpc_port, metrics_port = LOCAL_PORTS[name]
        env = dict(os.environ)
        env.update(
            {
                "OMNI_GRPC_PORT": str(grpc_port),
                "OMNI_HTTP_PORT": str(grpc_port),
                "OMNI_METRICS_PORT": str(metrics_port),
                "OMNI_DATABASE_URL": self.postgres.url(f"omni_{name}"),
                "OMNI_NATS_URL": self.nats.url,
                "OTEL_SERVICE_NAME": f"omni-{name}",
            }
        )
        for peer in SERVICES:
            env[f"OMNI_{peer.upper()}_TARGET"] = f"127.0.0.1:{LOCAL_PORTS[peer][0]}"
        own = next((c for c in clients if c["client_id"] == f"omni-{name}"), None)
        if own is not None and name != "identity":
            env["OMNI_SERVICE_CLIENT_ID"] = str(own["client_id"])
            env["OMNI_SERVICE_CLIENT_SECRET"] = str(own["secret"])
        if name == "profile":
            # The services started here are the ones whose views, exports and erasure receipts
            # profile waits for.
            env.setdefault(
                "OMNI_PROFILE_PEERS", ",".join(s for s in self.services if s not in ("profile", "gateway"))
            )
        if name == "identity":
            env["OMNI_IDENTITY_BOOTSTRAP_CLIENTS_FILE"] = str(self.home / "secrets" / "service-clients.json")
        if name == "messaging":
            for key, value in self.messaging_providers().items():
                env.setdefault(key, value)  # a developer may point make run at real providers
        return env

    def messaging_providers(self) -> dict[str, str]:
        """Messaging's providers pointed at the local sinks (real protocols, local servers)."""
        sink = f"http://127.0.0.1:{HTTP_SINK_PORT}"
        return {
            "OMNI_MESSAGING_SMTP_HOST": "127.0.0.1",
            "OMNI_MESSAGING_SMTP_PORT": str(SMTP_SINK_PORT),
            "OMNI_MESSAGING_SMTP_TLS": "none",
            "OMNI_MESSAGING_TWILIO_BASE_URL": sink,
            "OMNI_MESSAGING_TWILIO_ACCOUNT_SID": "AClocal",
            "OMNI_MESSAGING_TWILIO_AUTH_TOKEN": "local-twilio-token",
            "OMNI_MESSAGING_TWILIO_FROM": "+15005550006",
            "OMNI_MESSAGING_TWILIO_WHATSAPP_FROM": "+14155238886",
            "OMNI_MESSAGING_FCM_BASE_URL": sink,
            "OMNI_MESSAGING_FCM_SERVICE_ACCOUNT_FILE": str(self.fcm_service_account(f"{sink}/token")),
            "OMNI_MESSAGING_WEBHOOK_URL": f"{sink}/webhook",
            "OMNI_MESSAGING_WEBHOOK_SECRET": "local-webhook-secret",
            "OMNI_MESSAGING_PUBLIC_URL": f"http://127.0.0.1:{LOCAL_PORTS['gateway'][0]}",
        }

    def fcm_service_account(self, token_uri: str) -> Path:
        """A Google-style service account with a key of its own, for FCM's OAuth flow locally."""
        path = self.home / "secrets" / "fcm-service-account.json"
        if not path.exists():
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            account = {
                "type": "service_account",
                "project_id": "omni-local",
                "private_key_id": "local",
                "private_key": pem,
                "client_email": "omni@omni-local.iam.gserviceaccount.com",
                "token_uri": token_uri,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(account, indent=2))
            path.chmod(0o600)
        return path

    def start_sinks(self) -> None:
        """Messaging's local SMTP and HTTP provider sinks, writing to .omni/outbox/."""
        if "messaging" not in self.services:
            return
        log = (self.home / "logs").resolve()
        log.mkdir(parents=True, exist_ok=True)
        with (log / "sinks.log").open("ab") as out:
            self.sinks = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.messaging.localsinks",
                    "--outbox",
                    str(self.home / "outbox"),
                    "--smtp-port",
                    str(SMTP_SINK_PORT),
                    "--http-port",
                    str(HTTP_SINK_PORT),
                    "--status-callbacks",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        from omni_runtime.localinfra import wait_for_port

        wait_for_port(SMTP_SINK_PORT, 20, self.sinks, "messaging's SMTP sink")
        wait_for_port(HTTP_SINK_PORT, 20, self.sinks, "messaging's HTTP sink")

    def migrate(self) -> None:
        from omni_runtime.db.migrate import upgrade

        for name in self.services:
            if name == "gateway":
                continue
            url = self.postgres.create_database(f"omni_{name}")
            upgrade(name, url)

    def seed_principals(self) -> dict[str, object] | None:
        """Demo principals from identity's seeding function (before start: other seeds log in)."""
        if "identity" not in self.services or importlib.util.find_spec("services.identity.seed") is None:
            return None
        from omni_runtime.db.engine import Database

        identity_seed = importlib.import_module("services.identity.seed")

        async def run() -> dict[str, object]:
            db = Database(self.postgres.url("omni_identity"))
            try:
                result: dict[str, object] = await identity_seed.seed_demo(db)
            finally:
                await db.close()
            return result

        return asyncio.run(run())

    def seed_data(self, principals: dict[str, object]) -> demo.DemoState:
        """Each running service's demo data, once, into an empty service (omni_runtime.demo)."""
        targets = {name: f"127.0.0.1:{LOCAL_PORTS[name][0]}" for name in self.services if name != "gateway"}
        return asyncio.run(
            demo.seed_platform(
                self.services,
                targets,
                self.home / "demo.json",
                principals=demo.principals(principals),
                admin_password=str(principals["password"]),
            )
        )

    # -- running ---------------------------------------------------------------------------

    def start_services(self, clients: list[dict[str, object]]) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in self.services:
            child = Child(name, self.env_for(name, clients), logs / f"{name}.log")
            child.start()
            self.children.append(child)

    def wait_serving(self, timeout: float = 90.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = {c.name: probe(c.name) for c in self.children}
            dead = [c for c in self.children if not c.alive()]
            if dead:
                tails = "\n".join(f"--- {c.name} ---\n{tail(c.log_path)}" for c in dead)
                raise SystemExit(
                    f"services exited during start-up: {', '.join(c.name for c in dead)}\n{tails}"
                )
            if all(s == "SERVING" for s in status.values()):
                return status
            time.sleep(0.3)
        raise SystemExit(f"not every service became SERVING within {timeout:.0f}s: {status}")

    def supervise_once(self) -> None:
        for child in self.children:
            if child.stopping or child.alive():
                continue
            backoff = min(2**child.restarts, 30)
            if time.monotonic() - child.started_at < backoff:
                continue
            child.restarts += 1
            print(
                f"[omni] {child.name} exited (code {child.proc.returncode if child.proc else '?'}); "
                f"restarting (#{child.restarts}), log: {child.log_path}",
                flush=True,
            )
            child.start()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.terminate()
        for child in reversed(self.children):
            child.wait(30)
        if self.sinks is not None and self.sinks.poll() is None:
            self.sinks.send_signal(signal.SIGTERM)
            try:
                self.sinks.wait(10)
            except subprocess.TimeoutExpired:
                self.sinks.kill()
        self.nats.stop()
        self.postgres.stop()


def probe(name: str) -> str:
    """SERVING / NOT_SERVING / DOWN for one local process, as the health protocol reports it."""
    port = LOCAL_PORTS[name][0]
    if name == "gateway":
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                return "SERVING" if resp.status == 200 else "NOT_SERVING"
        except Exception:
            return "DOWN"
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError:
        return "DOWN"


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def table(services: list[str], status: dict[str, str]) -> str:
    rows = [f"  {'process':<12} {'address':<22} {'metrics':<28} status"]
    for name in services:
        port, metrics_port = LOCAL_PORTS[name]
        scheme = "http" if name == "gateway" else "grpc"
        rows.append(
            f"  {name:<12} {scheme + '://127.0.0.1:' + str(port):<22} "
            f"{'http://127.0.0.1:' + str(metrics_port) + '/metrics':<28} {status.get(name, '?')}"
        )
    rows.append(f"  {'postgresql':<12} {'127.0.0.1:' + str(POSTGRES_PORT):<22} {'':<28} up")
    rows.append(f"  {'nats':<12} {'nats://127.0.0.1:' + str(NATS_PORT):<22} {'':<28} up")
    return "\n".join(rows)


def up(home: Path, only: list[str] | None = None) -> int:
    services = [s for s in available_services() if not only or s in only]
    platform = Platform(home, services)
    platform.check_ports()
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"[omni] data in {home}", flush=True)
    try:
        platform.postgres.start()
        platform.nats.start()
        print("[omni] PostgreSQL and NATS are up; applying migrations", flush=True)
        platform.migrate()
        clients = platform.service_clients()
        principals = platform.seed_principals()
        if not services:
            print(
                "[omni] no services exist yet in this checkout; PostgreSQL and NATS are running", flush=True
            )
        platform.start_sinks()
        platform.start_services(clients)
        status = platform.wait_serving()
        print("\n[omni] platform is up:\n" + table(services, status), flush=True)
        if principals is not None:
            print_demo(platform, principals)
        if platform.sinks is not None:
            print(
                f"\n[omni] messages sent land in {home / 'outbox'} (SMTP sink :{SMTP_SINK_PORT}, "
                f"SMS/push/social sink :{HTTP_SINK_PORT}); list them with: .venv/bin/omni dev outbox",
                flush=True,
            )
        print(f"\n[omni] logs in {home / 'logs'}; press Ctrl-C to stop everything", flush=True)
        while not stop:
            platform.supervise_once()
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        print("\n[omni] stopping services, NATS and PostgreSQL…", flush=True)
        with contextlib.suppress(Exception):
            platform.stop()
        print("[omni] stopped; data kept in", home, flush=True)
    return 0


def print_demo(platform: Platform, principals: dict[str, object]) -> None:
    """Load the demo data (first start only) and print what is there and what to try first."""
    try:
        state = platform.seed_data(principals)
    except Exception as exc:  # the platform runs on; the next start resumes the load
        print(f"\n[omni] demo data could not be loaded: {exc!r} (retried on the next start)", flush=True)
        return
    gateway = f"localhost:{LOCAL_PORTS['gateway'][0]}" if "gateway" in platform.services else None
    print("\n" + demo.report(state, platform.services, gateway=gateway), flush=True)


def status_report() -> int:
    services = available_services()
    status = {name: probe(name) for name in services}
    print(table(services, status))
    return 0 if all(s == "SERVING" for s in status.values()) else 1


def outbox_report(home: Path) -> int:
    """``omni dev outbox``: what the local platform has "sent" (mails, texts, pushes)."""
    if importlib.util.find_spec("services.messaging.localsinks") is None:
        print("messaging is not in this checkout; nothing is sent locally")
        return 1
    sinks = importlib.import_module("services.messaging.localsinks")
    outbox = home / "outbox"
    print(sinks.format_outbox(sinks.list_outbox(outbox), outbox))
    return 0
