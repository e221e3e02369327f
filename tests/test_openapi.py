"""GET /api/openapi.json (API.md, "Operations"): a valid OpenAPI document of every JSON endpoint, which the
live service keeps to under a bounded schemathesis run."""
import re
import time
from collections import Counter
from dataclasses import dataclass

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from tests.conftest import reset_state
from tests.support import UNLIMITED_POSTING, HttpUser, LiveServer, live_moderator, posted

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


def test_durable_events_are_documented_with_the_schemas_they_are_checked_with(client):
    """A client built from the document expects of each durable event exactly the fields the service checks the
    event for before publishing it (schemas.DURABLE_EVENTS): no second copy of the schemas to drift."""
    from chat.schemas import DURABLE_EVENTS  # noqa: PLC0415

    schemas = client.get(DOCUMENT).json["components"]["schemas"]
    documented = {item["properties"]["event"]["const"]: item["properties"]["data"]["contentSchema"]["$ref"]
                  for item in schemas["ModerationStreamEvent"]["oneOf"]}
    for event_type, checked in DURABLE_EVENTS.items():
        assert documented[event_type] == f"#/components/schemas/{type(checked).__name__}"
        data = schemas[type(checked).__name__]
        assert set(data["properties"]) == set(checked.fields)
        assert set(data["required"]) == {name for name, field in checked.fields.items() if field.required}

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


# The bounded schemathesis run: every operation of the document, against a real gunicorn on the run's Redis
# and database, with positive (valid) and negative (invalid) inputs, signed in as a moderator, as a user
# and not at all. It holds the service to: no 5xx, and every answer (status, content type, headers,
# body, each event of a stream) as the document says.

FUZZ_EXAMPLES = 80  # per operation
FUZZ_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None,  # each request has its own timeout below
    database=None, derandomize=True,  # the same cases every run: CI fails only on a change, not on luck
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found, in bounded time
    suppress_health_check=list(HealthCheck))
REQUEST_TIMEOUT = 10


@pytest.fixture
def fuzz_target(services):
    """A server whose live endpoints answer at once, so the run stays short: a poll waits 0 s and a stream
    ends right after what it sends on connecting (the first chunk, presence and the catch-up). Rates are
    raised so that inputs, not limits, decide most answers (429s remain documented and checked)."""
    reset_state(services)
    server = LiveServer(services, workers=1, CHAT_POLL_TIMEOUT_SECONDS=0, CHAT_STREAM_MAX_SECONDS=0,
                        CHAT_REGISTER_LIMIT="10000/60", **UNLIMITED_POSTING)
    server.start()
    try:
        moderator = live_moderator(server)
        member = HttpUser(server.url).register()
        room = moderator.create_room()
        message = posted(member, room)
        report = moderator.post(f"/api/rooms/{room}/messages/{message['id']}/reports", json={"reason": "spam"})
        report.raise_for_status()
        known = {"slug": room, "message_id": message["id"], "username": member.user["username"],
                 "report_id": report.json()["id"]}
        document = requests.get(server.url + DOCUMENT, timeout=10).json()  # (from_url would leave this one out)
        schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict({
            "base-url": server.url, "generation": {"with-security-parameters": False}}))
        yield FuzzTarget(server, schema, {"moderator": moderator, "member": member}, known)
    finally:
        server.stop()


@dataclass
class FuzzTarget:
    server: LiveServer
    schema: schemathesis.BaseSchema
    users: dict[str, HttpUser]
    known: dict[str, str | int]  # path parameters that name what exists

    def credentials(self, who: str, fresh: bool = False) -> tuple[dict, dict]:
        """Cookies and headers of `who` ("nobody": none); `fresh`: a new session of theirs, to sign out."""
        if who == "nobody":
            return {}, {}
        user = self.users[who]
        if fresh:
            user = HttpUser(self.server.url)
            user.login(self.users[who].user["username"]).raise_for_status()
        return {"chat_session": user.http.cookies["chat_session"]}, {"X-CSRF-Token": user.csrf}


def _cases(operation, known: dict):
    """Positive and negative cases, and positive ones on the seeded room, message and user, which
    generated names would almost never hit."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    names = re.findall(r"{(\w+)}", operation.path)
    if names:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE,
                                                path_parameters={name: known[name] for name in names}))
    return st.one_of(strategies)


def test_the_service_keeps_to_its_document(fuzz_target):
    failures, calls, started = {}, Counter(), time.monotonic()
    for result in fuzz_target.schema.get_all_operations():
        operation = result.ok()
        signs_out = operation.path == "/api/auth/logout"  # on a session of its own, or the others would end

        @FUZZ_SETTINGS
        @given(case=_cases(operation, fuzz_target.known), who=st.sampled_from(["moderator", "member", "nobody"]))
        def keeps_to_document(case, who):
            cookies, headers = fuzz_target.credentials(who, fresh=signs_out)
            response = case.call(cookies=cookies, headers=headers, timeout=REQUEST_TIMEOUT)
            calls[operation.label] += 1
            case.validate_response(response, checks=FUZZ_CHECKS)

        try:
            keeps_to_document()
        except (Exception, BaseExceptionGroup) as failure:  # noqa: BLE001 - all operations, reported together
            failures[operation.label] = failure
    print(f"schemathesis: {sum(calls.values())} requests to {len(calls)} operations in "
          f"{time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in failures.items())
    documented = {f"{method.upper()} {path}" for path, item in fuzz_target.schema.raw_schema["paths"].items()
                  for method in item}
    assert set(calls) == documented  # every operation was exercised
