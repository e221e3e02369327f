"""The message write path under faults, against real services (never mocks).

The path (chat/actions.py): 1. commit the message as pending, 2. append it to the room's stream under
its write key, 3. commit the event id; only then 201. Whatever fails, the client gets 503 unavailable
with Retry-After and nothing it was told about is lost; a retry with the same client_id yields
exactly one message, and ids never go backwards.

Every fault here breaks only what the test owns: its private redis-server, its own TCP proxy, its
own PostgreSQL database or SQLite lock, its own gunicorn. The machine's shared Redis and PostgreSQL
are never stopped or cut: a test cuts only its own proxy in front of them.
"""
import contextlib
import json
import os
import time

import pytest
import redis
import requests

from chat import create_app
from chat.extensions import db
from chat.ids import ZERO, EventId
from chat.models import Message
from chat.streams import Streams
from tests.conftest import app_config
from tests.faults import PrivateRedis, SqliteWriteLock, TcpProxy, fresh_postgres_database, sqlite_path
from tests.support import AuthActions, LiveServer, run_migrations, unique

# Upper bounds on how long a 503 may take. A refused connection fails at once; SQLite waits for
# its busy timeout (5 s, chat/extensions.py) before it gives up on the write lock.
FAST_503_SECONDS = 3.0
SQLITE_BUSY_SECONDS = 5.0


# Helpers: what a user does and sees

def eid(text: str) -> EventId:
    return EventId.parse(text)


@contextlib.contextmanager
def running_app(services, redis_url: str, database_uri: str | None = None):
    """The app in this process, on the given Redis (and database), with a key prefix of its own."""
    overrides = {"REDIS_URL": redis_url, "CHAT_REDIS_PREFIX": unique("faults"), "CHAT_RATE_LIMIT": "1000/10"}
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

@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


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


@pytest.mark.parametrize("moment", ["request_lost", "reply_lost"])
def test_redis_lost_between_the_two_writes(services, private_redis, moment):
    """Redis goes away exactly at the append, after the pending row is committed: before the append
    reaches it, or after it ran but before its reply came back."""
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{proxy.port}/0") as app:
            alice = signed_in(app)
            slug = new_room(alice)
            acked = [post_ok(alice, slug, "before the cut")]  # also loads the scripts into Redis
            trigger = proxy.when(f"{{room:{slug}}}:write:".encode(), proxy.cut,
                                 at="request" if moment == "request_lost" else "reply")

            started = time.monotonic()
            assert_unavailable(send(alice, slug, "cut at the append", "c-cut"), started, FAST_503_SECONDS)
            assert trigger.fired.wait(5) and trigger.error is None
            proxy.restore()

            shown = history(alice, slug)["messages"]
            expect_id = None
            if moment == "request_lost":
                assert shown == acked, "the pending message stays invisible"
            else:
                # The entry is in the stream (the event happened) though the record is still pending:
                # it shows once, and the retry must complete that one, not append a second.
                [entry] = with_client_id(shown, "c-cut")
                expect_id = entry["id"]
            assert_retry_yields_one(alice, slug, "cut at the append", "c-cut", acked, expect_id)
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


# When the database is cut. Every backend: before the request; at the pending insert (step 1); at
# the ack (step 3, after the stream append). PostgreSQL also: the insert's or the ack's COMMIT ran
# but its reply was lost, so the app cannot know it did (SQLite, in the app's process, has no such
# moment). The backend is the `services` fixture's: PostgreSQL when DATABASE_URL is set (conftest.py).
MOMENTS = ["before_request", "at_pending_insert", "at_ack"]
if os.environ.get("DATABASE_URL"):
    MOMENTS += ["insert_reply_lost", "ack_reply_lost"]


@pytest.mark.parametrize("moment", MOMENTS)
def test_database_cut_answers_503_and_the_retry_yields_one_message(services, private_redis, database_fault, moment):
    """The moment is exact: the test's Redis proxy breaks the database when the app's rate-limit
    check (just before the insert) or its append (just before the ack) passes through it."""
    redis_proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    try:
        with running_app(services, f"redis://127.0.0.1:{redis_proxy.port}/0", database_fault.uri) as app:
            alice = signed_in(app)
            slug = new_room(alice)
            acked = [post_ok(alice, slug, "before the cut")]
            client_id = unique("c-db")  # this module's database is shared by its tests
            # What the app sends Redis just before the insert (the rate-limit check), and its append.
            before_insert, appended = f"rate:post:{alice.user['id']}:".encode(), f"{{room:{slug}}}:write:".encode()
            triggers = []  # the faults armed, to await (each fires on a proxy's thread)

            def cut_at_the_commit_reply():  # the first COMMIT after the Redis call is the insert's or the ack's
                triggers.append(database_fault.proxy.when(b"COMMIT", database_fault.break_, at="reply"))

            if moment.endswith("_reply_lost"):
                assert database_fault.backend == "postgresql", "MOMENTS and the services fixture disagree"
            if moment == "before_request":
                database_fault.break_()
            elif moment == "at_pending_insert":
                triggers.append(redis_proxy.when(before_insert, database_fault.break_))
            elif moment == "at_ack":
                triggers.append(redis_proxy.when(appended, database_fault.break_))
            elif moment == "insert_reply_lost":
                triggers.append(redis_proxy.when(before_insert, cut_at_the_commit_reply))
            else:
                triggers.append(redis_proxy.when(appended, cut_at_the_commit_reply))

            started = time.monotonic()
            elapsed = assert_unavailable(send(alice, slug, "while the database is cut", client_id), started,
                                         database_fault.limit)
            print(f"\n{database_fault.backend} {moment}: 503 after {elapsed:.3f} s")
            for trigger in triggers:  # a trigger's action may arm the next: the list grows as they fire
                assert trigger.fired.wait(5) and trigger.error is None
            assert len(triggers) == {"before_request": 0, "insert_reply_lost": 2, "ack_reply_lost": 2}.get(moment, 1)
            assert database_fault.broken
            database_fault.heal()

            # The fault struck where meant: what the record holds now (a look inside, not what users see).
            with app.app_context():
                record = Message.query.filter_by(client_id=client_id).one_or_none()
                state = None if record is None else "pending" if record.event_id is None else "acknowledged"
                db.session.remove()
            assert state == {"insert_reply_lost": "pending", "at_ack": "pending",
                             "ack_reply_lost": "acknowledged"}.get(moment), state

            shown = history(alice, slug)["messages"]
            expect_id = None
            if moment in ("at_ack", "ack_reply_lost"):
                # Appended (and, if the COMMIT's reply was lost, recorded): the event shows once,
                # and the retry answers with it instead of appending a second.
                [entry] = with_client_id(shown, client_id)
                expect_id = entry["id"]
            else:
                assert shown == acked, "nothing of the refused post is visible"
            # A lost COMMIT reply: the record holds the message already, so the retry finds it (200).
            expect_status = (200,) if moment == "ack_reply_lost" else (200, 201)
            assert_retry_yields_one(alice, slug, "while the database is cut", client_id, acked, expect_id,
                                    expect_status)
    finally:
        redis_proxy.close()


# 4. SIGKILL between the two writes

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


@pytest.mark.parametrize("failpoint", ["after_pending_insert", "after_stream_append"])
def test_worker_killed_between_the_writes(services, tmp_path, recovery_server, failpoint):
    """A gunicorn worker SIGKILLed after the pending insert (step 1) or after the stream append
    (step 2): the connection drops; a retry served by another process completes exactly one message."""
    alice = recovery_server.user()
    try:
        check_crash_and_retry(services, tmp_path, recovery_server, failpoint, alice)
    finally:
        alice.http.close()  # no keep-alive connection left to hold up the server's graceful stop


def check_crash_and_retry(services, tmp_path, recovery_server, failpoint, alice):
    slug = alice.create_room()
    acked = alice.send(slug, "acknowledged before the crash")
    assert acked.status_code == 201
    acked = acked.json()["message"]
    cursor = alice.get(f"/api/rooms/{slug}/messages").json()["cursor"]
    assert cursor == acked["id"]

    crashing = LiveServer(services, workers=1, CHAT_FAILPOINTS=f"{failpoint}=kill",
                          PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")
    crashing.start()
    try:
        alice.base_url = crashing.url  # the same browser (same session cookie), on the doomed server
        with pytest.raises(requests.ConnectionError):  # the worker dies mid-request: the connection drops
            alice.send(slug, "lost in the crash?", client_id="c-crash")
    finally:
        crashing.stop()
        alice.base_url = recovery_server.url

    shown = alice.get(f"/api/rooms/{slug}/messages").json()["messages"]
    in_stream = [entry for entry in stream_messages(services, slug) if str(entry.id) != acked["id"]]
    expect_id = None
    if failpoint == "after_pending_insert":
        assert shown == [acked] and in_stream == [], "a pending message is invisible until acknowledged"
        polled = alice.get(f"/api/rooms/{slug}/poll", params={"cursor": cursor, "timeout": 0}).json()
        assert polled["events"] == [] and polled["cursor"] == cursor
    else:
        [entry] = in_stream  # appended once before the crash; the record is still pending
        expect_id = str(entry.id)
        assert [m["id"] for m in shown] == [acked["id"], expect_id]

    retry = alice.send(slug, "lost in the crash?", client_id="c-crash")
    assert retry.status_code in (200, 201), retry.text
    message = retry.json()["message"]
    assert message["body"] == "lost in the crash?" and message["client_id"] == "c-crash"
    assert eid(message["id"]) > eid(acked["id"])
    if expect_id is not None:
        assert message["id"] == expect_id, "the retry returns the id the stream gave before the crash"

    assert alice.get(f"/api/rooms/{slug}/messages").json()["messages"] == [acked, message]
    assert [str(entry.id) for entry in stream_messages(services, slug)] == [acked["id"], message["id"]], \
        "never a second entry"
    polled = alice.get(f"/api/rooms/{slug}/poll", params={"cursor": cursor, "timeout": 0}).json()
    assert [(event["event"], event["id"]) for event in polled["events"]] == [("message", message["id"])]
    assert polled["events"][0]["data"]["client_id"] == "c-crash"

    again = alice.send(slug, "lost in the crash?", client_id="c-crash")
    assert again.status_code == 200 and again.json()["message"] == message
    later = alice.send(slug, "after the recovery")
    assert later.status_code == 201 and eid(later.json()["message"]["id"]) > eid(message["id"])
    assert alice.get(f"/api/rooms/{slug}/messages").json()["messages"] == [acked, message, later.json()["message"]]
