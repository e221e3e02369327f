"""The write path under faults, against real services (never mocks).

The path (chat/actions.py, chat/outbox.py): one transaction records the event with the id the room's
counter gives it, and its commit acknowledges it (201); then it is published to Redis, by the request
and, failing that, by the next publisher of the room or the relay. A failure before the commit answers
503 unavailable with Retry-After and records nothing; after it, the answer is 201 and the event reaches
every reader exactly once, in order, as soon as Redis can take it. A retry with the same client_id
yields exactly one message, and ids never go backwards.

Every fault here breaks only what the test owns: its private redis-server, its own TCP proxy, its
own PostgreSQL database or SQLite lock, its own gunicorn. The machine's shared Redis and PostgreSQL
are never stopped or cut: a test cuts only its own proxy in front of them.
"""
import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from chat import actions, create_app, outbox
from chat.extensions import db
from chat.ids import ZERO, EventId, utcnow
from chat.models import Message, Mute, find_room, find_user
from chat.streams import Streams
from tests.conftest import app_config
from tests.faults import SqliteWriteLock, TcpProxy, fresh_postgres_database, sqlite_path
from tests.support import UNLIMITED_POSTING, AuthActions, LiveServer, run_migrations, unique, wait_until

# Upper bounds on how long a 503 may take. A refused connection fails at once; SQLite waits for
# its busy timeout (5 s, chat/extensions.py) before it gives up on the write lock.
FAST_503_SECONDS = 3.0
SQLITE_BUSY_SECONDS = 5.0


# Helpers: what a user does and sees

def eid(text: str) -> EventId:
    return EventId.parse(text)


@contextlib.contextmanager
def running_app(services, redis_url: str, database_uri: str | None = None, maxlen: int = 10000):
    """The app in this process, on the given Redis (and database), with a key prefix of its own."""
    overrides = {"REDIS_URL": redis_url, "CHAT_REDIS_PREFIX": unique("faults"), **UNLIMITED_POSTING,
                 "CHAT_STREAM_MAXLEN": maxlen}
    if database_uri is not None:
        overrides["SQLALCHEMY_DATABASE_URI"] = database_uri
    app = create_app(app_config(services, **overrides), instance_path=services["instance"])
    try:
        yield app
    finally:
        hub = app.extensions.get("chat_hub")
        if hub is not None:  # started by a poll: stop its reader, it would outlive this test's Redis
            hub.shutting_down = True
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        client = app.extensions.get("chat_redis")
        if client is not None:
            client.connection_pool.disconnect()


def signed_in(app) -> AuthActions:
    user = AuthActions(app.test_client())
    assert user.register().status_code == 201
    return user


def new_room(user: AuthActions) -> str:
    response = user.post("/api/rooms", json={"name": unique("room")})
    assert response.status_code == 201, response.json
    return response.json["room"]["slug"]


def send(user: AuthActions, slug: str, body: str, client_id: str):
    return user.post(f"/api/rooms/{slug}/messages", json={"body": body, "client_id": client_id})


def post_ok(user: AuthActions, slug: str, body: str) -> dict:
    response = send(user, slug, body, unique("c"))
    assert response.status_code == 201, response.json
    return response.json["message"]


def history(user: AuthActions, slug: str, **params) -> dict:
    response = user.get(f"/api/rooms/{slug}/messages", query_string={"limit": 200, **params})
    assert response.status_code == 200, response.json
    return response.json


def assert_unavailable(response, started: float, within: float) -> float:
    """503 unavailable with a usable Retry-After, answered in time; returns how long it took."""
    elapsed = time.monotonic() - started
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.json["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert elapsed < within, f"the 503 took {elapsed:.2f} s"
    return elapsed


def assert_in_order(messages: list[dict]) -> None:
    ids = [eid(message["id"]) for message in messages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids


def with_client_id(messages: list[dict], client_id: str) -> list[dict]:
    return [message for message in messages if message["client_id"] == client_id]


def assert_retry_yields_one(user, slug, body, client_id, acked: list[dict], expect_id: str | None = None,
                            expect_status: tuple = (200, 201)) -> dict:
    """Retry the failed post: exactly one message, visible in history after every acknowledged one
    (all still there); a further retry answers 200 with the same message."""
    retry = send(user, slug, body, client_id)
    assert retry.status_code in expect_status, (retry.status_code, retry.json)
    message = retry.json["message"]
    assert message["body"] == body and message["client_id"] == client_id
    if expect_id is not None:
        assert message["id"] == expect_id, "the retry must return the id the stream already gave the message"
    assert eid(message["id"]) > max(eid(m["id"]) for m in acked), "ids never go backwards"
    shown = history(user, slug)["messages"]
    assert_in_order(shown)
    assert [m["id"] for m in shown] == [m["id"] for m in acked] + [message["id"]]
    assert with_client_id(shown, client_id) == [message]
    again = send(user, slug, body, client_id)
    assert again.status_code == 200 and again.json["message"] == message
    return message


# 1. Redis stops

@pytest.mark.parametrize("restart", ["keeps_data", "comes_back_empty"])
def test_redis_stopped_answers_503_and_the_retry_yields_one_message(services, private_redis, restart):
    with running_app(services, private_redis.url) as app:
        alice = signed_in(app)
        slug = new_room(alice)
        acked = [post_ok(alice, slug, "before the outage"), post_ok(alice, slug, "also before")]

        private_redis.stop(keep_data=(restart == "keeps_data"))
        started = time.monotonic()
        assert_unavailable(send(alice, slug, "during the outage", "c-outage"), started, FAST_503_SECONDS)
        private_redis.start()

        shown = history(alice, slug)["messages"]
        assert shown == acked, "nothing of the refused post is visible; every acknowledged message is"
        assert_retry_yields_one(alice, slug, "during the outage", "c-outage", acked)


PERIODIC_JOBS = ("publishing what requests left unpublished", "ending mutes that ran out")  # gunicorn.conf.py


def test_a_redis_outage_is_logged_once_by_each_periodic_job_not_every_second(services, private_redis, tmp_path):
    """An operator reading the log through a Redis outage sees each job that runs every second say once that it
    paused, why, and once that it resumed: not a traceback a second that buries everything else."""
    server = LiveServer(services, workers=1, REDIS_URL=private_redis.url, CHAT_REDIS_PREFIX=unique("outage"),
                        PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")
    server.start()

    def said(words: str) -> dict:
        lines = server.notable_output(since, most=100000)
        return {job: sum(f"{job} {words}" in line for line in lines) for job in PERIODIC_JOBS}

    try:
        since = server.output_size()
        private_redis.stop(keep_data=True)
        wait_until(lambda: all(said("paused").values()), what="each job said it paused")
        time.sleep(3)  # the outage goes on for three more rounds of each job
        private_redis.start()
        wait_until(lambda: all(said("resumed").values()), what="each job said it resumed")
        assert said("paused") == said("resumed") == dict.fromkeys(PERIODIC_JOBS, 1)
        assert said("failed") == dict.fromkeys(PERIODIC_JOBS, 0)
    finally:
        server.stop()


def published_after(user: AuthActions, slug: str, cursor: str) -> list[dict]:
    """Every durable event a poller resuming from `cursor` is given, page after page."""
    found = []
    while True:
        page = poll(user, slug, cursor)
        found += page["events"]
        if not page["events"]:
            return found
        cursor = page["cursor"]


def relay_now(app) -> int:
    """What the relay job (gunicorn.conf.py) does every second, done now, past its grace for requests."""
    with app.app_context():
        outbox.RELAY_GRACE_MS, grace = -10**6, outbox.RELAY_GRACE_MS
        try:
            return outbox.relay(everything=True)
        finally:
            outbox.RELAY_GRACE_MS = grace
            db.session.remove()


@pytest.mark.parametrize("moment", ["request_lost", "reply_lost"])
def test_redis_lost_at_the_publish_after_the_commit(services, private_redis, moment):
    """Redis goes away exactly at the publish, after the commit acknowledged the message: before the
    publish reaches it, or after it ran but before its reply came back. The post is answered 201 (it is
    recorded: history shows it at once) and every reader gets it exactly once, in order, once Redis is
    back: from the room's next publisher or from the relay."""
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{proxy.port}/0") as app:
            alice = signed_in(app)
            slug = new_room(alice)
            acked = [post_ok(alice, slug, "before the cut")]  # also checks this Redis against the database
            cursor = history(alice, slug)["cursor"]
            trigger = proxy.when(f":room:{slug}:log".encode(), proxy.cut,
                                 at="request" if moment == "request_lost" else "reply")

            cut = send(alice, slug, "cut at the publish", "c-cut")
            assert cut.status_code == 201, cut.json
            assert trigger.fired.wait(5) and trigger.error is None
            acked.append(cut.json["message"])
            assert history(alice, slug)["messages"] == acked, "acknowledged means recorded, whatever Redis did"
            proxy.restore()

            if moment == "request_lost":
                assert published_after(alice, slug, cursor) == [], "not published yet: nothing to deliver"
                acked.append(post_ok(alice, slug, "the next post publishes what is missing first"))
            else:
                assert relay_now(app) == 0, "it was published: the relay finds nothing missing"
            delivered = published_after(alice, slug, cursor)
            assert [(event["event"], event["data"]) for event in delivered] == \
                [("message", message) for message in acked[1:]]
            assert [event["id"] for event in delivered] == [message["id"] for message in acked[1:]]
            assert relay_now(app) == 0
            if moment == "reply_lost":
                assert_retry_yields_one(alice, slug, "cut at the publish", "c-cut", acked[:1], expect_id=acked[1]["id"],
                                        expect_status=(200,))
    finally:
        proxy.close()


def test_an_unpublished_message_is_published_by_the_relay(services, private_redis):
    """Nobody posts after the failed publish: the relay publishes it, once."""
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{proxy.port}/0") as app:
            alice = signed_in(app)
            slug = new_room(alice)
            post_ok(alice, slug, "before the cut")
            cursor = history(alice, slug)["cursor"]
            trigger = proxy.when(f":room:{slug}:log".encode(), proxy.cut)
            message = send(alice, slug, "left to the relay", "c-relay")
            assert message.status_code == 201 and trigger.fired.wait(5)
            proxy.restore()
            assert published_after(alice, slug, cursor) == []
            assert relay_now(app) == 1
            assert [event["data"] for event in published_after(alice, slug, cursor)] == [message.json["message"]]
            assert relay_now(app) == 0
    finally:
        proxy.close()


def test_a_late_publish_while_others_post_past_the_stream_length(services, private_redis):
    """One message's publish is lost while the room goes on past CHAT_STREAM_MAXLEN: it is published
    before the next one, so Redis never holds a message after a gap, and a reader resuming from before it
    gets every message once, in order (the trimmed part rebuilt from the database)."""
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{proxy.port}/0", maxlen=10) as app:
            alice, bob = signed_in(app), signed_in(app)
            slug = new_room(alice)
            acked = [post_ok(alice, slug, "first")]
            cursor = history(alice, slug)["cursor"]
            trigger = proxy.when(f":room:{slug}:log".encode(), proxy.cut)
            late = send(alice, slug, "late", "c-late")
            assert late.status_code == 201 and trigger.fired.wait(5)
            proxy.restore()
            acked.append(late.json["message"])
            acked += [post_ok(bob, slug, f"after {n}") for n in range(250)]  # trimmed in nodes of 100
            assert history(alice, slug)["messages"] == acked[-200:]
            delivered = published_after(alice, slug, "0-0")
            assert [event["data"] for event in delivered] == acked
            assert [event["data"] for event in published_after(alice, slug, cursor)] == acked[1:]
    finally:
        proxy.close()


def test_moderation_actions_whose_publish_redis_refused_are_broadcast_once(services, private_redis, tmp_path):
    """A mute, and the end of a mute that ran out, taken while Redis refuses the publish: both are
    recorded (the mute answers 201 and is in force), and each is broadcast exactly once when Redis is
    back (by the relay, or by the room's next event). A database of its own: the run's live servers end
    the mutes that ran out in theirs every second, and would take this one's before its sweep."""
    database = f"sqlite:///{tmp_path / 'mutes.sqlite3'}"
    run_migrations(database, services["instance"])
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{proxy.port}/0", database_uri=database) as app:
            alice, bob, moderator = signed_in(app), signed_in(app), signed_in(app)
            with app.app_context():
                actions.set_role(find_user(moderator.username), "moderator")
                db.session.remove()
            slug = new_room(alice)
            post_ok(alice, slug, "before")
            cursor = history(alice, slug)["cursor"]

            trigger = proxy.when(f":room:{slug}:log".encode(), proxy.cut)
            muted = moderator.post(f"/api/rooms/{slug}/mutes", json={"username": bob.username, "minutes": 5})
            assert muted.status_code == 201 and trigger.fired.wait(5)
            proxy.restore()
            assert send(bob, slug, "muted?", unique("c")).status_code == 403, "the mute is in force"
            assert published_after(alice, slug, cursor) == []
            assert relay_now(app) == 1
            [event] = published_after(alice, slug, cursor)
            assert (event["event"], event["data"]) == ("user_muted", {k: v for k, v in muted.json.items()
                                                                     if k != "reason"})

            with app.app_context():  # the mute runs out; the sweep's publish is refused
                Mute.query.filter_by(room_id=find_room(slug).id).update({"until": utcnow()})
                db.session.commit()
                trigger = proxy.when(f":room:{slug}:log".encode(), proxy.cut)
                assert actions.expire_mutes() == 1
                assert trigger.fired.wait(5)
                proxy.restore()
                assert actions.expire_mutes() == 0, "claimed once, whatever Redis did"
                db.session.remove()
            later = post_ok(alice, slug, "the next event publishes what is missing first")
            kinds = [(event["event"], event["data"].get("by", "-")) for event in published_after(alice, slug, cursor)]
            assert kinds == [("user_muted", moderator.username), ("user_unmuted", None), ("message", "-")]
            assert published_after(alice, slug, cursor)[-1]["data"] == later
            assert relay_now(app) == 0
    finally:
        proxy.close()


def moderators_feed_after(moderator: AuthActions, cursor: str) -> list[dict]:
    """Every durable event the moderators' poll gives from `cursor`, page after page."""
    found = []
    while True:
        page = moderator.get("/api/moderation/poll", query_string={"cursor": cursor, "timeout": 0}).json
        found += page["events"]
        if not page["events"]:
            return found
        cursor = page["cursor"]


@pytest.mark.parametrize("lost", ["request", "reply"])
def test_a_ban_whose_publish_redis_failed_reaches_the_moderators_feed_once(services, private_redis, lost):
    """A ban whose event Redis never got (or took, its reply lost): the ban is in force at once, and its
    `user_banned` reaches the moderators' feed exactly once, from the relay; an unban likewise."""
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{proxy.port}/0") as app:
            bob, moderator = signed_in(app), signed_in(app)
            with app.app_context():
                actions.set_role(find_user(moderator.username), "moderator")
                db.session.remove()
            tail = moderator.get("/api/moderation/poll", query_string={"timeout": 0}).json["cursor"]

            trigger = proxy.when(b"user_banned", proxy.cut, at=lost)
            banned = moderator.post("/api/bans", json={"username": bob.username, "reason": "spam"})
            assert banned.status_code == 201 and trigger.fired.wait(5)
            proxy.restore()
            assert bob.get("/api/auth/me").status_code == 403, "the ban is in force"
            relay_now(app)
            trigger = proxy.when(b"user_unbanned", proxy.cut, at=lost)
            assert moderator.delete(f"/api/bans/{bob.username}").status_code == 204 and trigger.fired.wait(5)
            proxy.restore()
            relay_now(app)
            assert relay_now(app) == 0
            events = [(event["event"], event["data"]) for event in moderators_feed_after(moderator, tail)]
            assert events == [("user_banned", banned.json),
                              ("user_unbanned", {"username": bob.username, "by": moderator.username})]
    finally:
        proxy.close()


# 2. Redis comes back empty

def poll(user: AuthActions, slug: str, cursor: str) -> dict:
    response = user.get(f"/api/rooms/{slug}/poll", query_string={"cursor": cursor, "timeout": 0})
    assert response.status_code == 200, response.json
    return response.json


def test_redis_back_empty_ids_go_on_increasing_and_deleted_text_stays_deleted(services, private_redis):
    secret, other_secret = "this text was deleted", "this one too, after the restart"
    with running_app(services, private_redis.url) as app:
        alice = signed_in(app)
        slug, quiet = new_room(alice), new_room(alice)
        first, doomed, third = (post_ok(alice, slug, body) for body in ("first", secret, "third"))
        deleted = alice.delete(f"/api/rooms/{slug}/messages/{doomed['id']}")
        assert deleted.status_code == 200 and deleted.json["message"]["deleted"] is True
        before = history(alice, slug)
        highest = max(eid(before["cursor"]), *(eid(m["id"]) for m in (first, doomed, third)))
        q_first, q_second = post_ok(alice, quiet, other_secret), post_ok(alice, quiet, "stays")

        private_redis.stop(keep_data=False)  # a crash: streams, tombstones and write keys are gone
        private_redis.start()

        # From the database alone: every acknowledged message, the deleted one still deleted.
        after = history(alice, slug)
        assert [m["id"] for m in after["messages"]] == [first["id"], doomed["id"], third["id"]]
        assert after["messages"][1]["deleted"] is True and after["messages"][1]["body"] == ""
        assert eid(after["cursor"]) >= highest, "the cursor never goes backwards"

        fourth = post_ok(alice, slug, "fourth")
        assert eid(fourth["id"]) > highest, "the next id is greater than every id acknowledged before"

        # An old message only the database holds can still be deleted; ids go on increasing.
        gone = alice.delete(f"/api/rooms/{slug}/messages/{first['id']}")
        assert gone.status_code == 200 and gone.json["message"]["deleted"] is True
        fifth = post_ok(alice, slug, "fifth")
        assert eid(fifth["id"]) > eid(fourth["id"])

        page = history(alice, slug)
        shown = page["messages"]
        assert [m["id"] for m in shown] == [first["id"], doomed["id"], third["id"], fourth["id"], fifth["id"]]
        assert_in_order(shown)
        assert [m["body"] for m in shown] == ["", "", "third", "fourth", "fifth"]
        assert [m["deleted"] for m in shown] == [True, True, False, False, False]
        assert eid(page["cursor"]) >= eid(fifth["id"])
        assert secret not in json.dumps(page)

        # Paging back across the seam between the new stream and the database.
        older = history(alice, slug, before=fourth["id"], limit=2)
        assert [m["id"] for m in older["messages"]] == [doomed["id"], third["id"]] and older["has_more"] is True
        assert secret not in json.dumps(older)

        # Resuming from before the restart replays every durable event once, in order (the old
        # ones rebuilt from the database), and the deleted text is not among them.
        replay = poll(alice, slug, first["id"])
        ids = [eid(event["id"]) for event in replay["events"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert [e["data"]["id"] for e in replay["events"] if e["event"] == "message"] == \
            [doomed["id"], third["id"], fourth["id"], fifth["id"]]
        assert [e["data"]["id"] for e in replay["events"] if e["event"] == "message_deleted"] == \
            [doomed["id"], first["id"]]
        assert secret not in json.dumps(replay)

        # A room whose first event after the restart is a deletion: it too continues after the database.
        q_gone = alice.delete(f"/api/rooms/{quiet}/messages/{q_first['id']}")
        assert q_gone.status_code == 200 and q_gone.json["message"]["body"] == ""
        q_page = history(alice, quiet)
        assert eid(q_page["cursor"]) > eid(q_second["id"])
        q_third = post_ok(alice, quiet, "after the deletion")
        assert eid(q_third["id"]) > eid(q_page["cursor"])
        q_page = history(alice, quiet)
        assert [m["id"] for m in q_page["messages"]] == [q_first["id"], q_second["id"], q_third["id"]]
        assert other_secret not in json.dumps(q_page)
        assert other_secret not in json.dumps(poll(alice, quiet, "0-0"))


# Redis comes back older: failover to a lagging replica, or a restart from an older snapshot

def durable_after(user, path: str, cursor: str, **params) -> list[dict]:
    """What a poller resuming from `cursor` on `path` is given, page after page (a reset ends it)."""
    found = []
    while True:
        # While the restarted Redis is being checked the answer is 503 + Retry-After: a client asks again.
        answer = wait_until(lambda: (lambda got: got if got.status_code != 503 else None)(
            user.get(path, params={"cursor": cursor, "timeout": 0, **params})), what="an answer other than 503")
        page = answer.json()
        found += page["events"]
        if not page["events"] or page["events"][-1]["event"] == "reset":
            return found
        cursor = page["cursor"]


def test_redis_back_from_an_older_snapshot(services, tmp_path, private_redis):
    """A snapshot is taken, more is acknowledged, and Redis restarts from that snapshot: history still
    shows every acknowledged message; room streams and polls resume exactly from anywhere, before the
    snapshot or inside what Redis lost; the feeds, whose positions Redis handed out, answer `reset`
    first; new ids are above every id acknowledged before."""
    server = LiveServer(services, workers=1, REDIS_URL=private_redis.url, CHAT_REDIS_PREFIX=unique("older"),
                        **UNLIMITED_POSTING,
                        PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")
    server.start()
    alice = server.user()
    try:
        moderator = server.user()
        with running_app(services, private_redis.url) as app, app.app_context():
            actions.set_role(find_user(moderator.user["username"]), "moderator")
            db.session.remove()
        slug, other = alice.create_room(), alice.create_room()
        sent = [alice.send(slug, f"early {n}").json()["message"] for n in range(10)]
        feeds = {"/api/poll": {"rooms": f"{slug},{other}"}, "/api/moderation/poll": {}}
        early_positions = {path: alice.get(path, params={"timeout": 0, **params}).json()["cursor"] if path == "/api/poll"
                           else moderator.get(path, params={"timeout": 0}).json()["cursor"]
                           for path, params in feeds.items()}
        assert private_redis.client().save()
        snapshot = tmp_path / "snapshot.rdb"
        snapshot.write_bytes(private_redis.dump.read_bytes())
        sent += [alice.send(slug, f"late {n}").json()["message"] for n in range(20)]
        elsewhere = alice.send(other, "in the other room").json()["message"]
        inside_lost = sent[20]["id"]

        private_redis.stop(keep_data=False)  # down, then up again from the older file
        private_redis.dump.write_bytes(snapshot.read_bytes())
        private_redis.start()

        assert alice.get(f"/api/rooms/{slug}/messages", params={"limit": 200}).json()["messages"] == sent
        for start, expected in (("0-0", sent), (sent[4]["id"], sent[5:]), (inside_lost, sent[21:])):
            polled = durable_after(alice, f"/api/rooms/{slug}/poll", start)
            assert [event["data"] for event in polled] == expected
            stream = alice.events(f"/api/rooms/{slug}/events", last_event_id=start)
            try:
                assert [stream.next_durable().json() for _ in expected] == expected
            finally:
                stream.close()
        assert [e["data"] for e in durable_after(alice, f"/api/rooms/{other}/poll", "0-0")] == [elsewhere]

        for path, params in feeds.items():
            user = alice if path == "/api/poll" else moderator
            for position in (early_positions[path],):
                answer = durable_after(user, path, position, **params)
                assert [event["event"] for event in answer] == ["reset"], (path, answer)
        stream = alice.events("/api/events", last_event_id=early_positions["/api/poll"],
                              params={"rooms": f"{slug},{other}"})
        try:
            assert stream.wait_for(lambda event: event.event in ("reset", "message")).event == "reset"
        finally:
            stream.close()

        later = alice.send(slug, "after the restart")
        assert later.status_code == 201
        later = later.json()["message"]
        assert eid(later["id"]) > max(eid(message["id"]) for message in sent)
        assert [e["data"] for e in durable_after(alice, f"/api/rooms/{slug}/poll", inside_lost)] == sent[21:] + [later]
        fresh = alice.get("/api/poll", params={"timeout": 0, **feeds["/api/poll"]}).json()["cursor"]
        newest = alice.send(other, "after, elsewhere").json()["message"]
        assert [e["data"] for e in durable_after(alice, "/api/poll", fresh, **feeds["/api/poll"])] == [newest]
    finally:
        alice.http.close()
        server.stop()


# 3. The database cut

class DatabaseFault:
    """Make the database unable to take a write: PostgreSQL through a proxy that is cut (every
    connection reset, new ones refused); SQLite by another connection holding the write lock."""

    def __init__(self, backend: str, uri: str, proxy: TcpProxy | None = None, sqlite_file: str | None = None):
        self.backend, self.uri, self.proxy = backend, uri, proxy
        self.lock = SqliteWriteLock(sqlite_file) if sqlite_file else None
        self.broken = False

    @property
    def limit(self) -> float:
        return FAST_503_SECONDS if self.backend == "postgresql" else SQLITE_BUSY_SECONDS + FAST_503_SECONDS

    def break_(self) -> None:
        if self.proxy:
            self.proxy.cut()
        else:
            self.lock.acquire()
        self.broken = True

    def heal(self) -> None:
        if self.proxy:
            self.proxy.restore()
        else:
            self.lock.release()
        self.broken = False


@pytest.fixture(scope="module")
def own_database(services, tmp_path_factory):
    """A database of this module's own, on the run's backend: a fresh PostgreSQL database on the
    machine's server, or a fresh SQLite file."""
    if sqlite_path(services["database_url"]) is None:
        with fresh_postgres_database(services["database_url"], services["instance"]) as url:
            yield "postgresql", url
    else:
        path = tmp_path_factory.mktemp("faults-db") / "chat.sqlite3"
        run_migrations(f"sqlite:///{path}", services["instance"])
        yield "sqlite", f"sqlite:///{path}"


@pytest.fixture
def database_fault(own_database):
    backend, url = own_database
    if backend == "postgresql":
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
        fault = DatabaseFault(backend, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
                              proxy=proxy)
    else:
        fault = DatabaseFault(backend, url, sqlite_file=sqlite_path(url))
    yield fault
    if fault.broken:
        fault.heal()
    if fault.proxy:
        fault.proxy.close()


# When the database is cut. Every backend: before the request; at the insert (just after the rate-limit
# check in Redis). PostgreSQL also: the commit ran but its reply was lost, so the app cannot know it did
# (SQLite, in the app's process, has no such moment). A post on PostgreSQL commits in the statement that
# inserts it (writer.py: a statement on its own commits itself). The backend is the `services` fixture's:
# PostgreSQL when DATABASE_URL is set (conftest.py).
MOMENTS = ["before_request", "at_insert"]
if os.environ.get("DATABASE_URL"):
    MOMENTS += ["commit_reply_lost"]


@pytest.mark.parametrize("moment", MOMENTS)
def test_database_cut_answers_503_and_the_retry_yields_one_message(services, private_redis, database_fault, moment):
    """The moment is exact: the test's Redis proxy breaks the database when the app's rate-limit check
    (just before the insert) passes through it."""
    redis_proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{redis_proxy.port}/0", database_fault.uri) as app:
            alice = signed_in(app)
            slug = new_room(alice)
            acked = [post_ok(alice, slug, "before the cut")]
            cursor = history(alice, slug)["cursor"]
            client_id = unique("c-db")  # this module's database is shared by its tests
            before_insert = f"u{alice.user['id']}}}:rate:post:".encode()  # what the app sends Redis just before
            triggers = []  # the faults armed, to await (each fires on a proxy's thread)

            def cut_at_the_commit_reply():
                # The statement's text goes on the wire until psycopg prepares it (its fifth run): the
                # app made one post before.
                triggers.append(database_fault.proxy.when(b"INSERT INTO messages", database_fault.break_, at="reply"))

            if moment == "commit_reply_lost":
                assert database_fault.backend == "postgresql", "MOMENTS and the services fixture disagree"
            if moment == "before_request":
                database_fault.break_()
            elif moment == "at_insert":
                triggers.append(redis_proxy.when(before_insert, database_fault.break_))
            else:
                triggers.append(redis_proxy.when(before_insert, cut_at_the_commit_reply))

            started = time.monotonic()
            elapsed = assert_unavailable(send(alice, slug, "while the database is cut", client_id), started,
                                         database_fault.limit)
            print(f"\n{database_fault.backend} {moment}: 503 after {elapsed:.3f} s")
            for trigger in triggers:  # a trigger's action may arm the next: the list grows as they fire
                assert trigger.fired.wait(5) and trigger.error is None
            assert len(triggers) == {"before_request": 0, "commit_reply_lost": 2}.get(moment, 1)
            assert database_fault.broken
            database_fault.heal()

            # The fault struck where meant: what the record holds now (a look inside, not what users see).
            with app.app_context():
                recorded = Message.query.filter_by(client_id=client_id).one_or_none() is not None
                db.session.remove()
            assert recorded == (moment == "commit_reply_lost")

            shown = history(alice, slug)["messages"]
            expect_id = None
            if recorded:
                # Committed, though the app could not know: the record shows it, and the retry answers with
                # it (200) and publishes it, instead of recording a second.
                [entry] = with_client_id(shown, client_id)
                expect_id = entry["id"]
            else:
                assert shown == acked, "nothing of the refused post is visible"
            message = assert_retry_yields_one(alice, slug, "while the database is cut", client_id, acked, expect_id,
                                              (200,) if recorded else (201,))
            assert [event["data"] for event in published_after(alice, slug, cursor)] == [message]
    finally:
        redis_proxy.close()


# 4. SIGKILL between the commit and the publish

@pytest.fixture(scope="module")
def recovery_server(services, tmp_path_factory):
    """A normal gunicorn (no failpoints) on the same services, serving what the crashed one could not."""
    server = LiveServer(services, workers=1, PROMETHEUS_MULTIPROC_DIR=tmp_path_factory.mktemp("metrics"))
    server.start()
    yield server
    server.stop()


def stream_messages(services, slug: str) -> list:
    """The message entries the room's Redis stream holds, read through the project's Streams."""
    client = redis.Redis.from_url(services["redis_url"], decode_responses=True)
    try:
        _, entries = Streams(client, services["prefix"], 10000).read_after(slug, ZERO, 1000)
    finally:
        client.close()
    return [entry for entry in entries if entry.type == "message"]


def test_worker_killed_between_the_commit_and_the_publish(services, tmp_path, recovery_server):
    """A gunicorn worker SIGKILLed right after the commit: the connection drops, yet the message is
    recorded (history shows it), the relay of the servers still running publishes it within seconds,
    and a retry with the same client_id answers with that one message."""
    alice = recovery_server.user()
    try:
        check_crash_and_retry(services, tmp_path, recovery_server, alice)
    finally:
        alice.http.close()  # no keep-alive connection left to hold up the server's graceful stop


def check_crash_and_retry(services, tmp_path, recovery_server, alice):
    slug = alice.create_room()
    acked = alice.send(slug, "acknowledged before the crash")
    assert acked.status_code == 201
    acked = acked.json()["message"]
    cursor = alice.get(f"/api/rooms/{slug}/messages").json()["cursor"]
    assert cursor == acked["id"]

    crashing = LiveServer(services, workers=1, CHAT_FAILPOINTS="after_commit=kill",
                          PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")
    crashing.start()
    try:
        alice.base_url = crashing.url  # the same browser (same session cookie), on the doomed server
        with pytest.raises(requests.ConnectionError):  # the worker dies mid-request: the connection drops
            alice.send(slug, "lost in the crash?", client_id="c-crash")
    finally:
        crashing.stop()
        alice.base_url = recovery_server.url

    [message] = [m for m in alice.get(f"/api/rooms/{slug}/messages").json()["messages"] if m["id"] != acked["id"]]
    assert message["body"] == "lost in the crash?" and message["client_id"] == "c-crash"
    assert eid(message["id"]) > eid(acked["id"])
    # A poller waiting from the cursor gets it when the relay publishes it (about a second later).
    polled = alice.get(f"/api/rooms/{slug}/poll", params={"cursor": cursor, "timeout": 10}).json()
    assert [(event["event"], event["data"]) for event in polled["events"]] == [("message", message)]

    retry = alice.send(slug, "lost in the crash?", client_id="c-crash")
    assert retry.status_code == 200 and retry.json()["message"] == message
    assert [str(entry.id) for entry in stream_messages(services, slug)] == [acked["id"], message["id"]], \
        "never a second entry"
    later = alice.send(slug, "after the recovery")
    assert later.status_code == 201 and eid(later.json()["message"]["id"]) > eid(message["id"])
    assert alice.get(f"/api/rooms/{slug}/messages").json()["messages"] == [acked, message, later.json()["message"]]


# 5. Another process holding SQLite's write lock

def test_a_post_waiting_for_sqlites_write_lock_leaves_its_worker_answering(services, tmp_path):
    """While another process holds SQLite's write lock (the other worker, a migration), a post waits for
    it without stopping its worker: the worker's other requests are answered meanwhile, and the post is
    recorded once the lock is free. (SQLite's own busy wait sleeps in C, which stopped every stream and
    poll of the worker for as long as it waited.) Its own SQLite file, whatever the run's database."""
    path = tmp_path / "chat.sqlite3"
    run_migrations(f"sqlite:///{path}", services["instance"])
    server = LiveServer(services, workers=1, DATABASE_URL=f"sqlite:///{path}",
                        PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")
    server.start()
    lock, alice = SqliteWriteLock(str(path)), None
    try:
        alice = server.user()
        slug = alice.create_room()
        lock.acquire()
        with ThreadPoolExecutor(1) as pool:
            posting = pool.submit(alice.send, slug, "waits for the lock")
            slowest, held_until = 0.0, time.monotonic() + 1.0
            while time.monotonic() < held_until:
                started = time.monotonic()
                assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
            assert not posting.done(), "the post waits for the lock"
            lock.release()
            assert posting.result(timeout=10).status_code == 201
        assert slowest < 0.3, f"the worker stopped for {slowest:.2f} s while the post waited"
        assert [m["body"] for m in alice.get(f"/api/rooms/{slug}/messages").json()["messages"]] == ["waits for the lock"]
    finally:
        lock.release()
        if alice is not None:
            alice.http.close()
        server.stop()
