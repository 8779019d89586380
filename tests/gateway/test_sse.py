"""Server-streaming RPCs as Server-Sent Events, over a real HTTP server (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.applications import Starlette

from services.gateway import sse
from tests.gateway.conftest import WEB, Probe
from tests.gateway.platform import live


async def read_events(lines: AsyncIterator[str], until: Callable[[list[dict]], bool]) -> list[dict]:
    """Parse SSE lines into events ({"data"/"id"/"event"/"comment"}) until ``until`` says stop."""
    events: list[dict] = []
    current: dict = {}
    async for line in lines:
        if line == "":
            if current:
                events.append(current)
                current = {}
                if until(events):
                    break
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "":
            current["comment"] = value
        else:
            current[field] = current.get(field, "") + value if field != "data" else value
    return events


def ticks(events: list[dict]) -> list[int]:
    return [json.loads(e["data"])["index"] for e in events if "data" in e and "event" not in e]


async def test_stream_framing_and_clean_end(make_app: Callable[..., Starlette]) -> None:
    async with (
        live(make_app()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("GET", "/v1/probe:ticks?count=3", headers=WEB) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-request-id"]
        raw = (await response.aread()).decode()
    assert raw.startswith("retry: 1000\n\n")
    assert 'data: {"index":0}\n\n' in raw
    # The service ended the stream with OK: the body is complete, the last event the third tick.
    assert raw.endswith('data: {"index":2}\n\n')


async def test_heartbeats_while_idle(make_app: Callable[..., Starlette]) -> None:
    app = make_app(heartbeat_seconds=0.05)
    async with (
        live(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("GET", "/v1/probe:ticks", params={"count": 2}, headers=WEB) as response,
    ):
        events = await read_events(response.aiter_lines(), lambda ev: len(ticks(ev)) == 2)
    assert ticks(events) == [0, 1]
    beats = [e for e in events if e.get("comment") == "keep-alive"]
    assert len(beats) >= 2  # the 0.2 s pause between ticks holds several 0.05 s heartbeats


async def test_client_disconnect_cancels_the_grpc_stream(
    make_app: Callable[..., Starlette], probe: Probe
) -> None:
    before = len(probe.servicer.stream_endings)
    async with live(make_app()) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with http.stream("GET", "/v1/probe:ticks", params={"count": 1000}, headers=WEB) as response:
            events = await read_events(response.aiter_lines(), lambda ev: len(ticks(ev)) >= 2)
            assert ticks(events) == [0, 1]
        # Leaving the block closed the connection mid-stream; the gateway is still up.
        async with asyncio.timeout(5):
            while len(probe.servicer.stream_endings) == before:
                await asyncio.sleep(0.02)
        assert (await http.get("/healthz")).status_code == 200
    assert probe.servicer.stream_endings[-1] == "cancelled"


async def test_shutdown_ends_open_streams(make_app: Callable[..., Starlette], probe: Probe) -> None:
    app = make_app()
    async with (
        live(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("GET", "/v1/probe:ticks", params={"count": 1000}, headers=WEB) as response,
    ):
        lines = response.aiter_lines()
        first = await read_events(lines, lambda ev: len(ticks(ev)) >= 1)
        assert ticks(first) == [0]
        app.state.gateway.begin_drain()
        async with asyncio.timeout(5):
            rest = [line async for line in lines]  # ends: the server closed the stream
    assert len(ticks(await read_events(_iter(rest), lambda ev: False))) <= 1


async def _iter(lines: list[str]) -> AsyncIterator[str]:
    for line in [*lines, ""]:
        yield line


async def test_errors_before_the_first_event_are_http_errors_and_after_it_error_events(
    make_app: Callable[..., Starlette],
) -> None:
    async with live(make_app()) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        refused = await http.get("/v1/probe:ticks", params={"count": -1}, headers=WEB)
        assert refused.status_code == 400
        assert refused.json()["error"]["details"][1]["fieldViolations"][0]["field"] == "count"

        async with http.stream(
            "GET", "/v1/probe:ticks", params={"count": 5, "failAfter": 2}, headers=WEB
        ) as response:
            assert response.status_code == 200
            events = await read_events(
                response.aiter_lines(), lambda ev: any(e.get("event") == "error" for e in ev)
            )
    assert ticks(events) == [0, 1]
    error = json.loads(events[-1]["data"])["error"]
    assert (error["code"], error["status"], error["message"]) == (
        400,
        "FAILED_PRECONDITION",
        "ticks stopped on purpose",
    )


def test_frames() -> None:
    assert sse.frame('{"a":1}', event_id="e1") == b'id: e1\ndata: {"a":1}\n\n'
    assert sse.frame("one\ntwo", event="error") == b"event: error\ndata: one\ndata: two\n\n"
    assert sse.frame("x", event_id="bad\nid") == b"id: bad id\ndata: x\n\n"
    assert sse.comment("keep-alive") == b": keep-alive\n\n"
