"""``omni call`` against real services on real sockets: discovery, JSON in and out, metadata, errors.

The command is synchronous (it is a shell tool); the services run on the test's event loop, so
each invocation runs in a worker thread and its stdout/stderr are captured.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from omni_runtime.devtools import call
from tests.client.conftest import Probe


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def omni_call(probe: Probe, capsys: pytest.CaptureFixture[str]) -> Callable[..., object]:
    async def run(*argv: str, target: str | None = probe.target) -> Result:
        args = [*argv, *(["--target", target] if target else [])]
        code = await asyncio.to_thread(call.main, args)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


async def test_lists_services_and_methods(omni_call) -> None:
    listed = await omni_call("list")
    assert listed.code == 0
    assert "omni.probe.v1.ProbeService" in listed.out.split()
    assert "grpc.health.v1.Health" in listed.out.split()

    methods = await omni_call("list", "ProbeService")
    assert methods.code == 0, methods.err
    lines = {line.split()[0]: line for line in methods.out.splitlines()}
    assert "omni.probe.v1.ProbeService.Ping" in lines
    assert "returns (stream omni.probe.v1.Tick)" in lines["omni.probe.v1.ProbeService.Ticks"]


async def test_describes_methods_and_messages_with_a_request_template(omni_call) -> None:
    method = await omni_call("describe", "omni.probe.v1.ProbeService", "Echo")
    assert method.code == 0, method.err
    assert "rpc Echo(omni.probe.v1.EchoRequest) returns (omni.probe.v1.EchoResponse);" in method.out
    assert "string text = 2;" in method.out
    template = json.loads(method.out.split("request template:\n", 1)[1])
    assert template == {"name": "", "text": ""}

    message = await omni_call("describe", "omni.probe.v1.TicksRequest")
    assert message.code == 0, message.err
    assert "int32 fail_after = 2;" in message.out
    assert json.loads(message.out.split("JSON template:\n", 1)[1]) == {"count": 0, "failAfter": 0}

    service = await omni_call("describe", "ProbeService")
    assert "rpc Ticks(omni.probe.v1.TicksRequest) returns (stream omni.probe.v1.Tick);" in service.out


async def test_unary_call_carries_token_channel_and_deadline(omni_call, make_token) -> None:
    token = make_token("customers/c1", roles=["customer"])
    ping = await omni_call(
        "ProbeService", "Ping", "{}", "--token", token, "--channel", "web", "--timeout", "7"
    )
    assert ping.code == 0, ping.err
    answer = ping.json()
    assert isinstance(answer, dict)
    assert (answer["subject"], answer["channel"]) == ("customers/c1", "web")
    assert 5 < answer["remainingSeconds"] < 7.5

    echo = await omni_call(
        "omni.probe.v1.ProbeService/Echo",
        '{"name": "customers/c1/echoes/e1", "text": "hello"}',
        "--token",
        token,
        "--field",
        "text",
    )
    assert (echo.code, echo.out) == (0, "hello\n"), echo.err
    # Proto field names are accepted too, and the request can come from stdin or a file.
    by_proto_name = await omni_call("ProbeService", "Ping", "--token", token, "--field", "subject")
    assert by_proto_name.out == "customers/c1\n"


async def test_server_stream_prints_each_message_then_the_error(omni_call) -> None:
    ticks = await omni_call("ProbeService", "Ticks", '{"count": 3}', "--compact")
    assert ticks.code == 0, ticks.err
    assert [json.loads(line) for line in ticks.out.splitlines()] == [{"index": 0}, {"index": 1}, {"index": 2}]

    failing = await omni_call("ProbeService", "Ticks", '{"count": 5, "failAfter": 2}', "--compact")
    assert failing.code == 64 + 9  # FAILED_PRECONDITION
    assert [json.loads(line)["index"] for line in failing.out.splitlines()] == [0, 1]
    assert "FAILED_PRECONDITION (9): ticks stopped on purpose" in failing.err


async def test_errors_show_their_google_rpc_details(omni_call, make_token) -> None:
    invalid = await omni_call("ProbeService", "Fail", '{"kind": "invalid"}')
    assert invalid.code == 64 + 3
    assert "INVALID_ARGUMENT (3)" in invalid.err
    assert "field kind: is invalid on purpose" in invalid.err
    assert "reason INVALID_ARGUMENT" in invalid.err

    precondition = await omni_call("ProbeService", "Fail", '{"kind": "precondition"}')
    assert "precondition STOCK on items/sku-1: only 2 available" in precondition.err

    aborted = await omni_call("ProbeService", "Fail", '{"kind": "aborted"}', "--json-errors")
    assert aborted.code == 64 + 10
    body = json.loads(aborted.err)["error"]
    assert body["status"] == "ABORTED"
    assert body["details"][0]["metadata"]["current_etag"] == 'W/"7"'

    internal = await omni_call("ProbeService", "Fail", '{"kind": "boom"}')
    assert internal.code == 64 + 13 and "secret internal detail" not in internal.err

    unauthenticated = await omni_call(
        "ProbeService", "Echo", '{"name": "customers/c1/echoes/e", "text": "x"}'
    )
    assert unauthenticated.code == 64 + 16
    assert "--token" in unauthenticated.err


async def test_local_mistakes_are_explained_without_calling(omni_call, probe: Probe) -> None:
    bad_json = await omni_call("ProbeService", "Ping", "{nope")
    assert bad_json.code == 1 and "not valid JSON" in bad_json.err
    unknown_field = await omni_call("ProbeService", "Echo", '{"txt": "x"}')
    assert unknown_field.code == 1 and "does not fit omni.probe.v1.EchoRequest" in unknown_field.err
    assert "txt" in unknown_field.err
    unknown_method = await omni_call("ProbeService", "Pong")
    assert unknown_method.code == 1 and "Ping" in unknown_method.err and "Ticks" in unknown_method.err
    unknown_service = await omni_call("NoSuchService", "Ping")
    assert unknown_service.code == 1 and "omni.probe.v1.ProbeService" in unknown_service.err
    bad_channel = await omni_call("ProbeService", "Ping", "--channel", "fax")
    assert bad_channel.code == 1 and "mobile_app" in bad_channel.err
    two_requests = await omni_call("ProbeService", "Ping", "{} {}")
    assert two_requests.code == 1 and "one request" in two_requests.err
    not_omni = await omni_call("ProbeService", "Ping", target=None)
    assert not_omni.code == 1 and "--target" in not_omni.err


async def test_short_names_reach_the_local_platform_or_the_environment_target(
    omni_call, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `omni call SERVICE …` with a short name: OMNI_<SERVICE>_TARGET, else the local port.
    monkeypatch.setenv("OMNI_PROFILE_TARGET", "127.0.0.1:1")
    down = await omni_call("profile", "GetProfile", "{}", target=None)
    assert down.code == 1 and "nothing answers at 127.0.0.1:1" in down.err and "make run" in down.err
    monkeypatch.setenv("OMNI_PROFILE_TARGET", probe.target)
    wrong = await omni_call("profile", "GetProfile", "{}", target=None)
    assert wrong.code == 1 and "is not served at" in wrong.err and "omni.probe.v1.ProbeService" in wrong.err


async def test_verbose_shows_metadata_with_the_token_hidden(omni_call, make_token) -> None:
    token = make_token("customers/c1", roles=["customer"])
    shown = await omni_call(
        "ProbeService", "Ping", "--token", token, "-H", "x-omni-device: till-7", "--request-id", "req-1", "-v"
    )
    assert shown.code == 0, shown.err
    assert "> authorization: Bearer …" in shown.err and token not in shown.err
    assert "> x-omni-device: till-7" in shown.err
    assert "> x-request-id: req-1" in shown.err


async def test_a_stale_token_in_the_environment_does_not_block_a_log_in(
    omni_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `export OMNI_TOKEN=$(omni call identity Login …)` again after the old token expired: the
    # public method gets no token from the environment; others still do; --token is always sent.
    monkeypatch.setenv("OMNI_TOKEN", "an-expired-token")
    public = await omni_call("ProbeService", "Ping", "--field", "subject")
    assert (public.code, public.out) == (0, "\n"), public.err
    protected = await omni_call("ProbeService", "Echo", '{"name": "customers/c1/echoes/e", "text": "x"}')
    assert protected.code == 64 + 16
    explicit = await omni_call("ProbeService", "Ping", "--token", "an-expired-token")
    assert explicit.code == 64 + 16


async def test_describe_shows_who_may_call_and_what_is_required(omni_call) -> None:
    service = await omni_call("describe", "ProbeService")
    assert (
        "rpc Ping(omni.probe.v1.PingRequest) returns (omni.probe.v1.PingResponse);  // public" in service.out
    )
    assert "  // needs profile.profiles.get" in service.out
    echo = await omni_call("describe", "omni.probe.v1.EchoRequest")
    assert "string text = 2;  // REQUIRED" in echo.out
