"""The poll fast lane (chat/fastpoll.py): what it answers from memory is exactly what the view answers,
and it never answers for a session that ended."""
import json

from werkzeug.test import EnvironBuilder, run_wsgi_app

from chat import live
from chat.fastpoll import PollFastLane
from tests.support import wait_until


def poll_environ(user, path, token=None, **params):
    token = token or user.client.get_cookie("chat_session").value
    return EnvironBuilder(path=path, query_string=params, headers={"Cookie": f"chat_session={token}"}).get_environ()


def answered(wsgi_app, environ):
    body, status, headers = run_wsgi_app(wsgi_app, environ)
    return status, headers, b"".join(body)


def by_the_view(app, environ):
    """The request answered by Flask alone (the app behind the lane)."""
    layer = app.wsgi_app
    while not isinstance(layer, PollFastLane):
        layer = getattr(layer, "wsgi_app", None) or layer.app  # RequestIds, ProxyFix
    return answered(layer.wsgi_app, environ)


def from_memory(app, environ, slug):
    with app.app_context():
        return live.poll_from_memory(environ, slug, app.config)


def test_the_lane_answers_what_the_view_answers(app, member, make_client):
    other = make_client()
    other.register()
    slug = member.create_room()
    feed_rooms = f"{slug},{member.create_room()}"
    path = f"/api/rooms/{slug}/poll"
    member.get(path, query_string={"timeout": 0})  # the view: remembers the session and the room
    # Memory holds a room's events from the first one it saw: a cursor must be at or after it.
    cursor = other.send(slug, "the first").json["message"]["id"]
    feed_cursor = member.get("/api/poll", query_string={"rooms": feed_rooms, "timeout": 0}).json["cursor"]
    sent = [other.send(slug, f"message {n}").json["message"] for n in range(3)]
    assert member.delete(f"/api/rooms/{slug}/messages/{sent[1]['id']}").status_code == 403
    assert other.delete(f"/api/rooms/{slug}/messages/{sent[1]['id']}").status_code == 200

    for path, slug_or_none, params in ((path, slug, {"cursor": cursor}),
                                       ("/api/poll", None, {"cursor": feed_cursor, "rooms": feed_rooms})):
        environ = poll_environ(member, path, timeout=0, **params)
        # The hub's reader hands events over asynchronously: wait until its memory holds all four.
        remembered = wait_until(lambda: (found := from_memory(app, environ, slug_or_none)) is not None
                                and len(json.loads(found)["events"]) == 4 and found, what="the lane answers")
        lane_status, lane_headers, lane_body = answered(app.wsgi_app, poll_environ(member, path, timeout=0, **params))
        status, headers, body = by_the_view(app, poll_environ(member, path, timeout=0, **params))
        assert (lane_status, json.loads(lane_body)) == (status, json.loads(body))
        assert json.loads(remembered) == json.loads(body)
        events = json.loads(body)["events"]
        assert [event["event"] for event in events] == ["message"] * 3 + ["message_deleted"]
        assert events[1]["data"]["deleted"] is True  # the tombstone, as Redis applies it
        for name in ("Content-Type", "Cache-Control", "Content-Security-Policy", "X-Content-Type-Options",
                     "Referrer-Policy", "Content-Length"):
            assert lane_headers[name] == headers[name], name


def test_the_lane_never_answers_for_a_session_that_ended(app, member):
    slug = member.create_room()
    path = f"/api/rooms/{slug}/poll"
    for _ in range(2):  # the first live request starts the hub; the second is remembered
        member.get(path, query_string={"timeout": 0})
    cursor = member.send(slug).json["message"]["id"]
    token = member.client.get_cookie("chat_session").value  # replayed after logout
    wait_until(lambda: from_memory(app, poll_environ(member, path, token, cursor=cursor, timeout=0), slug),
               what="the lane answers while the session lasts")
    assert member.post("/api/auth/logout").status_code == 204
    assert from_memory(app, poll_environ(member, path, token, cursor=cursor, timeout=0), slug) is None
    status, _, body = by_the_view(app, poll_environ(member, path, token, cursor=cursor, timeout=0))
    assert status.startswith("401") and json.loads(body)["error"]["code"] == "not_authenticated"


def test_the_lane_leaves_to_the_view_what_memory_cannot_prove(app, member):
    slug = member.create_room()
    path = f"/api/rooms/{slug}/poll"
    early = member.send(slug, "before anyone polled").json["message"]
    for _ in range(2):  # the first live request starts the hub; the second is remembered
        member.get(path, query_string={"timeout": 0})
    later = member.send(slug, "after").json["message"]
    wait_until(lambda: from_memory(app, poll_environ(member, path, cursor=later["id"], timeout=0), slug),
               what="the later message in memory")
    # Memory starts at the later message: a cursor before it, or a malformed one, goes to the view.
    for cursor in ("0-0", early["id"], "nope"):
        assert from_memory(app, poll_environ(member, path, cursor=cursor, timeout=0), slug) is None
    answer = member.get(path, query_string={"cursor": "0-0", "timeout": 0}).json
    assert [event["data"]["id"] for event in answer["events"]] == [early["id"], later["id"]]
