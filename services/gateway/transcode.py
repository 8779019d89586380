"""HTTP ⇄ protobuf: build a request message from path, query and body; render responses as JSON.

Everything goes through ``google.protobuf.json_format`` so the wire format is the proto3 JSON
mapping every gRPC-JSON transcoder speaks: lowerCamelCase field names on output (either name
accepted on input), int64 as strings, enums by name, Timestamp/Duration/FieldMask as strings.

Rules (``google/api/http.proto``, AIP-127):
- path variables set their (possibly nested) fields and win over the body;
- ``body: "*"``: every other field comes from the JSON body, and query parameters are refused;
- ``body: "<field>"``: the JSON body is that field; the remaining fields come from the query;
- no body: every field not bound by the path is a query parameter, nested fields as
  ``a.b=1``, repeated ones by repeating the parameter; only scalars, enums and the well-known
  types with a string form (Timestamp, Duration, FieldMask, wrappers) are allowed there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor, json_format, message

from omni_runtime.errors import FieldViolation, InvalidArgument
from services.gateway.routes import Route

# Well-known message types whose JSON form is a single string or scalar, so they fit in a query.
SCALAR_WKT = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.BoolValue",
    }
)
_BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}
# Query nesting deeper than this is refused: it only serves to make parsing expensive.
MAX_QUERY_DEPTH = 8


def _bad(field: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description, reason)], domain="omni.gateway")


def _field(desc: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor | None:
    """A field by proto name or JSON name."""
    found = desc.fields_by_name.get(name)
    if found is not None:
        return found
    for candidate in desc.fields:
        if candidate.json_name == name:
            return candidate
    return None


def _take(mapping: dict[str, Any], fld: descriptor.FieldDescriptor) -> Any:
    """Pop a field's value whichever name it was given under (both names would be a conflict)."""
    value = mapping.pop(fld.name, None)
    alias = mapping.pop(fld.json_name, None)
    return value if value is not None else alias


def _is_bool(fld: descriptor.FieldDescriptor) -> bool:
    if fld.type == descriptor.FieldDescriptor.TYPE_BOOL:
        return True
    return fld.message_type is not None and fld.message_type.full_name == "google.protobuf.BoolValue"


def _query_value(fld: descriptor.FieldDescriptor, raw: str, path: str) -> Any:
    if _is_bool(fld):
        found = _BOOL_WORDS.get(raw.lower())
        if found is None:
            raise _bad(path, "must be true or false")
        return found
    if fld.enum_type is not None and raw.lstrip("-").isdigit():
        return int(raw)
    return raw


def _query_dict(
    desc: descriptor.Descriptor, query: Iterable[tuple[str, str]], skip: frozenset[str]
) -> dict[str, Any]:
    """Nested proto3-JSON dict from ``a.b=1`` style parameters."""
    out: dict[str, Any] = {}
    for key, raw in query:
        parts = key.split(".")
        if len(parts) > MAX_QUERY_DEPTH:
            raise _bad(key, "is nested too deeply")
        current, target = desc, out
        proto_path: list[str] = []
        for i, part in enumerate(parts):
            fld = _field(current, part)
            if fld is None:
                raise _bad(key, f"is not a field of {current.full_name}", "UNKNOWN_QUERY_PARAMETER")
            proto_path.append(fld.name)
            last = i == len(parts) - 1
            if ".".join(proto_path) in skip:
                raise _bad(key, "is bound by the path; it cannot also be a query parameter")
            if last:
                if fld.message_type is not None and fld.message_type.full_name not in SCALAR_WKT:
                    if fld.message_type.GetOptions().map_entry:
                        raise _bad(key, "is a map; maps cannot be query parameters")
                    raise _bad(key, "is a message; set its fields as query parameters (a.b=...)")
                value = _query_value(fld, raw, key)
                if fld.is_repeated:
                    target.setdefault(fld.name, []).append(value)
                elif fld.name in target:
                    raise _bad(key, "is given more than once")
                else:
                    target[fld.name] = value
            else:
                if fld.message_type is None or fld.is_repeated or fld.message_type.full_name in SCALAR_WKT:
                    raise _bad(key, f"{fld.name} has no fields to set")
                nested = target.setdefault(fld.name, {})
                if not isinstance(nested, dict):
                    raise _bad(key, "is given more than once")
                current, target = fld.message_type, nested
    return out


def _set_path(data: dict[str, Any], desc: descriptor.Descriptor, path: str, value: str) -> None:
    """Put a path variable into the JSON dict, replacing whatever the body said for it."""
    parts = path.split(".")
    current, target = desc, data
    for part in parts[:-1]:
        fld = current.fields_by_name[part]
        nested = _take(target, fld)
        if not isinstance(nested, dict):
            nested = {}
        target[fld.name] = nested
        assert fld.message_type is not None  # checked when the route was built
        current, target = fld.message_type, nested
    leaf = current.fields_by_name[parts[-1]]
    _take(target, leaf)
    target[leaf.name] = value


def parse_json_body(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad("body", f"is not valid JSON: {exc}", "MALFORMED_JSON") from None


def build_request(
    route: Route,
    path_values: dict[str, str],
    query: list[tuple[str, str]],
    body: bytes,
) -> message.Message:
    """The request message for one HTTP request, or InvalidArgument saying what is wrong."""
    desc = route.rpc.input_type
    data: dict[str, Any]
    parsed = parse_json_body(body) if route.body else None
    if route.body == "*":
        if parsed is None:
            parsed = {}
        if not isinstance(parsed, dict):
            raise _bad("body", "must be a JSON object")
        data = parsed
        if query:
            raise _bad(
                query[0][0],
                "query parameters are not accepted here: every field goes in the JSON body",
                "UNKNOWN_QUERY_PARAMETER",
            )
    else:
        bound = route.bound_fields | ({route.body} if route.body else frozenset())
        data = _query_dict(desc, query, frozenset(bound))
        if route.body:
            body_field = desc.fields_by_name[route.body]
            if parsed is not None:
                data[body_field.name] = parsed
    for path, value in path_values.items():
        _set_path(data, desc, path, value)
    request = route.request_class()
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=False, max_recursion_depth=64)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise _bad(
            "body" if route.body else "query", str(exc) or "cannot be read", "MALFORMED_REQUEST"
        ) from None
    return request


def build_raw_request(
    route: Route,
    path_values: dict[str, str],
    *,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> message.Message:
    """The request of a raw-request route (``Route.raw_request``): path variables bound as usual,
    the whole HTTP request in the body field (an ``omni.type.v1.HttpRequest``)."""
    data: dict[str, Any] = {}
    for path, value in path_values.items():
        _set_path(data, route.rpc.input_type, path, value)
    request = route.request_class()
    json_format.ParseDict(data, request)
    raw = getattr(request, route.body)
    raw.method = method
    raw.url = url
    joined: dict[str, list[str]] = {}
    for name, value in headers:
        joined.setdefault(name.lower(), []).append(value)
    for name, values in joined.items():
        raw.headers[name] = ", ".join(values)
    raw.body = body
    return request


def set_if_empty(request: message.Message, field_name: str, value: str) -> bool:
    """Set a top-level string field unless the client already did (Last-Event-ID → since_etag)."""
    fld = request.DESCRIPTOR.fields_by_name.get(field_name)
    if fld is None or fld.type != descriptor.FieldDescriptor.TYPE_STRING or fld.is_repeated:
        return False
    if getattr(request, field_name):
        return False
    setattr(request, field_name, value)
    return True


def to_json(msg: message.Message) -> dict[str, Any]:
    """Proto3 JSON of a message. Fields without presence are always written (``"lines": []``),
    so clients never have to tell an empty list from a missing key."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


def response_json(route: Route, msg: message.Message) -> Any:
    """The HTTP response body: the message, or its ``response_body`` field when the rule says so."""
    if route.response_body:
        fld = msg.DESCRIPTOR.fields_by_name[route.response_body]
        if fld.is_repeated or fld.message_type is None:
            whole = to_json(msg)
            return whole.get(fld.json_name)
        return to_json(getattr(msg, route.response_body))
    return to_json(msg)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def find_etag(msg: message.Message) -> str:
    """An ``etag`` at the top of a message or one level down (the SSE event id)."""
    desc = msg.DESCRIPTOR
    fld = desc.fields_by_name.get("etag")
    if fld is not None and fld.type == descriptor.FieldDescriptor.TYPE_STRING and not fld.is_repeated:
        value = getattr(msg, fld.name)
        if value:
            return str(value)
    for fld in desc.fields:
        if fld.message_type is not None and not fld.is_repeated and msg.HasField(fld.name):
            inner = getattr(msg, fld.name)
            inner_etag = inner.DESCRIPTOR.fields_by_name.get("etag")
            if inner_etag is not None and inner_etag.type == descriptor.FieldDescriptor.TYPE_STRING:
                value = inner.etag
                if value:
                    return str(value)
    return ""
