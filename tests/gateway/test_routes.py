"""The route table and the transcoder over the real compiled contracts."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from omni_runtime.errors import InvalidArgument
from services.gateway.routes import (
    ContractError,
    Contracts,
    PathTemplate,
    Route,
    RouteMatch,
    RouteTable,
    build_routes,
    exposed_services,
)
from services.gateway.transcode import build_request, find_etag, response_json, set_if_empty


@pytest.fixture(scope="module")
def table(contracts: Contracts) -> RouteTable:
    return build_routes(contracts, exposed_services(contracts))


def route_of(table: RouteTable, rpc: str, binding: int = 0) -> Route:
    return next(r for r in table if r.rpc.full_name == rpc and r.binding == binding)


def match(table: RouteTable, method: str, path: str) -> RouteMatch:
    found = table.match(method, path)
    assert isinstance(found, RouteMatch), found
    return found


def test_templates_parse_variables_nested_fields_and_verbs() -> None:
    t = PathTemplate.parse("/v1/{name=customers/*/cart}:checkout")
    assert t.verb == "checkout"
    assert [v.field_path for v in t.variables] == ["name"]
    assert t.match("/v1/customers/c1/cart:checkout") == {"name": "customers/c1/cart"}
    assert t.match("/v1/customers/c1/cart") is None
    assert t.match("/v1/customers/c1/x/cart:checkout") is None

    nested = PathTemplate.parse("/v1/{stock_level.name=locations/*/stockLevels/*}")
    assert nested.match("/v1/locations/s1/stockLevels/SKU-1") == {
        "stock_level.name": "locations/s1/stockLevels/SKU-1"
    }

    plain = PathTemplate.parse("/v1/{parent}/things")
    assert plain.match("/v1/abc/things") == {"parent": "abc"}

    deep = PathTemplate.parse("/v1/{path=files/**}")
    assert deep.match("/v1/files/a/b/c") == {"path": "files/a/b/c"}


def test_percent_encoded_ids_are_decoded_after_matching() -> None:
    t = PathTemplate.parse("/v1/{name=items/*}")
    # An encoded "/" stays inside its segment: it never changes which route matches.
    assert t.match("/v1/items/SKU%2F1") == {"name": "items/SKU/1"}
    assert t.match("/v1/items/caf%C3%A9") == {"name": "items/café"}


@pytest.mark.parametrize(
    "bad",
    ["v1/x", "/v1/{name=customers/*", "/v1/{na-me}", "/v1/x:a:b", "/v1/{name=a b}"],
)
def test_malformed_templates_are_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ContractError):
        PathTemplate.parse(bad)


def test_every_annotated_rpc_of_every_runtime_service_is_routed(
    contracts: Contracts, table: RouteTable
) -> None:
    from google.api import annotations_pb2

    expected = 0
    for service in exposed_services(contracts):
        for rpc in contracts.pool.FindServiceByName(service).methods:
            if rpc.GetOptions().HasExtension(annotations_pb2.http):
                rule = rpc.GetOptions().Extensions[annotations_pb2.http]
                expected += 1 + len(rule.additional_bindings)
    assert len(table) == expected > 80
    assert "omni.probe.v1.ProbeService" not in exposed_services(contracts)


def test_matching_picks_the_rpc_the_contract_names(table: RouteTable) -> None:
    cases = {
        ("GET", "/v1/customers/c1/cart"): ("omni.cart.v1.CartService.GetCart", {"name": "customers/c1/cart"}),
        ("POST", "/v1/customers/c1/cart:checkout"): (
            "omni.cart.v1.CartService.Checkout",
            {"name": "customers/c1/cart"},
        ),
        ("GET", "/v1/customers/c1/cart:watch"): (
            "omni.cart.v1.CartService.WatchCart",
            {"name": "customers/c1/cart"},
        ),
        ("GET", "/v1/customers/c1/orders"): (
            "omni.cart.v1.CartService.ListOrders",
            {"parent": "customers/c1"},
        ),
        ("GET", "/v1/customers/-/orders"): ("omni.cart.v1.CartService.ListOrders", {"parent": "customers/-"}),
        ("POST", "/v1/customers:register"): ("omni.identity.v1.IdentityService.RegisterCustomer", {}),
        ("POST", "/v1/customers/c1:lock"): (
            "omni.identity.v1.IdentityService.LockCustomer",
            {"name": "customers/c1"},
        ),
        ("GET", "/v1/customers/c1"): (
            "omni.identity.v1.IdentityService.GetCustomer",
            {"name": "customers/c1"},
        ),
        ("GET", "/.well-known/jwks.json"): ("omni.identity.v1.IdentityService.GetJwks", {}),
        ("PATCH", "/v1/locations/s1/stockLevels/SKU-1"): (
            "omni.inventory.v1.InventoryService.UpdateStockLevel",
            {"stock_level.name": "locations/s1/stockLevels/SKU-1"},
        ),
    }
    for (method, path), (rpc, values) in cases.items():
        found = match(table, method, path)
        assert found.route.rpc.full_name == rpc, (method, path)
        assert found.path_values == values


def test_additional_bindings_are_routes_of_their_own(table: RouteTable) -> None:
    staff = match(table, "GET", "/v1/staffMembers/st1/sessions")
    customer = match(table, "GET", "/v1/customers/c1/sessions")
    assert staff.route.rpc is customer.route.rpc
    assert (staff.route.binding, customer.route.binding) == (1, 0)
    assert staff.path_values == {"parent": "staffMembers/st1"}


def test_wrong_method_lists_the_allowed_ones_and_unknown_paths_match_nothing(table: RouteTable) -> None:
    assert table.match("DELETE", "/v1/customers/c1/cart") == ["GET"]
    assert table.match("GET", "/v1/nowhere") is None
    assert table.match("GET", "/v1/customers/c1/cart:unknownVerb") is None


def test_openapi_paths_name_ids_after_the_resource_patterns(table: RouteTable) -> None:
    assert (
        route_of(table, "omni.cart.v1.CartService.Checkout").openapi_path
        == "/v1/customers/{customer}/cart:checkout"
    )
    movement = route_of(table, "omni.inventory.v1.InventoryService.GetStockMovement")
    assert movement.openapi_path == "/v1/locations/{location}/stockLevels/{item}/movements/{movement}"
    assert [p.field_path for p in movement.path_parameters] == ["name", "name", "name"]


def test_body_star_takes_the_json_body_and_the_path_wins(table: RouteTable) -> None:
    found = match(table, "POST", "/v1/customers/c1/cart:addLine")
    body = (
        b'{"name": "customers/evil/cart", "line": {"item": "items/SKU-1", "quantity": 2}, "requestId": "r1"}'
    )
    request = build_request(found.route, found.path_values, [], body)
    assert request.name == "customers/c1/cart"
    assert (request.line.item, request.line.quantity, request.request_id) == ("items/SKU-1", 2, "r1")
    with pytest.raises(InvalidArgument, match="query parameters are not accepted"):
        build_request(found.route, found.path_values, [("etag", "x")], b"{}")
    with pytest.raises(InvalidArgument, match="unknownField"):
        build_request(found.route, found.path_values, [], b'{"unknownField": 1}')
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        build_request(found.route, found.path_values, [], b"{nope")
    with pytest.raises(InvalidArgument, match="JSON object"):
        build_request(found.route, found.path_values, [], b"[1]")
    assert build_request(found.route, found.path_values, [], b"").name == "customers/c1/cart"


def test_body_field_plus_query_parameters_for_the_rest(table: RouteTable) -> None:
    found = match(table, "PATCH", "/v1/customers/c1")
    request = build_request(
        found.route,
        found.path_values,
        [("updateMask", "displayName"), ("request_id", "r-9")],
        b'{"displayName": "Ana", "name": "customers/other"}',
    )
    assert request.customer.name == "customers/c1"
    assert request.customer.display_name == "Ana"
    assert list(request.update_mask.paths) == ["display_name"]
    assert request.request_id == "r-9"
    with pytest.raises(InvalidArgument, match=r"bound by the path|body"):
        build_request(found.route, found.path_values, [("customer.displayName", "x")], b"{}")


def test_query_parameters_cover_scalars_enums_repeated_and_well_known_types(table: RouteTable) -> None:
    found = match(table, "GET", "/v1/customers/c1/orders")
    request = build_request(
        found.route,
        found.path_values,
        [("pageSize", "25"), ("filter", 'state = "X"'), ("page_token", "t")],
        b"",
    )
    assert (request.parent, request.page_size, request.filter, request.page_token) == (
        "customers/c1",
        25,
        'state = "X"',
        "t",
    )
    for bad in (
        [("pageSize", "many")],
        [("nope", "1")],
        [("parent", "customers/c2")],
        [("pageSize", "1"), ("pageSize", "2")],
    ):
        with pytest.raises(InvalidArgument):
            build_request(found.route, found.path_values, bad, b"")


def test_query_parameters_reach_nested_and_repeated_fields(contracts: Contracts) -> None:
    # CheckAvailability is POST body "*" in the contract; bound without a body here, the same
    # request message exercises nested (near.point.latitude), repeated (items) and bool fields.
    from dataclasses import replace

    table = build_routes(contracts, ["omni.inventory.v1.InventoryService"])
    base = route_of(table, "omni.inventory.v1.InventoryService.CheckAvailability")
    as_get = replace(
        base, http_method="GET", body="", template=PathTemplate.parse("/v1/items:checkAvailability")
    )
    request = build_request(
        as_get,
        {},
        [
            ("items", "items/A"),
            ("items", "items/B"),
            ("near.point.latitude", "44.43"),
            ("near.point.longitude", "26.1"),
            ("near.radiusMeters", "5000"),
            ("pickupOnly", "true"),
        ],
        b"",
    )
    assert list(request.items) == ["items/A", "items/B"]
    assert (request.near.point.latitude, request.near.radius_meters, request.pickup_only) == (
        44.43,
        5000,
        True,
    )
    for bad in ([("near", "x")], [("pickupOnly", "maybe")], [("near.point.altitude", "1")]):
        with pytest.raises(InvalidArgument):
            build_request(as_get, {}, bad, b"")


def test_responses_are_proto3_json_with_int64_as_strings_and_empty_lists(
    contracts: Contracts, table: RouteTable
) -> None:
    route = route_of(table, "omni.cart.v1.CartService.GetCart")
    cart = route.response_class()
    json_format.ParseDict(
        {
            "name": "customers/c1/cart",
            "etag": "e1",
            "subtotal": {"currencyCode": "EUR", "minorUnits": "1999"},
        },
        cart,
    )
    body = response_json(route, cart)
    assert body["name"] == "customers/c1/cart"
    assert body["subtotal"] == {"currencyCode": "EUR", "minorUnits": "1999"}
    assert body["lines"] == []
    assert find_etag(cart) == "e1"


def test_last_event_id_maps_to_the_resume_field_only_if_unset(table: RouteTable) -> None:
    found = match(table, "GET", "/v1/customers/c1/cart:watch")
    request = build_request(found.route, found.path_values, [], b"")
    assert set_if_empty(request, "since_etag", "e7") and request.since_etag == "e7"
    assert not set_if_empty(request, "since_etag", "e8") and request.since_etag == "e7"
    assert not set_if_empty(request, "no_such_field", "x")
    change = found.route.response_class()
    change.cart.etag = "e9"
    assert find_etag(change) == "e9"


def test_contract_mistakes_fail_at_build_time(contracts: Contracts) -> None:
    with pytest.raises(KeyError):
        build_routes(contracts, ["omni.nope.v1.NopeService"])
