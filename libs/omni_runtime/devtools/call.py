"""``omni call``: call any Omni gRPC method from a shell, like grpcurl, with nothing outside .venv.

    omni call list [SERVICE]                 services of the local platform (or of --target),
                                             or the methods of one service
    omni call describe SERVICE [NAME]        a service, a method or a message (with a JSON
    omni call describe SYMBOL                template of the request), or any full symbol name
    omni call SERVICE METHOD [REQUEST]       call a method; REQUEST is JSON, @file or - (stdin)

SERVICE is a short name (``cart``), a full name (``omni.cart.v1.CartService``) or its last part
(``CartService``); ``cart/GetCart`` names service and method at once. Short names reach the
local platform (``make run``'s ports) unless ``OMNI_<SERVICE>_TARGET`` or ``--target`` says
otherwise. Everything is discovered through the server's reflection service, so the command
knows every contract a running service has, and requests and responses are proto3 JSON (the
gateway's JSON: lowerCamelCase or proto field names in, lowerCamelCase out, enums by name).

Unary and server-streaming calls (one JSON document per message, as it arrives) and client
streams (several JSON documents in REQUEST) are supported. Metadata: ``--token`` (or
``$OMNI_TOKEN``), ``--channel`` (or ``$OMNI_CHANNEL``), ``--store``, ``--device``,
``--request-id``, ``-H key:value``. Errors are printed with their google.rpc details (reason,
field violations, preconditions); the exit status is 64 + the gRPC status code (grpcurl's
convention), 1 for a local problem (bad JSON, unknown method, nothing listening).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.api import field_behavior_pb2
from google.protobuf import descriptor, descriptor_pool, json_format, message, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from omni.type.v1 import auth_pb2
from omni_client import errors as rpc_errors
from omni_client.metadata import (
    AUTHORIZATION_KEY,
    CHANNEL_KEY,
    CHANNELS,
    DEVICE_KEY,
    REQUEST_ID_KEY,
    STORE_KEY,
)
from omni_runtime.config import LOCAL_PORTS, SERVICES

FD = descriptor.FieldDescriptor
RPC_EXIT_BASE = 64
DEFAULT_TIMEOUT_SECONDS = 30.0
INFRASTRUCTURE = ("grpc.health.", "grpc.reflection.")
_SERVICE_PACKAGE = re.compile(r"omni\.([a-z_]+)\.v[0-9]+")
_SCALAR_TYPES = {
    FD.TYPE_DOUBLE: "double",
    FD.TYPE_FLOAT: "float",
    FD.TYPE_INT64: "int64",
    FD.TYPE_UINT64: "uint64",
    FD.TYPE_INT32: "int32",
    FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_FIXED32: "fixed32",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes",
    FD.TYPE_UINT32: "uint32",
    FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_SFIXED64: "sfixed64",
    FD.TYPE_SINT32: "sint32",
    FD.TYPE_SINT64: "sint64",
}
_TEMPLATE_WKT: dict[str, Any] = {
    "google.protobuf.Timestamp": "1970-01-01T00:00:00Z",
    "google.protobuf.Duration": "0s",
    "google.protobuf.FieldMask": "",
    "google.protobuf.Struct": {},
    "google.protobuf.Value": None,
    "google.protobuf.ListValue": [],
    "google.protobuf.Empty": {},
    "google.protobuf.Any": {"@type": ""},
    "google.protobuf.StringValue": "",
    "google.protobuf.BytesValue": "",
    "google.protobuf.BoolValue": False,
    "google.protobuf.Int32Value": 0,
    "google.protobuf.UInt32Value": 0,
    "google.protobuf.Int64Value": "0",
    "google.protobuf.UInt64Value": "0",
    "google.protobuf.DoubleValue": 0.0,
    "google.protobuf.FloatValue": 0.0,
}


class Refusal(Exception):
    """A local problem with what was asked (exit 1), explained in the message."""


# -- where to call ---------------------------------------------------------------------------


def local_target(short: str) -> str:
    """The address of a service of the local platform: ``$OMNI_<SERVICE>_TARGET`` or its port."""
    return os.environ.get(f"OMNI_{short.upper()}_TARGET") or f"127.0.0.1:{LOCAL_PORTS[short][0]}"


def short_name(symbol: str) -> str | None:
    """``omni.cart.v1.CartService`` or ``cart`` → ``cart``; None when no service owns the name."""
    if symbol in SERVICES:
        return symbol
    found = _SERVICE_PACKAGE.match(symbol)
    if found and found.group(1) in SERVICES:
        return found.group(1)
    return None


class Server:
    """One gRPC server, its reflection-backed descriptor pool and its channel."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target)
        self._db = ProtoReflectionDescriptorDatabase(self.channel)
        self.pool = descriptor_pool.DescriptorPool(self._db)
        self._services: list[str] | None = None

    def close(self) -> None:
        self.channel.close()

    def services(self) -> list[str]:
        if self._services is None:
            try:
                self._services = sorted(self._db.get_services())
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    raise Refusal(f"nothing answers at {self.target}{_HINT}") from None
                raise Refusal(
                    f"{self.target} does not answer server reflection ({exc.code().name}): "
                    "omni call needs grpc.reflection.v1alpha.ServerReflection"
                ) from None
        return self._services

    def service(self, name: str) -> descriptor.ServiceDescriptor:
        """Resolve ``cart``, ``CartService`` or ``omni.cart.v1.CartService`` on this server."""
        names = [s for s in self.services() if not s.startswith(INFRASTRUCTURE)]
        short = short_name(name)
        candidates = (
            [s for s in names if s == name]
            or [s for s in names if s.rsplit(".", 1)[-1] == name]
            or [s for s in names if short is not None and short_name(s) == short]
        )
        if not candidates and name in self.services():
            candidates = [name]
        if len(candidates) != 1:
            listed = ", ".join(names) or "none"
            what = "matches several services" if candidates else "is not served"
            raise Refusal(f"{name!r} {what} at {self.target}; it serves: {listed}")
        return self.pool.FindServiceByName(candidates[0])

    def find(self, symbol: str) -> descriptor.DescriptorBase:
        for finder in (
            self.pool.FindServiceByName,
            self.pool.FindMessageTypeByName,
            self.pool.FindEnumTypeByName,
            self.pool.FindMethodByName,
        ):
            try:
                return finder(symbol)  # type: ignore[no-any-return]
            except KeyError:
                continue
        raise Refusal(f"{symbol!r} is not known at {self.target}")


_HINT = " (is the platform running? `make run` starts it; or pass --target host:port)"


def open_server(service_word: str | None, target: str | None) -> Server:
    if target:
        return Server(target)
    short = short_name(service_word or "")
    if short is None:
        raise Refusal(
            f"{service_word!r} is not one of Omni's services ({', '.join(SERVICES)}); "
            "pass --target host:port to call another server"
        )
    return Server(local_target(short))


def method_of(service: descriptor.ServiceDescriptor, name: str) -> descriptor.MethodDescriptor:
    found = service.methods_by_name.get(name)
    if found is None:
        lowered = {m.lower(): m for m in service.methods_by_name}
        if name.lower() in lowered:
            return service.methods_by_name[lowered[name.lower()]]
        known = ", ".join(sorted(service.methods_by_name))
        raise Refusal(f"{service.full_name} has no method {name!r}; it has: {known}")
    return found


# -- what to send ----------------------------------------------------------------------------


def read_request_text(raw: str | None) -> str:
    if raw is None:
        return ""
    if raw == "-":
        return sys.stdin.read()
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise Refusal(f"cannot read the request from {path}: {exc.strerror}") from None
    return raw


def json_documents(text: str) -> list[Any]:
    """Every JSON value in ``text`` (several for a client stream); none for blank text."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise Refusal(
                f"the request is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        out.append(value)


def build_message(
    cls: type[message.Message], value: Any, pool: descriptor_pool.DescriptorPool
) -> message.Message:
    if not isinstance(value, dict):
        raise Refusal(
            f"the request must be a JSON object ({cls.DESCRIPTOR.full_name}), got {type(value).__name__}"
        )
    try:
        return json_format.ParseDict(value, cls(), descriptor_pool=pool)
    except json_format.ParseError as exc:
        raise Refusal(f"the request does not fit {cls.DESCRIPTOR.full_name}: {exc}") from None


def parse_header(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition(":")
    if not sep or not key.strip():
        raise Refusal(f"a header is key:value, got {raw!r}")
    return key.strip().lower(), value.strip()


@dataclass(frozen=True)
class CallOptions:
    metadata: list[tuple[str, str]]
    timeout: float | None
    compact: bool
    field: str | None
    verbose: bool
    json_errors: bool


def auth_rule(method: descriptor.MethodDescriptor) -> auth_pb2.MethodAuth | None:
    """The method's ``omni.type.v1.auth`` option (public, or the permission it needs), if any."""
    options = method.GetOptions()
    return options.Extensions[auth_pb2.auth] if options.HasExtension(auth_pb2.auth) else None


def call_metadata(args: argparse.Namespace, method: descriptor.MethodDescriptor) -> list[tuple[str, str]]:
    """The call's metadata. A token from ``$OMNI_TOKEN`` is not sent to public methods (log-in):
    an expired one would make the log-in that replaces it fail; ``--token`` is always sent."""
    md = [parse_header(h) for h in args.header]
    keys = {k for k, _ in md}
    channel = (args.channel or "").strip().lower()
    if channel:
        if channel not in CHANNELS:
            raise Refusal(f"unknown channel {channel!r}; one of: {', '.join(CHANNELS)}")
        md.append((CHANNEL_KEY, channel))
    if args.store:
        md.append((STORE_KEY, args.store))
    if args.device:
        md.append((DEVICE_KEY, args.device))
    token = (args.token if args.token is not None else os.environ.get("OMNI_TOKEN", "")).strip()
    rule = auth_rule(method)
    if args.token is None and rule is not None and rule.public:
        token = ""
    if token and AUTHORIZATION_KEY not in keys:
        md.append((AUTHORIZATION_KEY, token if token.lower().startswith("bearer ") else f"Bearer {token}"))
    if REQUEST_ID_KEY not in keys:
        md.append((REQUEST_ID_KEY, args.request_id or uuid.uuid4().hex))
    return md


# -- what came back --------------------------------------------------------------------------


def to_json(msg: message.Message, pool: descriptor_pool.DescriptorPool) -> dict[str, Any]:
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True, descriptor_pool=pool)


def extract(data: Any, path: str) -> Any:
    """``token.accessToken`` (or ``token.access_token``, ``lines.0.item``) out of a JSON answer."""
    value = data
    for part in path.split("."):
        if isinstance(value, list):
            if not part.isdigit() or int(part) >= len(value):
                raise Refusal(f"{path}: {part!r} is not an index of a list of {len(value)}")
            value = value[int(part)]
            continue
        if not isinstance(value, dict):
            raise Refusal(f"{path}: {part!r} is below a {type(value).__name__}, not a message")
        camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), part)
        key = part if part in value else camel
        if key not in value:
            raise Refusal(f"the answer has no field {part!r} ({path}); it has: {', '.join(value) or 'none'}")
        value = value[key]
    return value


def render(data: Any, options: CallOptions) -> str:
    if options.field is not None:
        data = extract(data, options.field)
        if isinstance(data, str):
            return data
    return json.dumps(data, ensure_ascii=False, indent=None if options.compact else 2)


def report_error(exc: grpc.RpcError, options: CallOptions) -> int:
    status = rpc_errors.status(exc)
    if options.json_errors:
        print(json.dumps({"error": rpc_errors.status_json(status)}, indent=2), file=sys.stderr)
    else:
        print(f"ERROR: {rpc_errors.describe(exc)}", file=sys.stderr)
        code = rpc_errors.code_of(status)
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"  the service did not answer{_HINT}", file=sys.stderr)
        elif code == grpc.StatusCode.UNAUTHENTICATED:
            print("  pass an access token with --token (or $OMNI_TOKEN); Login answers one", file=sys.stderr)
    return RPC_EXIT_BASE + int(status.code)


def _show_metadata(label: str, pairs: Any) -> None:
    for key, value in pairs or ():
        shown = value
        if key == AUTHORIZATION_KEY:
            shown = value.split(" ", 1)[0] + " …"
        elif isinstance(value, bytes):
            shown = f"<{len(value)} bytes>"
        print(f"{label} {key}: {shown}", file=sys.stderr)


# -- the three commands ----------------------------------------------------------------------


def invoke(
    server: Server, method: descriptor.MethodDescriptor, request_text: str, options: CallOptions
) -> int:
    pool = server.pool
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    documents = json_documents(request_text) or [{}]
    if not method.client_streaming and len(documents) != 1:
        raise Refusal(f"{method.name} takes one request; got {len(documents)} JSON documents")
    requests = [build_message(request_cls, doc, pool) for doc in documents]
    path = f"/{method.containing_service.full_name}/{method.name}"
    serializer, deserializer = request_cls.SerializeToString, response_cls.FromString
    timeout = options.timeout
    if timeout is None and not method.server_streaming:
        timeout = DEFAULT_TIMEOUT_SECONDS
    if options.verbose:
        print(f"> {server.target} {path}", file=sys.stderr)
        _show_metadata(">", options.metadata)

    def emit(reply: message.Message) -> None:
        print(render(to_json(reply, pool), options), flush=True)

    try:
        if method.server_streaming:
            caller = (
                server.channel.stream_stream(path, serializer, deserializer)(
                    iter(requests), metadata=options.metadata, timeout=timeout
                )
                if method.client_streaming
                else server.channel.unary_stream(path, serializer, deserializer)(
                    requests[0], metadata=options.metadata, timeout=timeout
                )
            )
            try:
                for reply in caller:
                    emit(reply)
            except KeyboardInterrupt:
                caller.cancel()
                return 130
            if options.verbose:
                _show_metadata("<", caller.trailing_metadata())
            return 0
        if method.client_streaming:
            reply, call = server.channel.stream_unary(path, serializer, deserializer).with_call(
                iter(requests), metadata=options.metadata, timeout=timeout
            )
        else:
            reply, call = server.channel.unary_unary(path, serializer, deserializer).with_call(
                requests[0], metadata=options.metadata, timeout=timeout
            )
    except grpc.RpcError as exc:
        return report_error(exc, options)
    if options.verbose:
        _show_metadata("<", call.initial_metadata())
        _show_metadata("<", call.trailing_metadata())
    emit(reply)
    return 0


def list_services(target: str | None) -> int:
    servers = [(None, target)] if target else [(s, local_target(s)) for s in SERVICES]
    reachable = 0
    for short, address in servers:
        server = Server(address)
        try:
            names = server.services()
        except Refusal:
            if target:
                raise
            print(f"# {short}: not running at {address}")
            continue
        finally:
            server.close()
        reachable += 1
        for name in names:
            if target or not name.startswith(INFRASTRUCTURE):
                print(name if target else f"{name:<40} {short} at {address}")
    if not reachable:
        raise Refusal(f"no Omni service answers{_HINT}")
    return 0


def signature(method: descriptor.MethodDescriptor) -> str:
    arg = ("stream " if method.client_streaming else "") + method.input_type.full_name
    out = ("stream " if method.server_streaming else "") + method.output_type.full_name
    rule = auth_rule(method)
    auth = "" if rule is None else "  // public" if rule.public else f"  // needs {rule.permission}"
    return f"rpc {method.name}({arg}) returns ({out});{auth}"


def behaviours(fld: descriptor.FieldDescriptor) -> list[str]:
    """``google.api.field_behavior`` of a field: REQUIRED, OUTPUT_ONLY, IMMUTABLE…"""
    marks = fld.GetOptions().Extensions[field_behavior_pb2.field_behavior]  # repeated: empty if unset
    return [field_behavior_pb2.FieldBehavior.Name(b) for b in marks]


def _field_line(fld: descriptor.FieldDescriptor) -> str:
    marks = behaviours(fld)
    return f"{field_type(fld)} {fld.name} = {fld.number};" + (f"  // {', '.join(marks)}" if marks else "")


def field_type(fld: descriptor.FieldDescriptor) -> str:
    if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
        key, value = fld.message_type.fields_by_name["key"], fld.message_type.fields_by_name["value"]
        return f"map<{field_type(key)}, {field_type(value)}>"
    if fld.message_type is not None:
        base = fld.message_type.full_name
    elif fld.enum_type is not None:
        base = fld.enum_type.full_name
    else:
        base = _SCALAR_TYPES.get(fld.type, "?")
    if fld.is_repeated:
        return f"repeated {base}"
    if fld.has_presence and fld.containing_oneof is None and fld.message_type is None:
        return f"optional {base}"
    return base


def describe_message(desc: descriptor.Descriptor) -> str:
    lines = [f"message {desc.full_name} {{"]
    oneofs: dict[str, list[descriptor.FieldDescriptor]] = {}
    for fld in desc.fields:
        real = fld.containing_oneof
        if real is not None and not real.name.startswith("_"):
            oneofs.setdefault(real.name, []).append(fld)
            continue
        lines.append(f"  {_field_line(fld)}")
    for name, members in oneofs.items():
        lines.append(f"  oneof {name} {{")
        lines.extend(f"    {_field_line(f)}" for f in members)
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines)


def template(desc: descriptor.Descriptor, depth: int = 0, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON request skeleton, for copy and edit: every field a caller may set (output-only ones
    left out), one member of each oneof."""
    out: dict[str, Any] = {}
    oneofs_done: set[str] = set()
    for fld in desc.fields:
        if "OUTPUT_ONLY" in behaviours(fld):
            continue
        oneof = fld.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):
            if oneof.name in oneofs_done:
                continue
            oneofs_done.add(oneof.name)
        out[fld.json_name] = _template_value(fld, depth, (*seen, desc.full_name))
    return out


def _template_value(fld: descriptor.FieldDescriptor, depth: int, seen: tuple[str, ...]) -> Any:
    if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
        return {"key": _template_value(fld.message_type.fields_by_name["value"], depth, seen)}
    if fld.message_type is not None:
        name = fld.message_type.full_name
        single: Any = (
            _TEMPLATE_WKT[name]
            if name in _TEMPLATE_WKT
            else {}
            if name in seen or depth >= 4
            else template(fld.message_type, depth + 1, seen)
        )
    elif fld.enum_type is not None:
        values = [v.name for v in fld.enum_type.values if v.number != 0] or [fld.enum_type.values[0].name]
        single = values[0]
    elif fld.type == FD.TYPE_BOOL:
        single = False
    elif fld.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        single = ""
    elif fld.type in (FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64):
        single = "0"
    elif fld.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        single = 0.0
    else:
        single = 0
    return [single] if fld.is_repeated else single


def describe_symbol(desc: descriptor.DescriptorBase) -> str:
    if isinstance(desc, descriptor.ServiceDescriptor):
        body = "\n".join(f"  {signature(m)}" for m in desc.methods)
        return f"service {desc.full_name} {{\n{body}\n}}"
    if isinstance(desc, descriptor.MethodDescriptor):
        parts = [
            signature(desc),
            "",
            describe_message(desc.input_type),
            "",
            "request template:",
            json.dumps(template(desc.input_type), indent=2),
        ]
        return "\n".join(parts)
    if isinstance(desc, descriptor.Descriptor):
        return describe_message(desc) + "\n\nJSON template:\n" + json.dumps(template(desc), indent=2)
    if isinstance(desc, descriptor.EnumDescriptor):
        body = "\n".join(f"  {v.name} = {v.number};" for v in desc.values)
        return f"enum {desc.full_name} {{\n{body}\n}}"
    raise Refusal(f"cannot describe {desc!r}")


def describe(words: Sequence[str], target: str | None) -> int:
    first = words[0]
    if short_name(first) is not None or target or "." not in first:
        server = open_server(first, target)
        try:
            if len(words) == 1 and "." in first and first not in server.services():
                print(describe_symbol(server.find(first)))
                return 0
            service = server.service(first)
            if len(words) == 1:
                print(describe_symbol(service))
                return 0
            name = words[1]
            if name in service.methods_by_name or name.lower() in {
                m.lower() for m in service.methods_by_name
            }:
                print(describe_symbol(method_of(service, name)))
            else:
                package = service.full_name.rsplit(".", 1)[0]
                print(describe_symbol(server.find(name if "." in name else f"{package}.{name}")))
            return 0
        finally:
            server.close()
    # A full symbol outside any service's package (omni.type.v1.Money): any running service knows it.
    for short in SERVICES:
        server = Server(local_target(short))
        try:
            server.services()
            print(describe_symbol(server.find(first)))
            return 0
        except Refusal:
            continue
        finally:
            server.close()
    raise Refusal(f"{first!r} is not known to any running service{_HINT}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omni call",
        description="Call Omni's gRPC services (server reflection, proto3 JSON).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n\n", 1)[1],
    )
    p.add_argument("words", nargs="+", metavar="list|describe|SERVICE", help="what to do (see below)")
    p.add_argument("--target", help="host:port of the server (default: the local platform's port of SERVICE)")
    p.add_argument("--token", help="access token (default $OMNI_TOKEN, not sent to public methods)")
    p.add_argument(
        "--channel",
        default=os.environ.get("OMNI_CHANNEL", ""),
        help=f"x-omni-channel ($OMNI_CHANNEL): {', '.join(CHANNELS)}",
    )
    p.add_argument("--store", default="", help="x-omni-store, a location name (locations/store-1)")
    p.add_argument("--device", default="", help="x-omni-device, e.g. an app installation or till id")
    p.add_argument("--request-id", default="", help="x-request-id (default: a new one per call)")
    p.add_argument(
        "-H", "--header", action="append", default=[], help="extra metadata key:value (repeatable)"
    )
    p.add_argument(
        "--timeout", type=float, help=f"deadline in seconds (unary default {DEFAULT_TIMEOUT_SECONDS:g})"
    )
    p.add_argument("--field", help="print one field of the answer (token.accessToken); strings unquoted")
    p.add_argument("--compact", action="store_true", help="one line of JSON per message")
    p.add_argument(
        "--json-errors", action="store_true", help="errors as Google's JSON error object on stderr"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show target, metadata, headers and trailers")
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_intermixed_args(list(argv))
    words: list[str] = args.words
    verb = words[0]
    if verb == "list":
        if len(words) > 2:
            raise Refusal("list takes at most one SERVICE")
        if len(words) == 1:
            return list_services(args.target)
        server = open_server(words[1], args.target)
        try:
            service = server.service(words[1])
            for method in service.methods:
                print(f"{method.full_name:<60} {signature(method)}")
        finally:
            server.close()
        return 0
    if verb == "describe":
        if len(words) not in (2, 3):
            raise Refusal("describe takes SYMBOL, or SERVICE and a method or message name")
        return describe(words[1:], args.target)
    if "/" in verb:
        service_word, _, method_word = verb.partition("/")
        rest = words[1:]
    else:
        if len(words) < 2:
            raise Refusal(
                "name the method: omni call SERVICE METHOD [REQUEST]  (omni call list SERVICE lists them)"
            )
        service_word, method_word, rest = verb, words[1], words[2:]
    if len(rest) > 1:
        raise Refusal("pass the request as one argument (quote the JSON), @file or -")
    server = open_server(service_word, args.target)
    try:
        method = method_of(server.service(service_word), method_word)
        options = CallOptions(
            metadata=call_metadata(args, method),
            timeout=args.timeout,
            compact=args.compact,
            field=args.field,
            verbose=args.verbose,
            json_errors=args.json_errors,
        )
        return invoke(server, method, read_request_text(rest[0] if rest else None), options)
    finally:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except Refusal as exc:
        print(f"omni call: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `omni call … | head`
        return 0
