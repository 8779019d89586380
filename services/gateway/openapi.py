"""The OpenAPI 3.1 document of the gateway, generated from the same route table it serves.

Nothing here is written by hand per endpoint: paths come from the http annotations, schemas
from the messages (proto3 JSON mapping), descriptions from the contracts' comments, and
required/readOnly/writeOnly from ``google.api.field_behavior``. So the document cannot drift
from what the gateway actually accepts.
"""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2, field_info_pb2
from google.protobuf import descriptor

from omni_runtime.context import known_channel_names
from omni_runtime.names import ID_PATTERN
from services.gateway.routes import Contracts, Route, RouteTable
from services.gateway.transcode import SCALAR_WKT

FD = descriptor.FieldDescriptor
ERROR_SCHEMA = "omni.gateway.Error"
INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
UINT32 = {"type": "integer", "format": "int32", "minimum": 0, "maximum": 2**32 - 1}
INT64 = {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"}
UINT64 = {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"}
SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: INT32,
    FD.TYPE_SINT32: INT32,
    FD.TYPE_SFIXED32: INT32,
    FD.TYPE_UINT32: UINT32,
    FD.TYPE_FIXED32: UINT32,
    FD.TYPE_INT64: INT64,
    FD.TYPE_SINT64: INT64,
    FD.TYPE_SFIXED64: INT64,
    FD.TYPE_UINT64: UINT64,
    FD.TYPE_FIXED64: UINT64,
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]{1,12}(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths.",
    },
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": SCALARS[FD.TYPE_BYTES],
    "google.protobuf.Int32Value": INT32,
    "google.protobuf.UInt32Value": UINT32,
    "google.protobuf.Int64Value": INT64,
    "google.protobuf.UInt64Value": UINT64,
    "google.protobuf.DoubleValue": SCALARS[FD.TYPE_DOUBLE],
    "google.protobuf.FloatValue": SCALARS[FD.TYPE_FLOAT],
    "google.protobuf.BoolValue": {"type": "boolean"},
}
FORMATS = {
    field_info_pb2.FieldInfo.UUID4: "uuid",
    field_info_pb2.FieldInfo.IPV4: "ipv4",
    field_info_pb2.FieldInfo.IPV6: "ipv6",
}
_ID = f"^(?:{ID_PATTERN}|-)$"


API_DESCRIPTION = """HTTP/JSON for channel clients, generated from Omni's gRPC contracts (`google.api.http`).
Every gRPC method a channel uses is here; bodies and answers are the contracts' messages in
proto3 JSON (lowerCamelCase names, 64-bit integers as strings, enums by name).

## Authentication
Most routes need `Authorization: Bearer <access token>` (the padlock marks them; public ones
such as log-in and registration do not). Get a token from IdentityService:
- a customer: `POST /v1/customers:login` (or `:register`, or `:createGuest` for a guest);
- staff (agents, store associates, marketers, admins): `POST /v1/staffMembers:login`;
- a channel backend: `POST /v1/serviceClients:issueToken` with its client id and secret.

Copy the answer's `accessToken` into **Authorize**. Tokens are short-lived; the log-in answer also
carries a `refreshToken` for `POST /v1/tokens:refresh`.

## Headers on every request
- `X-Omni-Channel` (**required**): the touchpoint the request comes from, one of `web`,
  `mobile_app`, `store_pos`, `call_center`, … It is recorded on carts, orders, stock movements and
  the customer's timeline, so the same customer is followed across channels.
- `X-Omni-Store`: for in-store channels, the store (`locations/{location}`).
- `X-Omni-Device`: an opaque device id (an app installation, a till).
- `X-Request-Id`: correlates the request in every service's log (generated when absent, echoed).
- `X-Request-Timeout`: the deadline (`2.5s`, `250ms`; default 30 s).

Mutations take a `requestId` (a UUID you choose) so that a retry never applies twice, and
resources that change concurrently an `etag` (a stale one is answered 409 ABORTED).

## Errors
Google's JSON error format: `{"error": {"code", "status", "message", "details"}}`, the details
being the service's `google.rpc` ErrorInfo (reason, domain), BadRequest (field violations) and
PreconditionFailure. Live updates (`…:watch`) are Server-Sent Events."""


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Builder:
    def __init__(self, contracts: Contracts) -> None:
        self.comments = contracts.comments
        self.schemas: dict[str, Any] = {}

    def _describe(self, schema: dict[str, Any], full_name: str) -> dict[str, Any]:
        text = self.comments.get(full_name)
        if text:
            schema = {**schema, "description": text}
        return schema

    def enum(self, enum: descriptor.EnumDescriptor) -> dict[str, Any]:
        if enum.full_name not in self.schemas:
            self.schemas[enum.full_name] = self._describe(
                {"type": "string", "enum": [v.name for v in enum.values]}, enum.full_name
            )
        return _ref(enum.full_name)

    def value_schema(self, fld: descriptor.FieldDescriptor) -> dict[str, Any]:
        """Schema of one value of a field (an element, for repeated fields)."""
        if fld.message_type is not None:
            return self.message(fld.message_type)
        if fld.enum_type is not None:
            return self.enum(fld.enum_type)
        schema = dict(SCALARS[fld.type])
        if fld.type == FD.TYPE_STRING:
            info = fld.GetOptions().Extensions[field_info_pb2.field_info]
            if info.format in FORMATS:
                schema["format"] = FORMATS[info.format]
        return schema

    def field_schema(self, fld: descriptor.FieldDescriptor) -> dict[str, Any]:
        if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
            value = fld.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value_schema(value)}
        elif fld.is_repeated:
            schema = {"type": "array", "items": self.value_schema(fld)}
        else:
            schema = self.value_schema(fld)
        behaviors = set(fld.GetOptions().Extensions[field_behavior_pb2.field_behavior])
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema = {**schema, "readOnly": True}
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            schema = {**schema, "writeOnly": True}
        return self._describe(schema, fld.full_name)

    def object_schema(
        self, desc: descriptor.Descriptor, skip: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for fld in desc.fields:
            if fld.name in skip:
                continue
            properties[fld.json_name] = self.field_schema(fld)
            if field_behavior_pb2.REQUIRED in fld.GetOptions().Extensions[field_behavior_pb2.field_behavior]:
                required.append(fld.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        return self._describe(schema, desc.full_name)

    def message(self, desc: descriptor.Descriptor) -> dict[str, Any]:
        if desc.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[desc.full_name])
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[desc.full_name] = self.object_schema(desc)
        return _ref(desc.full_name)

    # -- operations --------------------------------------------------------------------------

    def query_parameters(self, desc: descriptor.Descriptor, skip: frozenset[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def walk(
            msg: descriptor.Descriptor, prefix: str, proto_prefix: str, depth: int, seen: tuple[str, ...]
        ) -> None:
            for fld in msg.fields:
                proto_path = proto_prefix + fld.name
                if proto_path in skip:
                    continue
                name = prefix + fld.json_name
                kind = fld.message_type
                if kind is not None and kind.full_name not in SCALAR_WKT:
                    if kind.GetOptions().map_entry or fld.is_repeated or depth >= 3 or kind.full_name in seen:
                        continue
                    walk(kind, name + ".", proto_path + ".", depth + 1, (*seen, kind.full_name))
                    continue
                schema = self.field_schema(fld)
                param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
                if fld.is_repeated:
                    param["style"] = "form"
                    param["explode"] = True
                text = self.comments.get(fld.full_name)
                if text:
                    param["description"] = text
                out.append(param)

        walk(desc, "", "", 0, (desc.full_name,))
        return out

    def request_body(self, route: Route) -> dict[str, Any] | None:
        desc = route.rpc.input_type
        if not route.body:
            return None
        if route.body == "*":
            top_bound = frozenset(p for p in route.bound_fields if "." not in p)
            if top_bound:
                name = f"{route.rpc.full_name}.Body"
                if name not in self.schemas:
                    self.schemas[name] = self.object_schema(desc, skip=top_bound)
                schema = _ref(name)
            else:
                schema = self.message(desc)
            required = False
        elif route.raw_request:
            # Passed on unparsed (see omni.type.v1.HttpRequest): whatever the provider sends.
            any_body = {"schema": {"type": "string"}}
            return {
                "required": False,
                "content": {"application/x-www-form-urlencoded": any_body, "application/json": any_body},
            }
        else:
            fld = desc.fields_by_name[route.body]
            schema = self.field_schema(fld)
            behaviors = fld.GetOptions().Extensions[field_behavior_pb2.field_behavior]
            required = field_behavior_pb2.REQUIRED in behaviors
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    def response(self, route: Route) -> dict[str, Any]:
        desc = route.rpc.output_type
        if route.streaming:
            self.message(desc)
            return {
                "description": (
                    f"A Server-Sent Events stream: each `data:` line is one {desc.full_name} as JSON, "
                    "`id:` its etag (send it back as Last-Event-ID to resume); comment lines are heartbeats."
                ),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        if route.response_body:
            schema = self.field_schema(desc.fields_by_name[route.response_body])
        else:
            schema = self.message(desc)
        return {"description": desc.full_name, "content": {"application/json": {"schema": schema}}}


def _headers(streaming: bool, *, channel_required: bool = True) -> list[dict[str, Any]]:
    params = [
        {"$ref": "#/components/parameters/Channel" + ("" if channel_required else "Optional")},
        {"$ref": "#/components/parameters/Store"},
        {"$ref": "#/components/parameters/Device"},
        {"$ref": "#/components/parameters/RequestTimeout"},
        {"$ref": "#/components/parameters/RequestId"},
    ]
    if streaming:
        params.append({"$ref": "#/components/parameters/LastEventId"})
    return params


def _components_parameters() -> dict[str, Any]:
    return {
        "Channel": {
            "name": "X-Omni-Channel",
            "in": "header",
            "required": True,
            "description": "The touchpoint the request comes from.",
            "schema": {"type": "string", "enum": known_channel_names()},
        },
        "ChannelOptional": {
            "name": "X-Omni-Channel",
            "in": "header",
            "required": False,
            "description": "The touchpoint the request comes from (not needed from outside providers).",
            "schema": {"type": "string", "enum": known_channel_names()},
        },
        "Store": {
            "name": "X-Omni-Store",
            "in": "header",
            "required": False,
            "description": "For in-store channels: the store, `locations/{location}`.",
            "schema": {"type": "string", "pattern": f"^locations/{ID_PATTERN}$"},
        },
        "Device": {
            "name": "X-Omni-Device",
            "in": "header",
            "required": False,
            "description": "An opaque device id (app installation, POS terminal).",
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,256}$"},
        },
        "RequestTimeout": {
            "name": "X-Request-Timeout",
            "in": "header",
            "required": False,
            "description": "Deadline of the call: seconds (`2.5`, `2.5s`) or milliseconds (`250ms`).",
            "schema": {"type": "string", "pattern": "^[0-9]{1,6}(\\.[0-9]{1,3})?(ms|s)?$"},
        },
        "RequestId": {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "description": "Correlates logs across services; generated when absent, echoed back.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        },
        "LastEventId": {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "The id of the last event received; the stream resumes after it.",
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,256}$"},
        },
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Google's JSON error format: a google.rpc.Status with its details.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message", "details"],
                "properties": {
                    "code": {"type": "integer", "description": "The HTTP status code."},
                    "status": {"type": "string", "description": "The google.rpc.Code name."},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": WELL_KNOWN["google.protobuf.Any"]},
                },
            }
        },
    }


def build_openapi(table: RouteTable, contracts: Contracts, *, version: str) -> dict[str, Any]:
    builder = _Builder(contracts)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for route in table:
        svc = route.rpc.containing_service
        tags.setdefault(svc.name, contracts.comments.get(svc.full_name, svc.full_name))
        comment = contracts.comments.get(route.rpc.full_name, "")
        bound = route.bound_fields | ({route.body} if route.body else frozenset())
        parameters: list[dict[str, Any]] = [
            {
                "name": p.name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": _ID} if not p.multi_segment else {"type": "string"},
            }
            for p in route.path_parameters
        ]
        if route.body != "*" and not route.raw_request:
            parameters.extend(builder.query_parameters(route.rpc.input_type, frozenset(bound)))
        parameters.extend(_headers(route.streaming, channel_required=not route.raw_request))
        operation: dict[str, Any] = {
            "operationId": f"{svc.name}_{route.rpc.name}" + (f"_{route.binding}" if route.binding else ""),
            "tags": [svc.name],
            "summary": comment.split("\n\n")[0].replace("\n", " ")[:200] if comment else route.rpc.name,
            "description": comment,
            "parameters": parameters,
            "responses": {
                "200": builder.response(route),
                "default": {
                    "description": "An error (google.rpc.Status as JSON).",
                    "content": {"application/json": {"schema": _ref(ERROR_SCHEMA)}},
                },
            },
            "security": [] if route.public else [{"bearerAuth": []}],
            "x-grpc-method": route.grpc_path,
        }
        body = builder.request_body(route)
        if body is not None:
            operation["requestBody"] = body
        paths.setdefault(route.openapi_path, {})[route.http_method.lower()] = operation
    builder.schemas[ERROR_SCHEMA] = _error_schema()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Omni API",
            "version": version,
            "description": API_DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name, "description": text} for name, text in tags.items()],
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "parameters": _components_parameters(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
