"""The route table, generated from the contracts' ``google.api.http`` annotations.

The gateway holds no per-endpoint code: every route is a (HTTP method, path template) pair read
from the compiled descriptor set, bound to one RPC. Adding an annotated RPC to a contract and
regenerating the descriptors exposes it; nothing here changes.

Path templates follow ``google/api/http.proto``::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A template compiles to one regular expression matched against the raw (still percent-encoded)
request path, so an encoded ``/`` inside an id never splits a segment; captured values are
percent-decoded afterwards.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2, resource_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message, message_factory

from omni.type.v1 import auth_pb2
from omni_runtime.config import SERVICES

log = logging.getLogger("omni.gateway.routes")

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# A body field of this type receives the whole HTTP request unparsed (see Route.raw_request).
RAW_REQUEST_TYPE = "omni.type.v1.HttpRequest"


class ContractError(ValueError):
    """An http annotation the gateway cannot serve; raised at start-up, never per request."""


def default_descriptor_set() -> Path:
    """``gen/omni/descriptors.binpb``, written by ``make protos`` beside the generated stubs."""
    import omni

    return Path(next(iter(omni.__path__))) / "descriptors.binpb"


@dataclass(frozen=True)
class Contracts:
    """A compiled descriptor set: a pool to build messages from, plus the raw files.

    The raw ``FileDescriptorProto``s are kept because a pool drops source info, and the
    OpenAPI document takes its descriptions from the contracts' comments.
    """

    pool: descriptor_pool.DescriptorPool
    files: tuple[descriptor_pb2.FileDescriptorProto, ...]

    @classmethod
    def from_file_set(cls, file_set: descriptor_pb2.FileDescriptorSet) -> Contracts:
        pool = descriptor_pool.DescriptorPool()
        for proto in file_set.file:
            pool.Add(proto)
        return cls(pool=pool, files=tuple(file_set.file))

    @classmethod
    def load(cls, path: Path | None = None) -> Contracts:
        data = (path or default_descriptor_set()).read_bytes()
        return cls.from_file_set(descriptor_pb2.FileDescriptorSet.FromString(data))

    def services(self) -> list[str]:
        """Full names of every service in the set, in file order."""
        return [f"{f.package}.{s.name}" for f in self.files for s in f.service]

    def message_class(self, desc: descriptor.Descriptor) -> type[message.Message]:
        return message_factory.GetMessageClass(desc)

    @cached_property
    def comments(self) -> dict[str, str]:
        """Leading comments by element full name (services, methods, messages, fields, enums)."""
        out: dict[str, str] = {}
        for proto in self.files:
            by_path = {
                tuple(loc.path): loc.leading_comments.strip()
                for loc in proto.source_code_info.location
                if loc.leading_comments.strip()
            }
            prefix = f"{proto.package}." if proto.package else ""
            for path, name in _element_paths(proto, prefix):
                text = by_path.get(path)
                if text:
                    out[name] = text
        return out

    @cached_property
    def collection_variables(self) -> dict[str, str]:
        """Collection id → pattern variable (``customers`` → ``customer``) from resource patterns."""
        found: dict[str, str] = {}
        for proto in self.files:
            patterns: list[str] = []
            for definition in proto.options.Extensions[resource_pb2.resource_definition]:
                patterns.extend(definition.pattern)
            for msg in _all_messages(proto.message_type):
                patterns.extend(msg.options.Extensions[resource_pb2.resource].pattern)
            for pattern in patterns:
                parts = pattern.split("/")
                for literal, var in itertools.pairwise(parts):
                    if var.startswith("{") and var.endswith("}") and not literal.startswith("{"):
                        found.setdefault(literal, var[1:-1])
        return found


def _all_messages(
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[descriptor_pb2.DescriptorProto]:
    for msg in messages:
        yield msg
        yield from _all_messages(msg.nested_type)


def _element_paths(
    proto: descriptor_pb2.FileDescriptorProto, prefix: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source-info path, full name) of every commented element of a file."""

    def walk_message(
        msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        name = f"{scope}{msg.name}"
        yield path, name
        for i, fld in enumerate(msg.field):
            yield (*path, 2, i), f"{name}.{fld.name}"
        for i, nested in enumerate(msg.nested_type):
            yield from walk_message(nested, (*path, 3, i), f"{name}.")
        for i, enum in enumerate(msg.enum_type):
            yield (*path, 4, i), f"{name}.{enum.name}"

    for i, msg in enumerate(proto.message_type):
        yield from walk_message(msg, (4, i), prefix)
    for i, enum in enumerate(proto.enum_type):
        yield (5, i), f"{prefix}{enum.name}"
    for i, svc in enumerate(proto.service):
        yield (6, i), f"{prefix}{svc.name}"
        for j, method in enumerate(svc.method):
            yield (6, i, 2, j), f"{prefix}{svc.name}.{method.name}"


# -- path templates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """``{field.path=sub/segments}``: the request field a part of the path binds to."""

    field_path: str
    segments: tuple[str, ...]  # literals, "*" and "**"


@dataclass(frozen=True)
class PathParameter:
    """One ``*`` of a template as the OpenAPI document shows it (``{customer}``)."""

    name: str
    multi_segment: bool
    field_path: str


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".+"
    return re.escape(segment)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside braces."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+")
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class PathTemplate:
    source: str
    segments: tuple[str | Variable, ...]
    verb: str

    @classmethod
    def parse(cls, source: str) -> PathTemplate:
        if not source.startswith("/") or source.count("{") != source.count("}"):
            raise ContractError(f"malformed path template {source!r}")
        body, verb = source[1:], ""
        last = _split_top(body, "/")[-1]
        top_colons = _split_top(last, ":")
        if len(top_colons) > 2:
            raise ContractError(f"more than one verb in {source!r}")
        if len(top_colons) == 2:
            verb = top_colons[1]
            body = body[: len(body) - len(verb) - 1]
            if not _LITERAL.fullmatch(verb):
                raise ContractError(f"bad verb {verb!r} in {source!r}")
        segments: list[str | Variable] = []
        for raw in _split_top(body, "/"):
            if raw.startswith("{") and raw.endswith("}"):
                inner = raw[1:-1]
                path, _, sub = inner.partition("=")
                if not _FIELD_PATH.fullmatch(path):
                    raise ContractError(f"bad field path {path!r} in {source!r}")
                subs = tuple(sub.split("/")) if sub else ("*",)
                for s in subs:
                    if s not in ("*", "**") and not _LITERAL.fullmatch(s):
                        raise ContractError(f"bad segment {s!r} in {source!r}")
                segments.append(Variable(path, subs))
            elif raw in ("*", "**") or _LITERAL.fullmatch(raw):
                segments.append(raw)
            else:
                raise ContractError(f"bad segment {raw!r} in {source!r}")
        return cls(source=source, segments=tuple(segments), verb=verb)

    @cached_property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(s for s in self.segments if isinstance(s, Variable))

    @cached_property
    def regex(self) -> re.Pattern[str]:
        parts: list[str] = []
        for i, seg in enumerate(self.segments):
            if isinstance(seg, Variable):
                inner = "/".join(_segment_regex(s) for s in seg.segments)
                parts.append(f"(?P<v{i}>{inner})")
            else:
                parts.append(_segment_regex(seg))
        verb = re.escape(":" + self.verb) if self.verb else ""
        return re.compile("/" + "/".join(parts) + verb)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Field path → decoded value for a raw request path, or None if it does not match."""
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if isinstance(seg, Variable):
                raw = found.group(f"v{i}")
                # Single-segment variables may carry an encoded "/" (RFC 6570 simple expansion);
                # multi-segment ones keep "/" as a separator, so decode everything but %2F there.
                if "**" in seg.segments:
                    raw = re.sub("%2[fF]", "%252F", raw)
                values[seg.field_path] = unquote(raw)
        return values

    @cached_property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key, most specific first: verb, more literal segments, fewer ``**``."""
        literals = wild2 = 0
        for seg in self.segments:
            subs = seg.segments if isinstance(seg, Variable) else (seg,)
            literals += sum(1 for s in subs if s not in ("*", "**"))
            wild2 += sum(1 for s in subs if s == "**")
        return (0 if self.verb else 1, -literals, wild2)

    def parameters(self, collection_vars: Mapping[str, str]) -> tuple[str, tuple[PathParameter, ...]]:
        """The OpenAPI path (``/v1/customers/{customer}/cart:addLine``) and its parameters.

        Each ``*`` inside a variable becomes one named parameter, named after the resource
        pattern variable that follows its collection id (``customers/*`` → ``customer``), so
        clients fill in ids, never whole resource names with slashes.
        """
        out: list[str] = []
        params: list[PathParameter] = []
        used: set[str] = set()

        def fresh(base: str) -> str:
            name, n = base, 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
            used.add(name)
            return name

        for seg in self.segments:
            if not isinstance(seg, Variable):
                if seg in ("*", "**"):
                    name = fresh("segment")
                    params.append(PathParameter(name, seg == "**", ""))
                    out.append("{" + name + "}")
                else:
                    out.append(seg)
                continue
            wilds = [s for s in seg.segments if s in ("*", "**")]
            for j, sub in enumerate(seg.segments):
                if sub not in ("*", "**"):
                    out.append(sub)
                    continue
                previous = seg.segments[j - 1] if j > 0 else ""
                if previous and previous not in ("*", "**"):
                    base = collection_vars.get(previous) or singular(previous)
                elif len(wilds) == 1:
                    base = seg.field_path.replace(".", "_")
                else:
                    base = "segment"
                name = fresh(base)
                params.append(PathParameter(name, sub == "**", seg.field_path))
                out.append("{" + name + "}")
        path = "/" + "/".join(out) + (":" + self.verb if self.verb else "")
        return path, tuple(params)


def singular(collection: str) -> str:
    """``stockLevels`` → ``stock_level``: a fallback when no resource pattern names it."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", collection).lower()
    if snake.endswith("ies"):
        return snake[:-3] + "y"
    if snake.endswith(("sses", "xes", "ches", "shes", "oes")):
        return snake[:-2]
    return snake[:-1] if snake.endswith("s") else snake


# -- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str  # upper case
    template: PathTemplate
    body: str  # "", "*" or a top-level request field
    response_body: str
    rpc: descriptor.MethodDescriptor
    request_class: type[message.Message]
    response_class: type[message.Message]
    auth: auth_pb2.MethodAuth
    binding: int  # 0: the rule itself, n: its n-th additional binding
    openapi_path: str = ""
    path_parameters: tuple[PathParameter, ...] = field(default=())

    @property
    def service(self) -> str:
        return self.rpc.containing_service.full_name

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.rpc.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.rpc.server_streaming)

    @property
    def public(self) -> bool:
        return bool(self.auth.public)

    @cached_property
    def raw_request(self) -> bool:
        """The body field is an ``omni.type.v1.HttpRequest``: the RPC gets the request unparsed
        (method, URL, headers, raw body), for provider callbacks whose signature covers the exact
        bytes. Such a route takes any content type and no channel headers (its caller is not a
        channel client) and binds no query parameters (the query belongs to the signed URL)."""
        if self.body in ("", "*"):
            return False
        fld = self.rpc.input_type.fields_by_name[self.body]
        return fld.message_type is not None and fld.message_type.full_name == RAW_REQUEST_TYPE

    @property
    def label(self) -> str:
        """Bounded-cardinality name for metrics and logs: the OpenAPI path."""
        return self.openapi_path or self.template.source

    @cached_property
    def bound_fields(self) -> frozenset[str]:
        return frozenset(v.field_path for v in self.template.variables)


@dataclass
class RouteMatch:
    route: Route
    path_values: dict[str, str]


@dataclass
class RouteTable:
    routes: list[Route]

    def __post_init__(self) -> None:
        self._by_method: dict[str, list[Route]] = {}
        for route in sorted(self.routes, key=lambda r: r.template.specificity):
            self._by_method.setdefault(route.http_method, []).append(route)

    def match(self, method: str, raw_path: str) -> RouteMatch | list[str] | None:
        """The route for a request; a list of allowed methods if only the method is wrong."""
        for route in self._by_method.get(method, ()):
            values = route.template.match(raw_path)
            if values is not None:
                return RouteMatch(route, values)
        allowed = sorted(
            m
            for m, routes in self._by_method.items()
            if m != method and any(r.template.match(raw_path) is not None for r in routes)
        )
        return allowed or None

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)


def exposed_services(contracts: Contracts, names: Iterable[str] = SERVICES) -> list[str]:
    """Services of ``omni.<svc>.v1`` for each runtime service name (the probe is test-only)."""
    wanted = {f"omni.{n}.v1" for n in names}
    return [s for s in contracts.services() if s.rpartition(".")[0] in wanted]


def _rule_binding(rule: http_pb2.HttpRule) -> tuple[str, str] | None:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return None
    if pattern == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return pattern.upper(), getattr(rule, pattern)


def _check_field_path(msg: descriptor.Descriptor, path: str, where: str) -> None:
    current = msg
    parts = path.split(".")
    for i, part in enumerate(parts):
        fld = current.fields_by_name.get(part)
        if fld is None:
            raise ContractError(f"{where}: {msg.full_name} has no field {path!r}")
        if fld.is_repeated:
            raise ContractError(f"{where}: path field {path!r} must not be repeated")
        if i < len(parts) - 1:
            if fld.message_type is None:
                raise ContractError(f"{where}: {path!r} goes through a non-message field")
            current = fld.message_type
        elif fld.message_type is not None:
            raise ContractError(f"{where}: path field {path!r} must be a scalar")


def build_routes(contracts: Contracts, services: Iterable[str]) -> RouteTable:
    """Every HTTP binding of every RPC of ``services``; contract mistakes fail here, at start-up."""
    routes: list[Route] = []
    seen: dict[tuple[str, str], str] = {}
    collection_vars = contracts.collection_variables
    for service_name in services:
        svc = contracts.pool.FindServiceByName(service_name)
        for rpc in svc.methods:
            options = rpc.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue  # service-to-service only
            if rpc.client_streaming:
                log.warning("%s streams requests; HTTP/JSON cannot carry it, not exposed", rpc.full_name)
                continue
            rule = options.Extensions[annotations_pb2.http]
            auth = options.Extensions[auth_pb2.auth]
            request_class = contracts.message_class(rpc.input_type)
            response_class = contracts.message_class(rpc.output_type)
            for index, binding in enumerate([rule, *rule.additional_bindings]):
                pair = _rule_binding(binding)
                if pair is None:
                    raise ContractError(f"{rpc.full_name}: http rule without a pattern")
                method, path = pair
                template = PathTemplate.parse(path)
                where = f"{rpc.full_name} {method} {path}"
                for var in template.variables:
                    _check_field_path(rpc.input_type, var.field_path, where)
                if binding.body not in ("", "*") and binding.body not in rpc.input_type.fields_by_name:
                    raise ContractError(f"{where}: body field {binding.body!r} does not exist")
                if rpc.server_streaming and method != "GET":
                    raise ContractError(f"{where}: a server stream is served as SSE and needs GET")
                key = (method, template.regex.pattern)
                if key in seen:
                    raise ContractError(f"{where}: same route as {seen[key]}")
                seen[key] = rpc.full_name
                openapi_path, params = template.parameters(collection_vars)
                routes.append(
                    Route(
                        http_method=method,
                        template=template,
                        body=binding.body,
                        response_body=binding.response_body,
                        rpc=rpc,
                        request_class=request_class,
                        response_class=response_class,
                        auth=auth,
                        binding=index,
                        openapi_path=openapi_path,
                        path_parameters=params,
                    )
                )
    return RouteTable(routes)
