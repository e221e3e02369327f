"""Redis memory bounded (issue 11): the embedded Redis runs with `maxmemory` and `noeviction`, and a Redis
that is full answers a post with a clear `503` + Retry-After (never a 5xx of another kind, never a silently
dropped event); once there is room again, the retry with the same client_id yields exactly one message.
On a private redis-server: filling it must not touch the machine's Redis."""
import time

import redis

from chat import embedded_redis, outbox, streams
from chat.ids import EventId
from tests.support import UNLIMITED_POSTING, AuthActions, unique
from tests.test_write_path_faults import history, new_room, post_ok, running_app, send, signed_in


def test_the_embedded_redis_is_bounded_and_refuses_rather_than_evicts(tmp_path):
    url = embedded_redis.ensure_running(str(tmp_path / "instance"), "64mb")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    finally:
        client.shutdown(nosave=True)  # this test's own server; the session's embedded Redis is another


def test_a_full_redis_answers_503_and_the_retry_yields_one_message(services, private_redis):
    with running_app(services, private_redis.url) as app:
        alice = signed_in(app)
        slug = new_room(alice)
        post_ok(alice, slug, "before Redis filled up")
        admin = private_redis.client()
        # Full: it holds more than its bound, and noeviction has nothing it may drop (a bound just above the
        # usage would come and go as client buffers are freed).
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)

        client_id = unique("c")
        refused = send(alice, slug, "while Redis is full", client_id)
        assert refused.status_code == 503, refused.json
        assert refused.json["error"]["code"] == "unavailable" and int(refused.headers["Retry-After"]) > 0

        admin.config_set("maxmemory", 0)  # room again (an operator raised the bound, or trimming freed some)
        retried = send(alice, slug, "while Redis is full", client_id)
        assert retried.status_code in (200, 201), retried.json
        bodies = [message["body"] for message in history(alice, slug)["messages"]]
        assert bodies == ["before Redis filled up", "while Redis is full"]


def test_streams_keep_events_for_a_bounded_time_and_older_positions_still_resume_exactly(make_app):
    """CHAT_STREAM_MAX_AGE_SECONDS bounds how long Redis keeps a room's events (here a millisecond): each
    publish trims what is older, in the room and the firehose, and the relay's minute pass trims idle rooms.
    A position older than what Redis keeps still resumes exactly, from the database."""
    app = make_app(CHAT_STREAM_MAX_AGE_SECONDS=0.001, **UNLIMITED_POSTING)
    alice = AuthActions(app.test_client())
    alice.register()
    slug = alice.create_room()
    sent = [alice.send(slug, f"message {n}").json["message"] for n in range(6)]
    with app.app_context():
        room_streams = streams.current()
        kept = room_streams.redis.xlen(room_streams.room_stream_key(slug))
        assert kept < len(sent), "older events were trimmed by age"
        answer = alice.client.get(f"/api/rooms/{slug}/poll", query_string={"cursor": sent[0]["id"], "timeout": 0})
        assert [event["data"] for event in answer.json["events"]] == sent[1:]
        time.sleep(0.002)  # older than the bound: a millisecond must pass (there is no event to await)
        outbox.relay(everything=True)
        assert room_streams.redis.xlen(room_streams.room_stream_key(slug)) == 0, "an idle room is trimmed too"
        assert room_streams.last_ids([slug])[slug] == EventId.parse(sent[-1]["id"]), "its position stays"
    assert alice.send(slug, "after the trim").status_code == 201
    assert [m["body"] for m in alice.history(slug).json["messages"]] == [m["body"] for m in sent] + ["after the trim"]


def test_a_redis_that_forgot_its_scripts_still_counts_and_publishes_posts(services, private_redis):
    """Rate limits and publishing call their scripts by hash alone, in one round trip for a whole group of
    posts; a Redis that no longer knows them (restarted with its data, or SCRIPT FLUSH) still takes each
    post's allowance once and publishes it live, without a 503."""
    with running_app(services, private_redis.url) as app:
        alice = signed_in(app)
        slug = new_room(alice)
        first = post_ok(alice, slug, "before")
        admin = private_redis.client()
        admin.script_flush()
        second = post_ok(alice, slug, "after the scripts were forgotten")
        live = alice.get(f"/api/rooms/{slug}/poll", query_string={"cursor": first["id"], "timeout": 0}).json
        assert [event["data"] for event in live["events"]] == [second]  # published: served from the stream

        admin.script_flush()
        with app.app_context():
            group = [(user_id, 1, 10) for user_id in (101, 101, 102)]
            one_allowed = ((2, 60), (100, 60), (10_000, 60))  # two posts a minute in a room
            assert streams.current().posts_allowed(group, *one_allowed) == [0, 0, 0]
            refused = streams.current().posts_allowed(group, *one_allowed)
        assert refused[0] > 0 and refused[1] > 0 and refused[2] == 0  # each counted exactly once
