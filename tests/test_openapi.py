"""GET /api/openapi.json (API.md, "Operations"): a valid OpenAPI document of every JSON endpoint."""
import re

from openapi_spec_validator import validate as validate_openapi

DOCUMENT = "/api/openapi.json"
NOT_JSON = {"static", "pages.index", "pages.room", "pages.moderate",
            "ops.metrics_endpoint"}  # Prometheus text, for scrapers


def test_document_is_valid_openapi_without_sign_in(client):
    response = client.get(DOCUMENT)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    validate_openapi(response.json)  # raises on any violation of the OpenAPI schema
    assert response.json["openapi"].startswith("3.")


def test_document_may_be_cached_and_revalidated(client):
    first = client.get(DOCUMENT)
    assert first.headers["Cache-Control"] == "public, max-age=300"  # nothing about anyone: any cache may keep it
    assert first.headers["ETag"]
    again = client.get(DOCUMENT, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert client.get(DOCUMENT).data == first.data


def test_document_is_built_once_per_process(app):
    from chat import openapi  # noqa: PLC0415

    assert openapi.document(app)[0] is openapi.document(app)[0]


def test_every_json_endpoint_is_documented_with_its_answers(app, client):
    document = client.get(DOCUMENT).json
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routed = {(method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint not in NOT_JSON
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert any(status.startswith("2") for status in operation["responses"]), (method, path)
            assert operation["summary"] and operation["operationId"]


def test_request_bodies_come_from_the_validating_schemas(client):
    schemas = client.get(DOCUMENT).json["components"]["schemas"]
    credentials = schemas["CredentialsRequest"]
    assert credentials["required"] == ["password", "username"]
    assert credentials["properties"]["username"]["pattern"] == r"^[A-Za-z0-9_.\-]{3,32}$"  # ECMA-262: no \Z
    assert credentials["properties"]["password"] == {"type": "string", "minLength": 8, "maxLength": 256}
    assert schemas["MuteRequest"]["properties"]["minutes"] == {"type": "integer", "minimum": 1, "maximum": 10080}


def test_sign_in_is_described_as_security_schemes(client):
    document = client.get(DOCUMENT).json
    schemes = document["components"]["securitySchemes"]
    assert {key: schemes["session"][key] for key in ("type", "in", "name")} == \
        {"type": "apiKey", "in": "cookie", "name": "chat_session"}
    assert {key: schemes["csrf"][key] for key in ("type", "in", "name")} == \
        {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"}
    paths = document["paths"]
    assert paths["/api/auth/login"]["post"]["security"] == []
    assert paths["/api/rooms"]["get"]["security"] == [{"session": []}]
    assert paths["/api/rooms"]["post"]["security"] == [{"session": [], "csrf": []}]
