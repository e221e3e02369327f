"""Exact resume (API.md: "Resume is exact"): from history's cursor, from past Redis's retention, after Redis
lost a room's stream, and under load while subscribers drop and come back, on one instance and across two."""
import functools
import random
import threading
import time

import pytest
import redis
import requests

from chat.streams import Streams
from tests.faults import PrivateRedis
from tests.support import (LiveServer, event_key, events_path, history_ids, live_moderator, poll_path, posted,
                           same_session, unique, wait_until, UNLIMITED_POSTING)

# Redis keeps about 10 entries per room (trimmed a whole node, ~100 entries, at a time): resumes from
# further back are served from the database. Posting is not what is under test: no rate limit.
SETTINGS = {"CHAT_STREAM_MAXLEN": 10, **UNLIMITED_POSTING}


@pytest.fixture(scope="module")
def first_server(services):
    server = LiveServer(services, workers=2, **SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second_server(services, first_server):
    """Another instance sharing the run's Redis and database."""
    server = LiveServer(services, workers=2, **SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def room_streams(services):
    """The run's keys through the app's own key builders (only this run's prefix is touched)."""
    client = redis.Redis.from_url(services["redis_url"], decode_responses=True)
    yield Streams(client, services["prefix"], SETTINGS["CHAT_STREAM_MAXLEN"])
    client.close()


def sse_from(user, slug, position, until_count, timeout=20):
    """Durable events after `position` by SSE (resetting if the server says so), up to `until_count`."""
    stream = user.events(events_path(slug), last_event_id=position)
    try:
        assert stream.status == 200, stream.response.text
        ready = stream.next(timeout=5)
        assert ready.event == "ready"
        got = []
        while len(got) < until_count:
            event = stream.wait_for(lambda e: e.id is not None or e.event == "reset", timeout=timeout)
            got.append(event)
            if event.event == "reset":
                break
        return got
    finally:
        stream.close()


def poll_from(user, slug, position, until_count, timeout=2):
    """Durable events after `position` by long-polling, page after page."""
    got = []
    while len(got) < until_count:
        body = user.get(poll_path(slug), params={"cursor": position, "timeout": timeout}).json()
        got += body["events"]
        if any(event["event"] == "reset" for event in body["events"]):
            break
        assert body["events"] or body["cursor"] == position
        position = body["cursor"]
    return got


def test_history_cursor_then_subscribe_no_gap_no_repeat_while_others_post(first_server):
    reader = first_server.user()
    posters = [first_server.user() for _ in range(3)]
    slug = reader.create_room()
    # A Redis not checked against the database yet is checked by the first process that needs it, and streams
    # opened meanwhile are told to come back (503): that is another test's subject, so it happens before this one.
    wait_until(lambda: reader.get(poll_path(slug), params={"timeout": 0}).status_code == 200,
               what="the server's Redis checked")

    def post_many(poster):
        for n in range(30):
            posted(poster, slug, f"{poster.user['username']} {n}")

    threads = [threading.Thread(target=post_many, args=(poster,)) for poster in posters]
    for thread in threads:
        thread.start()
    # Snapshots taken while the posters run: history, then a stream and a poller from its cursor.
    snapshots = []
    while any(thread.is_alive() for thread in threads) and len(snapshots) < 6:
        page = reader.get(f"/api/rooms/{slug}/messages", params={"limit": 200}).json()
        assert not page["has_more"]
        if snapshots and len(page["messages"]) <= len(snapshots[-1][0]):
            continue  # one snapshot per state
        stream = reader.events(events_path(slug), last_event_id=page["cursor"])
        assert stream.status == 200
        snapshots.append(([message["id"] for message in page["messages"]], page["cursor"], stream))
    for thread in threads:
        thread.join(60)
    everything = history_ids(reader, slug)
    assert len(everything) == 90 and len(set(everything)) == 90
    assert len(snapshots) >= 2
    try:
        for seen, cursor, stream in snapshots:
            assert stream.next(timeout=5).json()["cursor"] == cursor
            missing = len(everything) - len(seen)
            live = [stream.next_durable(timeout=20).id for _ in range(missing)]  # CI machines are busy
            assert seen + live == everything
            polled = [event["id"] for event in poll_from(reader, slug, cursor, missing)]
            assert seen + polled == everything
    finally:
        for _, _, stream in snapshots:
            stream.close()


def test_resume_from_before_what_redis_retains_is_served_from_the_database(first_server, room_streams):
    author, target = first_server.user(), first_server.user()
    moderator = live_moderator(first_server)
    slug = author.create_room()
    start = author.get(f"/api/rooms/{slug}/messages").json()["cursor"]
    oldest = posted(author, slug, "soon deleted")
    muted = moderator.post(f"/api/rooms/{slug}/mutes", json={"username": target.user["username"], "minutes": 5})
    assert muted.status_code == 201
    assert moderator.delete(f"/api/rooms/{slug}/mutes/{target.user['username']}").status_code == 204
    second = posted(author, slug)
    for _ in range(400):  # until Redis no longer holds `second`
        posted(author, slug)
        retained = room_streams.redis.xrange(room_streams.room_stream_key(slug), count=1)
        if event_key(retained[0][0]) > event_key(second["id"]):
            break
    else:
        pytest.fail("Redis never trimmed the room's stream")
    assert author.delete(f"/api/rooms/{slug}/messages/{oldest['id']}").status_code == 200
    messages = history_ids(author, slug)
    assert messages[:2] == [oldest["id"], second["id"]]

    for name, got in (("sse", sse_from(author, slug, start, len(messages) + 3)),
                      ("poll", poll_from(author, slug, start, len(messages) + 3))):
        events = [(e.event, e.id, e.json()) for e in got] if name == "sse" else \
                 [(e["event"], e["id"], e["data"]) for e in got]
        kinds = [kind for kind, _, _ in events]
        assert "reset" not in kinds, name
        assert kinds == ["message", "user_muted", "user_unmuted"] + ["message"] * (len(messages) - 1) + \
            ["message_deleted"], name
        ids = [event_id for _, event_id, _ in events]
        assert [ids[0]] + ids[3:-1] == messages, name
        assert ids == sorted(ids, key=event_key) and len(set(ids)) == len(ids), name
        # Replays never resurrect deleted text.
        assert events[0][2]["deleted"] is True and events[0][2]["body"] == "", name
        assert events[1][2] == {"room": slug, "username": target.user["username"], "until": muted.json()["until"],
                                "by": moderator.user["username"]}, name
        assert events[2][2]["until"] is None, name
        assert events[-1][2] == {"id": oldest["id"], "room": slug, "deleted_by": author.user["username"]}, name


def test_after_redis_lost_the_rooms_stream_resume_never_silently_skips(first_server, room_streams):
    user = first_server.user()
    slug = user.create_room()
    messages = [posted(user, slug) for _ in range(5)]
    ids = [message["id"] for message in messages]
    room_streams.redis.delete(room_streams.room_stream_key(slug))

    def check(got, expected, name):
        kinds = [event.event if hasattr(event, "event") else event["event"] for event in got]
        if "reset" in kinds:  # the client reloads history: allowed, never a silent gap
            assert kinds.index("reset") == 0, name
            return
        got_ids = [event.id if hasattr(event, "event") else event["id"] for event in got]
        assert got_ids == expected, name

    check(sse_from(user, slug, ids[1], 3), ids[2:], "sse, stream lost")
    check(poll_from(user, slug, ids[1], 3), ids[2:], "poll, stream lost")
    # A resume from the newest known id has nothing to replay, and then hears what comes next.
    stream = user.events(events_path(slug), last_event_id=ids[-1])
    try:
        assert stream.next(timeout=5).event == "ready"
        newer = posted(user, slug)
        assert event_key(newer["id"]) > event_key(ids[-1]), "ids went backwards after Redis lost the stream"
        assert stream.next_durable().id == newer["id"]
    finally:
        stream.close()
    ids.append(newer["id"])
    # The stream now holds only the newer message: the older ones come from the database.
    check(sse_from(user, slug, ids[1], 4), ids[2:], "sse, stream rebuilt")
    check(poll_from(user, slug, ids[1], 4), ids[2:], "poll, stream rebuilt")
    assert history_ids(user, slug) == ids


def test_a_position_the_server_never_handed_out_gets_reset(first_server):
    user = first_server.user()
    slug = user.create_room()
    known = posted(user, slug)
    future = f"{event_key(known['id'])[0] + 10**9}-0"
    got = sse_from(user, slug, future, 1)
    assert [(event.event, event.id) for event in got] == [("reset", None)]
    assert "reason" in got[0].json()
    body = user.get(poll_path(slug), params={"cursor": future, "timeout": 0}).json()
    assert body["events"] == [{"id": None, "event": "reset", "data": body["events"][0]["data"]}]
    assert "reason" in body["events"][0]["data"]
    # After a reset the stream continues live.
    stream = user.events(events_path(slug), last_event_id=future)
    try:
        stream.wait_for(lambda event: event.event == "reset", timeout=5)
        newer = posted(user, slug)
        assert stream.next_durable().id == newer["id"]
    finally:
        stream.close()


def test_extreme_but_well_formed_positions_are_served_not_a_server_error(first_server):
    user = first_server.user()
    slug = user.create_room()
    message = posted(user, slug)
    for position in ("1-18446744073709551615", "0-9223372036854775808", "0-0"):
        got = sse_from(user, slug, position, 1)
        assert [event.id for event in got] == [message["id"]], position
        body = user.get(poll_path(slug), params={"cursor": position, "timeout": 0})
        assert body.status_code == 200, (position, body.text)
        assert [event["id"] for event in body.json()["events"]] == [message["id"]], position


# The torture test: concurrent posters, subscribers that keep dropping and resuming.

POSTERS, PER_POSTER = 5, 100


def _torture(servers, subscribe, post=posted, chaos=None, room_name=None):
    """Five posters send 100 messages each (spread over the servers) while `subscribe` follows the room
    (named `room_name`, if given) from its start, reconnecting over and over; it must end up with exactly
    the history, in order. `chaos(received)`, run beside them, may break things meanwhile."""
    owner = servers[0].user()
    slug = owner.create_room(room_name)
    start = owner.get(f"/api/rooms/{slug}/messages").json()["cursor"]
    posters = [servers[index % len(servers)].user() for index in range(POSTERS)]
    failures = []

    def post_all(poster):
        try:
            for n in range(PER_POSTER):
                post(poster, slug, f"{poster.user['username']} {n}")
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)

    received, subscriber_errors = [], []
    follower = threading.Thread(target=lambda: _guard(subscribe, subscriber_errors, servers, owner, slug, start,
                                                      received), daemon=True)
    follower.start()
    threads = [threading.Thread(target=post_all, args=(poster,), daemon=True) for poster in posters]
    if chaos is not None:
        threads.append(threading.Thread(target=lambda: _guard(chaos, failures, received), daemon=True))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not failures and not subscriber_errors, (failures, subscriber_errors)
    follower.join(max(1, 90 - (time.monotonic() - started)))
    assert not follower.is_alive(), f"the subscriber got {len(received)} of {POSTERS * PER_POSTER} in time"
    assert not subscriber_errors, subscriber_errors
    expected = history_ids(owner, slug)
    assert len(expected) == POSTERS * PER_POSTER
    assert len(received) == len(set(received)), "an event was delivered twice"
    assert received == expected
    # Nothing more after the last one.
    after = owner.get(poll_path(slug), params={"cursor": received[-1], "timeout": 0}).json()
    assert after["events"] == []
    return time.monotonic() - started


def _guard(subscribe, errors, *args):
    try:
        subscribe(*args)
    except Exception as error:  # noqa: BLE001 - reported by the test
        errors.append(error)


def _back_off(response) -> None:
    """What a client does when the server is unavailable (Redis restarting): wait as it asks, try again."""
    assert response.status_code == 503, response.text
    time.sleep(float(response.headers.get("Retry-After", 1)))


def follow_by_sse(servers, owner, slug, start, received, through_outages=False):
    """Reconnect after 1-40 events, from the last id; `through_outages`: also when the server refuses (503)
    or ends the stream (it does when Redis restarts), as EventSource does."""
    rng = random.Random(slug)
    position, connection, total = start, 0, POSTERS * PER_POSTER
    deadline = time.monotonic() + 80
    while len(received) < total and time.monotonic() < deadline:
        user = same_session(owner, servers[connection % len(servers)])
        connection += 1
        stream = user.events(events_path(slug), last_event_id=position)
        try:
            if through_outages and stream.status != 200:
                _back_off(stream.response)
                continue
            assert stream.status == 200, stream.response.text
            assert stream.next(timeout=5).event == "ready"
            for _ in range(rng.randint(1, 40)):
                if len(received) >= total or (through_outages and stream.closed.is_set() and stream.queue.empty()):
                    break
                event = stream.wait_for(lambda e: e.id is not None or e.event == "reset", timeout=15)
                assert event.event == "message", \
                    f"{event.event} {event.data} after {len(received)} events (the last {position}) on {user.base_url}"
                received.append(event.id)
                position = event.id
        except AssertionError as error:
            if not (through_outages and "the stream ended" in str(error)):
                raise
        finally:
            stream.close()


def follow_by_poll(servers, owner, slug, start, received, through_outages=False):
    rng = random.Random(slug)
    position, request, total = start, 0, POSTERS * PER_POSTER
    deadline = time.monotonic() + 80
    while len(received) < total and time.monotonic() < deadline:
        user = same_session(owner, servers[request % len(servers)])
        request += 1
        if rng.random() < 0.2:
            # A client that gives up on its poll (a dropped connection): whatever that poll would
            # have answered must come again from the same cursor.
            try:
                user.get(poll_path(slug), params={"cursor": position, "timeout": 5}, timeout=0.2)
            except (requests.exceptions.ReadTimeout, requests.ConnectionError):
                pass
            continue
        try:
            response = user.get(poll_path(slug), params={"cursor": position, "timeout": 5})
        except requests.ConnectionError:
            if not through_outages:
                raise
            continue
        if through_outages and response.status_code != 200:
            _back_off(response)
            continue
        body = response.json()
        for event in body["events"]:
            assert event["event"] == "message", f"{event['event']} {event['data']} after {len(received)} events"
            received.append(event["id"])
        position = body["cursor"]


def posted_through_outages(user, slug: str, body: str) -> dict:
    """Post as the page does: a 503 or a dropped connection is posted again with the same client_id after
    Retry-After, until the server answers."""
    client_id = unique("c")
    deadline = time.monotonic() + 60
    while True:
        try:
            response = user.send(slug, body, client_id=client_id)
        except requests.ConnectionError:
            continue
        if response.status_code in (200, 201):
            return response.json()["message"]
        assert time.monotonic() < deadline, "nothing but 503 for a minute"
        _back_off(response)


@pytest.fixture
def server_on_private_redis(services, tmp_path):
    redis_server = PrivateRedis(tmp_path / "redis")
    redis_server.start()
    server = LiveServer(services, workers=2, REDIS_URL=redis_server.url, CHAT_REDIS_PREFIX=unique("chaos"),
                        PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics", **SETTINGS)
    server.start()
    yield server, redis_server
    server.stop()
    redis_server.close()


@pytest.mark.parametrize("subscribe", [follow_by_sse, follow_by_poll], ids=["sse", "poll"])
def test_torture_while_redis_restarts_empty_and_then_older(server_on_private_redis, tmp_path, subscribe):
    """The 5 x 100 torture while Redis restarts twice: once empty, once from a snapshot older than what
    was acknowledged since. Posters retry 503s as the page does; the follower reconnects from its last
    id; it must still get every message exactly once, in order, and never a reset (a room's ids are the
    record's, so its resume is always exact)."""
    server, redis_server = server_on_private_redis
    snapshot = tmp_path / "older.rdb"

    def chaos(received):
        wait_until(lambda: len(received) >= 100, 60, what="100 messages received")
        assert redis_server.client().save()
        snapshot.write_bytes(redis_server.dump.read_bytes())
        wait_until(lambda: len(received) >= 200, 60, what="200 messages received")
        redis_server.stop(keep_data=False)
        redis_server.start()
        wait_until(lambda: len(received) >= 300, 60, what="300 messages received")
        redis_server.stop(keep_data=False)
        redis_server.dump.write_bytes(snapshot.read_bytes())
        redis_server.start()

    elapsed = _torture([server], functools.partial(subscribe, through_outages=True), posted_through_outages, chaos)
    print(f"torture through two Redis restarts by {subscribe.__name__}: {elapsed:.1f} s")


@pytest.mark.parametrize("subscribe", [follow_by_sse, follow_by_poll], ids=["sse", "poll"])
def test_torture_on_one_instance(first_server, subscribe):
    elapsed = _torture([first_server], subscribe)
    print(f"torture on one instance by {subscribe.__name__}: {elapsed:.1f} s")


@pytest.mark.parametrize("subscribe", [follow_by_sse, follow_by_poll], ids=["sse", "poll"])
def test_torture_across_two_instances(first_server, second_server, subscribe):
    elapsed = _torture([first_server, second_server], subscribe)
    print(f"torture across two instances by {subscribe.__name__}: {elapsed:.1f} s")


def test_a_stream_further_behind_than_the_resume_bound_gets_reset(services):
    """CHAT_RESUME_MAX_EVENTS bounds what one resume holds in memory: from further back, `reset` (the client
    reloads history); within it, every event exactly."""
    server = LiveServer(services, workers=1, CHAT_RESUME_MAX_EVENTS=5, **UNLIMITED_POSTING)
    server.start()
    try:
        user = server.user()
        slug = user.create_room()
        sent = [posted(user, slug, f"m{n}") for n in range(7)]
        behind = sse_from(user, slug, "0-0", 7)
        assert [event.event for event in behind] == ["reset"]
        within = sse_from(user, slug, sent[1]["id"], 5)
        assert [event.json() for event in within] == sent[2:]
        # Polls page through (100 at a time), so the bound does not apply to them.
        assert [event["data"] for event in poll_from(user, slug, "0-0", 7, timeout=0)] == sent
    finally:
        server.stop()
