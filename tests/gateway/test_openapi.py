"""The OpenAPI document: valid OpenAPI 3.1, and a faithful picture of the route table."""

from __future__ import annotations

import re

import httpx
import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31

from services.gateway.openapi import build_openapi
from services.gateway.routes import Contracts, RouteTable, build_routes, exposed_services


@pytest.fixture(scope="module")
def table(contracts: Contracts) -> RouteTable:
    return build_routes(contracts, exposed_services(contracts))


@pytest.fixture(scope="module")
def document(table: RouteTable, contracts: Contracts) -> dict:
    return build_openapi(table, contracts, version="9.9.9")


def test_document_is_valid_openapi_3_1(document: dict) -> None:
    # The OpenAPI Initiative's JSON Schema for 3.1 documents, as shipped with schemathesis.
    jsonschema.validate(document, OPENAPI_31)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == "9.9.9"


def test_every_route_is_an_operation_with_unique_ids(document: dict, table: RouteTable) -> None:
    operations = [
        (path, method, op) for path, item in document["paths"].items() for method, op in item.items()
    ]
    assert len(operations) == len(table)
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for route in table:
        op = document["paths"][route.openapi_path][route.http_method.lower()]
        assert op["x-grpc-method"] == route.grpc_path
        placeholders = re.findall(r"\{([^}]+)\}", route.openapi_path)
        path_params = [p["name"] for p in op["parameters"] if p.get("in") == "path"]
        assert placeholders == path_params


def test_security_follows_the_auth_option(document: dict) -> None:
    register = document["paths"]["/v1/customers:register"]["post"]
    assert register["security"] == []
    get_cart = document["paths"]["/v1/customers/{customer}/cart"]["get"]
    assert get_cart["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    channel = document["components"]["parameters"]["Channel"]
    assert channel["required"] is True and "mobile_app" in channel["schema"]["enum"]


def test_bodies_queries_and_schemas_follow_the_contract(document: dict) -> None:
    schemas = document["components"]["schemas"]
    add_line = document["paths"]["/v1/customers/{customer}/cart:addLine"]["post"]
    body_ref = add_line["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schemas[body_ref.rsplit("/", 1)[-1]]
    assert "name" not in body["properties"]  # bound by the path
    assert body["required"] == ["line"]
    assert body["properties"]["requestId"]["format"] == "uuid"
    assert not [p for p in add_line["parameters"] if p.get("in") == "query"]

    list_orders = document["paths"]["/v1/customers/{customer}/orders"]["get"]
    query = {p["name"]: p for p in list_orders["parameters"] if p.get("in") == "query"}
    assert set(query) == {"pageSize", "pageToken", "filter", "orderBy"}
    assert query["pageSize"]["schema"]["type"] == "integer"

    cart = schemas["omni.cart.v1.Cart"]
    assert cart["properties"]["lines"]["type"] == "array"
    assert cart["properties"]["createTime"]["readOnly"] is True
    money = schemas["omni.type.v1.Money"]["properties"]
    assert money["minorUnits"]["type"] == "string"  # int64 is a string in proto3 JSON
    assert "Never a float" in schemas["omni.type.v1.Money"]["description"]

    watch = document["paths"]["/v1/customers/{customer}/cart:watch"]["get"]
    assert "text/event-stream" in watch["responses"]["200"]["content"]
    assert {"$ref": "#/components/parameters/LastEventId"} in watch["parameters"]


async def test_served_at_openapi_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    jsonschema.validate(document, OPENAPI_31)
    assert "/v1/probe:ping" in document["paths"]


def test_the_description_explains_auth_and_headers_with_real_routes(document: dict) -> None:
    text = document["info"]["description"]
    for header in (
        "Authorization: Bearer",
        "X-Omni-Channel",
        "X-Omni-Store",
        "X-Omni-Device",
        "X-Request-Id",
    ):
        assert header in text
    mentioned = re.findall(r"`POST (/v1/[^`]+)`", text)
    assert len(mentioned) >= 4
    for path in mentioned:  # the routes the text sends people to exist
        assert "post" in document["paths"][path], path
