"""Messaging: SendNotification accepted/s, and a 2,000-notification burst delivered into the SMTP sink.

- ``send_notification``: SendNotification (an order update by e-mail, TRANSACTIONAL, each call
  with its own request id; pre-built, more than a level can send) at 1 and 16 callers, each
  beside the probe's no-op Ping through the full runtime at the same concurrency in the same run.
  Every call asks the real preferences service (DecideContact) and commits the notification; the
  delivery worker sends the accepted ones meanwhile, as it would in production.
- ``burst``: 2,000 SendNotification calls (16 callers) into an empty schedule; ``delivered_per_s``
  counts from the first call until the 2,000th e-mail is in the sink. Beside it, in the same run,
  ``raw_smtp_per_s``: one SMTP client (aiosmtplib, one connection) sending the same 2,000 e-mails
  to the same sink. The sink (an SMTP server writing one .eml per message) runs in its own process
  for both. ``duplicates`` (Message-IDs seen twice) and ``lost`` (notifications never in the sink)
  must be 0; ``ratio`` is the target ≥ 0.5.

Preferences, messaging and the probe run in this process; the load comes from separate processes.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiosmtplib
import grpc

from bench.env import ROOT, BenchEnv, grpc_arm, ratio, run_child
from bench.report import target
from omni.identity.v1 import events_pb2 as identity_events
from omni.identity.v1 import resources_pb2 as idr
from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni_runtime.localinfra import free_port, wait_for_port
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.services import running_service

SEND = "/omni.messaging.v1.MessagingService/SendNotification"
CONCURRENCIES = (1, 16)
DURATION = 2.0
ROUNDS = 2
CUSTOMERS = 200
SEND_REQUESTS = 8000
BURST = 2000
BURST_CALLERS = 16
TEMPLATE = "templates/order-shipped"


def _request(customer: str, n: int) -> svc.SendNotificationRequest:
    return svc.SendNotificationRequest(
        notification=res.Notification(
            customer=customer,
            template=TEMPLATE,
            topic="order_updates",
            purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
            params={"order_number": f"O-{n:06d}", "tracking_reference": f"TRK{n}"},
        ),
        request_id=str(uuid.uuid4()),
    )


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


async def _sink(outbox: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.messaging.localsinks", "--outbox", str(outbox),
        "--smtp-port", str(port), "--http-port", str(free_port()),
        cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.to_thread(wait_for_port, port, 20)
    return proc, port


def _mails(outbox: Path) -> list[tuple[str, str]]:
    """(Message-ID, X-Omni-Reference) of every mail in the sink's outbox."""
    out = []
    for path in outbox.glob("*.eml"):
        with path.open("rb") as fh:
            message = email.message_from_binary_file(fh, policy=email.policy.default)
        out.append((str(message["Message-ID"]), str(message["X-Omni-Reference"] or "")))
    return out


async def _count(outbox: Path) -> int:
    return await asyncio.to_thread(lambda: len(list(outbox.glob("*.eml"))))


async def _raw_smtp(port: int, outbox: Path, mails: list[tuple[str, str]]) -> float:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    started = time.perf_counter()
    for i, (to, subject) in enumerate(mails):
        message = email.message.EmailMessage()
        message["From"], message["To"], message["Subject"] = "Omni <no-reply@omni.local>", to, subject
        message["Message-ID"] = f"<raw-{i}@omni.local>"
        message.set_content(f"Your order {subject} was shipped.")
        await client.send_message(message)
    elapsed = time.perf_counter() - started
    await client.quit()
    return len(mails) / elapsed


async def run(env: BenchEnv) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("services.preferences.main") is None:
        return {"skipped": "the preferences service is not in this checkout"}
    from services.messaging.main import SERVICE as MESSAGING
    from services.preferences.main import SERVICE as PREFERENCES

    token = env.token("serviceClients/bench", roles=["service"])
    md = (("authorization", f"Bearer {token}"), ("x-omni-channel", "backoffice"))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="omni-bench-sink-") as tmp:
        outbox = Path(tmp) / "outbox"
        sink, smtp_port = await _sink(outbox)
        try:
            pref_settings = env.settings("preferences", env.new_database("preferences"))
            async with running_service(PREFERENCES, pref_settings, key_source=env.key_source) as prefs:
                extra = {
                    "OMNI_MESSAGING_SMTP_PORT": str(smtp_port),
                    "OMNI_MESSAGING_SMTP_TLS": "none",
                    "OMNI_MESSAGING_SMTP_CONNECTIONS": "8",
                    "OMNI_MESSAGING_POLL_INTERVAL_SECONDS": "0.2",
                }
                settings = env.settings(
                    "messaging",
                    env.new_database("messaging"),
                    targets={"preferences": prefs.target},
                    extra=extra,
                )
                async with running_service(MESSAGING, settings, key_source=env.key_source) as messaging:
                    assert messaging.host.runtime is not None

                    async def service_token() -> str:
                        return token

                    messaging.host.runtime.peers.token_provider = service_token
                    customers = [f"customers/bench-{i:04d}" for i in range(CUSTOMERS)]
                    for customer in customers:
                        await publish_event(
                            env.nats.url,
                            identity_events.IdentifierLinkedEvent(
                                identifier=f"{customer}/identifiers/e",
                                customer=customer,
                                kind=idr.IDENTIFIER_KIND_EMAIL,
                                value=f"{customer.split('/')[1]}@bench.omni.local",
                                verified=True,
                                primary=True,
                            ),
                        )
                    await asyncio.sleep(2.0)  # both projections consume the identifiers
                    out["send_notification"] = await _accepted(env, messaging.target, md, customers)
                    await _drain(outbox, out["send_notification"]["accepted"])
                    out["burst"] = burst = await _burst(
                        env, messaging.target, md, customers, outbox, smtp_port
                    )
                    out["targets"] = [
                        target("burst delivered/s vs one raw SMTP client", f"{BURST}", burst["ratio"], 0.5),
                        target("burst duplicates", f"{BURST}", burst["duplicates"], 0, at_most=True),
                        target("burst lost", f"{BURST}", burst["lost"], 0, at_most=True),
                    ]
        finally:
            sink.terminate()
            await sink.wait()
    return out


async def _accepted(env: BenchEnv, target_: str, md: Any, customers: list[str]) -> dict[str, Any]:
    requests = [_request(customers[i % len(customers)], i) for i in range(SEND_REQUESTS)]
    ping_arm = env.ping_arm(await env.ping_target(), md)
    levels = []
    for concurrency in CONCURRENCIES:
        arm = grpc_arm("send", target_, SEND, requests, md)
        got = await env.compare([ping_arm, arm], concurrency=concurrency, duration=DURATION, rounds=ROUNDS)
        requests = requests[got["send"]["requests"] + 200 :] or requests  # never replay a request id
        levels.append(
            {
                "concurrency": concurrency,
                "ping": got["ping"],
                "send_notification": got["send"],
                "throughput_ratio": ratio(got["send"], got["ping"]),
                "p99_ratio": ratio(got["send"], got["ping"], "p99_ms"),
            }
        )
    return {"levels": levels, "accepted": sum(lv["send_notification"]["requests"] for lv in levels)}


async def _drain(outbox: Path, at_least: int, timeout: float = 120.0) -> None:
    """Let the worker finish the accepted/s phase's mails before the burst starts."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while time.monotonic() < deadline:
        count = await _count(outbox)
        still = still + 1 if count == last else 0
        if count >= at_least or still > 20:
            return
        last = count
        await asyncio.sleep(0.25)


async def _burst(
    env: BenchEnv, target: str, md: Any, customers: list[str], outbox: Path, smtp_port: int
) -> dict[str, Any]:
    before = {mid for mid, _ in await asyncio.to_thread(_mails, outbox)}
    base = await _count(outbox)
    requests = [_request(customers[i % len(customers)], 100_000 + i) for i in range(BURST)]
    job = {
        "target": target,
        "metadata": [list(p) for p in md],
        "requests": [r.SerializeToString().hex() for r in requests],
        "concurrency": BURST_CALLERS,
    }
    started = time.perf_counter()
    sent = await run_child("bench.scenarios.messaging", job)
    deadline = time.monotonic() + 300
    while await _count(outbox) < base + BURST and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the sink
        await asyncio.sleep(0.05)
    delivered_s = time.perf_counter() - started
    mails = [m for m in await asyncio.to_thread(_mails, outbox) if m[0] not in before]
    ids = [mid for mid, _ in mails]
    references = {ref for _, ref in mails}
    lost = sum(1 for name in sent["names"] if name not in references)
    raw = await _raw_smtp(
        smtp_port, Path(outbox), [(f"raw{i}@bench.omni.local", f"O-{i:06d}") for i in range(BURST)]
    )
    delivered_per_s = BURST / delivered_s
    return {
        "notifications": BURST,
        "callers": BURST_CALLERS,
        "accept_s": sent["elapsed_s"],
        "accepted_per_s": round(BURST / sent["elapsed_s"], 1),
        "errors": sent["errors"],
        "delivered_s": round(delivered_s, 2),
        "delivered_per_s": round(delivered_per_s, 1),
        "raw_smtp_per_s": round(raw, 1),
        "ratio": _ratio(delivered_per_s, raw),
        "duplicates": len(ids) - len(set(ids)),
        "lost": lost,
    }


# --- the burst driver (child process) -----------------------------------------------------------


async def _drive(job: dict[str, Any]) -> dict[str, Any]:
    md = tuple(tuple(p) for p in job["metadata"])
    payloads = [bytes.fromhex(p) for p in job["requests"]]
    channels = [grpc.aio.insecure_channel(job["target"]) for _ in range(4)]
    calls = [
        c.unary_unary(SEND, request_serializer=None, response_deserializer=res.Notification.FromString)
        for c in channels
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    names: list[str] = []
    errors: dict[str, int] = {}

    async def worker(i: int) -> None:
        call = calls[i % len(calls)]
        while not queue.empty():
            payload = queue.get_nowait()
            try:
                reply = await call(payload, metadata=md, timeout=30)
                names.append(reply.name)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1

    for ch in channels:
        await ch.channel_ready()
    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(int(job["concurrency"]))))
    elapsed = time.perf_counter() - started
    for ch in channels:
        await ch.close()
    return {"elapsed_s": round(elapsed, 3), "names": names, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_drive(json.load(sys.stdin)))))
