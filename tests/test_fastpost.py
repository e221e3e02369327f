"""The posting fast lane (chat/fastpost.py): what it records from memory is answered exactly as the view
answers it, and anything memory cannot let through by itself goes on to the view, body and all."""
import json

import pytest

from chat.fastpost import PostFastLane
from tests.support import AuthActions, assert_error


@pytest.fixture
def view_calls(app):
    """How many posts reached Flask's view (the lane took the others)."""
    calls = []
    view = app.view_functions["api.post_message"]

    def counted(*args, **kwargs):
        calls.append(1)
        return view(*args, **kwargs)

    app.view_functions["api.post_message"] = counted
    return calls


def headers_of(response) -> dict:
    return {name: value for name, value in response.headers.items() if name not in ("Content-Length", "X-Request-ID")}


def test_the_lane_answers_what_the_view_answers(app, member, room, view_calls):
    by_view = member.send(room, "first", client_id="c-1")  # the view: memory now holds the session and rules
    by_lane = member.send(room, "second", client_id="c-2")
    assert len(view_calls) == 1
    assert by_lane.status_code == by_view.status_code == 201 and headers_of(by_lane) == headers_of(by_view)
    for answer in (by_view, by_lane):  # the same text: Flask's compact JSON, keys sorted, and a newline
        assert answer.data == json.dumps(answer.json, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    assert set(by_lane.json["message"]) == set(by_view.json["message"])
    assert by_lane.json["message"]["body"] == "second"
    repeated = member.send(room, "second", client_id="c-2")  # a repeat, found by the insert in the lane
    assert (repeated.status_code, repeated.json) == (200, by_lane.json) and len(view_calls) == 1
    history = member.history(room).json["messages"]
    assert [message["body"] for message in history] == ["first", "second"]


@pytest.mark.parametrize("payload, headers, status, code", [
    ({"body": ""}, {}, 422, "validation_error"),
    ({"body": "x", "client_id": 5}, {}, 422, "validation_error"),
    ("not an object", {}, 400, "invalid_json"),
    ({"body": "x"}, {"X-CSRF-Token": "wrong"}, 403, "csrf_failed"),
])
def test_what_memory_does_not_let_through_goes_to_the_view_with_its_body(app, member, room, view_calls, payload,
                                                                        headers, status, code):
    member.send(room, "warm")
    answer = member.client.post(f"/api/rooms/{room}/messages", data=json.dumps(payload),
                                headers={**member.headers(), **headers}, content_type="application/json")
    assert_error(answer, status, code)
    assert len(view_calls) == 2


def test_a_refusal_by_the_rate_limit_is_answered_by_the_view(make_app, member, room):
    browser = AuthActions(make_app(CHAT_RATE_LIMIT="1/60").test_client())
    assert browser.login(member.username).status_code == 200
    assert browser.send(room, "one").status_code == 201
    refused = browser.send(room, "two")
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


def test_the_lane_sits_inside_the_proxy_fix_and_the_request_log(app):
    layer, seen = app.wsgi_app, []
    while not isinstance(layer, PostFastLane):
        seen.append(type(layer).__name__)
        layer = getattr(layer, "wsgi_app", None) or layer.app
    assert seen[:2] == ["RequestIds", "BodyDeadline"]
