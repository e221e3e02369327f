"""Live events over Server-Sent Events (API.md, "Live events: Server-Sent Events"), against real gunicorn servers."""
import json
import socket
import threading
import time

import pytest
import requests

from tests.support import (TIME_FORMAT, UNLIMITED_POSTING, HttpUser, LiveServer, _Parser, event_key, events_path, live_moderator, posted,
                           unique)


@pytest.fixture(scope="module")
def quick(services):
    """One worker, a heartbeat a second, a short presence TTL and a retry of its own."""
    server = LiveServer(services, workers=1, CHAT_HEARTBEAT_SECONDS=1, CHAT_PRESENCE_TTL_SECONDS=3, CHAT_RETRY_MS=1500)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capped(services):
    """One worker that holds at most two streams, each for at most two seconds."""
    server = LiveServer(services, workers=1, CHAT_MAX_STREAMS_PER_PROCESS=2, CHAT_STREAM_MAX_SECONDS=2)
    server.start()
    yield server
    server.stop()


def assert_api_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code, response.json()


def durable(stream, count, timeout=10):
    return [stream.next_durable(timeout) for _ in range(count)]


# The response and its first chunk

def test_headers_and_first_chunk_arrive_at_once(live):
    user = live.user()
    slug = user.create_room()
    started = time.monotonic()
    stream = user.events(events_path(slug))
    try:
        assert stream.status == 200
        assert stream.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-cache, no-transform"
        assert stream.headers["X-Accel-Buffering"] == "no"

        ready = stream.next(timeout=3)
        # The heartbeat is 15 s here: an answer this fast is the first chunk, not something flushed later.
        assert time.monotonic() - started < 3
        assert ready.event == "ready" and ready.id is None

        first = _Parser()
        assert [event.event for event in first.feed(stream.first_chunk)] == ["ready"], "ready is in the first chunk"
        assert first.retry == 3000
        assert any(len(comment) >= 2048 for comment in first.comments), "2 KiB padding comment in the first chunk"

        data = ready.json()
        assert set(data) >= {"cursor", "time", "heartbeat"}
        event_key(data["cursor"])
        assert TIME_FORMAT.match(data["time"])
        assert data["heartbeat"] == 15
    finally:
        stream.close()


def test_retry_and_heartbeat_follow_the_settings(quick):
    user = quick.user()
    stream = user.events(events_path(user.create_room()))
    try:
        ready = stream.next(timeout=3)
        assert ready.event == "ready" and ready.retry == 1500
        assert ready.json()["heartbeat"] == 1
    finally:
        stream.close()


def test_ping_every_heartbeat_while_idle(quick):
    user = quick.user()
    stream = user.events(events_path(user.create_room()))
    try:
        stream.wait_for(lambda event: event.event == "ready", timeout=3)
        first = stream.wait_for(lambda event: event.event == "ping", timeout=3)
        first_at = time.monotonic()
        second = stream.wait_for(lambda event: event.event == "ping", timeout=3)
        gap = time.monotonic() - first_at
        assert 0.5 < gap < 2.5, gap
        for ping in (first, second):
            assert ping.id is None
            assert TIME_FORMAT.match(ping.json()["time"])
    finally:
        stream.close()


def test_durable_events_carry_an_id_and_ephemeral_ones_none(quick):
    user = quick.user()
    slug = user.create_room()
    stream = user.events(events_path(slug))
    try:
        ready = stream.next(timeout=3)
        presence = stream.next(timeout=3)
        message = posted(user, slug)
        delivered = stream.wait_for(lambda event: event.event == "message")
        ping = stream.wait_for(lambda event: event.event == "ping", timeout=3)
        assert (ready.event, presence.event) == ("ready", "presence")
        assert (ready.id, presence.id, ping.id) == (None, None, None)
        assert delivered.id == message["id"]
    finally:
        stream.close()


# Where a stream starts

def test_start_from_last_event_id_header_and_query_parameters(live):
    user = live.user()
    slug = user.create_room()
    first, second, third = (posted(user, slug) for _ in range(3))

    def starting(**kwargs):
        stream = user.events(events_path(slug), **kwargs)
        assert stream.status == 200
        return stream

    streams = {
        "header": (starting(last_event_id=first["id"]), first, [second, third]),
        "last_event_id": (starting(params={"last_event_id": second["id"]}), second, [third]),
        "lastEventId": (starting(params={"lastEventId": first["id"]}), first, [second, third]),
        # The header wins over the query parameter.
        "both": (starting(last_event_id=second["id"], params={"last_event_id": first["id"]}), second, [third]),
    }
    try:
        for name, (stream, start, expected) in streams.items():
            ready = stream.next(timeout=3)
            assert ready.event == "ready" and ready.json()["cursor"] == start["id"], name
            got = durable(stream, len(expected))
            assert [event.id for event in got] == [message["id"] for message in expected], name
            assert [event.json() for event in got] == expected, name
        fourth = posted(user, slug)
        for name, (stream, _, _) in streams.items():
            # Nothing repeated, nothing else in between: the next durable event is the new one.
            assert stream.next_durable().id == fourth["id"], name
    finally:
        for stream, _, _ in streams.values():
            stream.close()


def test_no_position_means_the_tail_only(live):
    user = live.user()
    slug = user.create_room()
    posted(user, slug)
    latest = posted(user, slug)
    stream = user.events(events_path(slug))
    try:
        assert stream.next(timeout=3).json()["cursor"] == latest["id"]
        fresh = posted(user, slug)
        assert stream.next_durable().id == fresh["id"]
    finally:
        stream.close()


@pytest.mark.parametrize("bad", ["abc", "1-2-3", "-1-0", "1.5-0", "1-", "123456789012345678901-0",
                                 "18446744073709551616-0"])
def test_malformed_start_position_is_invalid_cursor(live, bad):
    user = live.user()
    slug = user.create_room()
    url = user.base_url + events_path(slug)
    for kwargs in ({"headers": {"Last-Event-ID": bad}}, {"params": {"last_event_id": bad}},
                   {"params": {"lastEventId": bad}}):
        response = user.http.get(url, timeout=10, **kwargs)
        assert_api_error(response, 400, "invalid_cursor")


def test_without_a_session_401_and_unknown_room_404(live):
    user = live.user()
    slug = user.create_room()
    assert_api_error(requests.get(live.url + events_path(slug), timeout=10), 401, "not_authenticated")
    assert_api_error(user.get(events_path("no-such-room")), 404, "not_found")


# Event payloads

def test_message_deletion_mute_and_lock_events_carry_the_contract_fields(live):
    author = live.user()
    moderator = live_moderator(live)
    slug = author.create_room()
    stream = author.events(events_path(slug))
    try:
        stream.next(timeout=3)
        message = posted(author, slug, "hello\r\nworld  ")
        event = stream.next_durable()
        assert (event.event, event.id) == ("message", message["id"])
        assert event.json() == message
        assert event.json()["body"] == "hello\nworld"
        assert set(event.json()) == {"id", "room", "body", "sender", "created_at", "client_id", "deleted"}

        assert author.delete(f"/api/rooms/{slug}/messages/{message['id']}").status_code == 200
        event = stream.next_durable()
        assert event.event == "message_deleted"
        assert event.json() == {"id": message["id"], "room": slug, "deleted_by": author.user["username"]}

        target = live.user()
        muted = moderator.post(f"/api/rooms/{slug}/mutes", json={"username": target.user["username"], "minutes": 5})
        assert muted.status_code == 201, muted.text
        event = stream.next_durable()
        assert event.event == "user_muted"
        assert event.json() == {"room": slug, "username": target.user["username"], "until": muted.json()["until"],
                                "by": moderator.user["username"]}
        assert TIME_FORMAT.match(event.json()["until"])

        assert moderator.delete(f"/api/rooms/{slug}/mutes/{target.user['username']}").status_code == 204
        event = stream.next_durable()
        assert event.event == "user_unmuted"
        assert event.json() == {"room": slug, "username": target.user["username"], "until": None,
                                "by": moderator.user["username"]}

        for action, locked in (("lock", True), ("unlock", False)):
            answer = moderator.post(f"/api/rooms/{slug}/{action}")
            assert answer.status_code == 200, answer.text
            event = stream.next_durable()
            assert event.event == "room_updated"
            room = event.json()["room"]
            assert room["slug"] == slug and room["locked"] is locked
            assert set(room) == {"slug", "name", "created_at", "locked", "slow_mode_seconds", "online_count"}
            assert room == answer.json()["room"]
    finally:
        stream.close()


# Presence

def test_presence_on_connect_on_change_and_when_someone_leaves(quick):
    alice, bob = quick.user(unique("alice")), quick.user(unique("Bob"))
    slug = alice.create_room()
    names = sorted([alice.user["username"], bob.user["username"]], key=str.lower)
    alice_stream = alice.events(events_path(slug))
    try:
        assert alice_stream.next(timeout=3).event == "ready"
        on_connect = alice_stream.next(timeout=3)
        assert on_connect.event == "presence" and on_connect.id is None
        assert on_connect.json() == {"room": slug, "online": [alice.user["username"]]}

        bob_stream = bob.events(events_path(slug))
        try:
            bob_stream.next(timeout=3)
            assert bob_stream.next(timeout=3).json() == {"room": slug, "online": names}
            change = alice_stream.wait_for(lambda event: event.event == "presence", timeout=5)
            assert change.json() == {"room": slug, "online": names}
            # Both stay online while connected, past the 3 s presence TTL (the server re-announces them).
            pings = 0
            while pings < 4:
                event = alice_stream.next(timeout=3)
                pings += event.event == "ping"
                if event.event == "presence":
                    assert event.json()["online"] == names, "someone connected dropped out"
            assert alice.get(f"/api/rooms/{slug}").json()["online"] == names
        finally:
            bob_stream.close()
        left = alice_stream.wait_for(lambda event: event.event == "presence", timeout=10)
        assert left.json() == {"room": slug, "online": [alice.user["username"]]}
    finally:
        alice_stream.close()


def test_a_poller_is_online_while_it_polls_and_drops_out_after_its_last_poll(quick):
    alice, bob = quick.user(unique("alice")), quick.user(unique("bob"))
    slug = alice.create_room()
    names = sorted([alice.user["username"], bob.user["username"]], key=str.lower)
    polling = threading.Event()
    polling.set()

    def poll_while_asked():
        cursor = ""
        while polling.is_set():
            body = bob.get(f"/api/rooms/{slug}/poll", params={"cursor": cursor, "timeout": 1}).json()
            cursor = body["cursor"]

    stream = alice.events(events_path(slug))
    poller = threading.Thread(target=poll_while_asked, daemon=True)
    try:
        poller.start()
        stream.wait_for(lambda event: event.event == "presence" and event.json()["online"] == names, timeout=5)
        # Online past three presence TTLs (3 s each) while he polls, through the hub's batched writes.
        for _ in range(10):
            assert stream.next(timeout=3).event in ("ping", "presence")
            assert alice.get(f"/api/rooms/{slug}").json()["online"] == names, "a poller dropped out"
        polling.clear()
        poller.join(5)
        stopped = time.monotonic()
        left = stream.wait_for(lambda event: event.event == "presence", timeout=10)
        assert left.json()["online"] == [alice.user["username"]]
        assert time.monotonic() - stopped < 3 + 2  # the TTL, and the once-a-second presence check
    finally:
        polling.clear()
        stream.close()


def test_presence_is_coalesced_and_never_repeats_itself(quick):
    watcher = quick.user()
    slug = watcher.create_room()
    stream = watcher.events(events_path(slug))
    visitors = [quick.user() for _ in range(5)]
    everyone = sorted([watcher.user["username"]] + [visitor.user["username"] for visitor in visitors], key=str.lower)
    theirs = []
    try:
        assert stream.next(timeout=3).event == "ready"
        presences = [stream.next(timeout=3)]
        started = time.monotonic()
        theirs = [visitor.events(events_path(slug)) for visitor in visitors]  # five arrivals at once
        while presences[-1].json()["online"] != everyone:
            event = stream.next(timeout=max(0.01, 8 - (time.monotonic() - started)))
            if event.event == "presence":
                presences.append(event)
        elapsed = time.monotonic() - started
        assert len(presences) - 1 <= elapsed + 1, "more than one presence event a second"
        lists = [event.json()["online"] for event in presences]
        assert all(before != after for before, after in zip(lists, lists[1:])), lists
    finally:
        for visitor_stream in [stream, *theirs]:
            visitor_stream.close()


# How streams end

def test_stream_ends_after_its_maximum_age(capped):
    user = capped.user()
    stream = user.events(events_path(user.create_room()))
    try:
        assert stream.next(timeout=3).event == "ready"
        started = time.monotonic()
        assert stream.wait_closed(6), "the stream outlived CHAT_STREAM_MAX_SECONDS"
        assert 1.0 < time.monotonic() - started < 4.5
    finally:
        stream.close()


def test_streams_past_the_per_process_cap_get_503_with_retry_after(capped):
    user = capped.user()
    slug = user.create_room()
    held = [user.events(events_path(slug)) for _ in range(2)]
    try:
        for stream in held:
            assert stream.status == 200 and stream.next(timeout=3).event == "ready"
        refused = user.events(events_path(slug))
        assert_api_error(refused.response, 503, "unavailable")
        assert int(refused.headers["Retry-After"]) > 0
        # Long-polling is still served.
        assert user.get(f"/api/rooms/{slug}/poll", params={"timeout": 0}).status_code == 200
        for stream in held:  # they end at their maximum age, which frees the places
            assert stream.wait_closed(6)
        again = user.events(events_path(slug))
        try:
            assert again.status == 200
        finally:
            again.close()
    finally:
        for stream in held:
            stream.close()


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_place(services):
    """A stream whose client takes no bytes for CHAT_SEND_TIMEOUT_SECONDS ends: its place counts against
    the user's streams no more (a client that stops reading must not pin the server's resources)."""
    server = LiveServer(services, workers=1, CHAT_SEND_TIMEOUT_SECONDS=2, CHAT_MAX_STREAMS_PER_USER=1,
                        **UNLIMITED_POSTING)
    server.start()
    stalled = socket.socket()
    try:
        user = server.user()
        slug = user.create_room()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a window that fills at once
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(f"GET {events_path(slug)} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                        f"Cookie: chat_session={user.http.cookies['chat_session']}\r\n\r\n".encode())
        assert b"200 OK" in stalled.recv(512)  # then it reads nothing more
        # HEAD answers what a GET would get: the user's one place is taken.
        assert user.http.head(server.url + events_path(slug), timeout=5).status_code == 429
        big = "x" * 1900
        sent = 0
        while user.http.head(server.url + events_path(slug), timeout=5).status_code == 429:
            assert sent < 2000, "the stalled stream still holds its place after 2,000 messages"
            for _ in range(50):  # far more than the stalled socket's buffers can take
                posted(user, slug, big)
            sent += 50
        again = user.events(events_path(slug))
        try:
            assert again.status == 200 and again.next(timeout=3).event == "ready"
        finally:
            again.close()
    finally:
        stalled.close()
        server.stop()


def test_logout_ends_that_sessions_stream_but_not_another_session(live):
    first = live.user()
    second = HttpUser(live.url)
    assert second.login(first.user["username"]).status_code == 200
    slug = first.create_room()
    # Two workers: each session opens two streams so that both processes are likely involved.
    mine = [first.events(events_path(slug)) for _ in range(2)]
    theirs = second.events(events_path(slug))
    try:
        for stream in [*mine, theirs]:
            assert stream.next(timeout=3).event == "ready"
        started = time.monotonic()
        assert first.post("/api/auth/logout").status_code == 204
        for stream in mine:
            assert stream.wait_closed(2), "logout did not end the session's stream within 2 s"
        ended_in = time.monotonic() - started
        assert not theirs.closed.is_set()
        message = posted(second, slug)
        assert theirs.next_durable().id == message["id"]
        assert_api_error(first.get(events_path(slug)), 401, "not_authenticated")
        print(f"logout ended the streams in {ended_in:.3f} s")
    finally:
        for stream in [*mine, theirs]:
            stream.close()


def test_ban_ends_every_stream_of_the_user(live):
    moderator = live_moderator(live)
    victim = live.user()
    other_session = HttpUser(live.url)
    assert other_session.login(victim.user["username"]).status_code == 200
    bystander = live.user()
    rooms = [victim.create_room(), victim.create_room()]
    victims = [victim.events(events_path(rooms[0])), victim.events(events_path(rooms[1])),
               other_session.events(events_path(rooms[0])), other_session.events(events_path(rooms[1]))]
    watching = bystander.events(events_path(rooms[0]))
    try:
        for stream in [*victims, watching]:
            assert stream.next(timeout=3).event == "ready"
        started = time.monotonic()
        assert moderator.post("/api/bans", json={"username": victim.user["username"]}).status_code == 201
        for stream in victims:
            assert stream.wait_closed(2), "a ban did not end every stream of the user within 2 s"
        ended_in = time.monotonic() - started
        assert not watching.closed.is_set()
        assert_api_error(other_session.get(events_path(rooms[0])), 403, "banned")
        message = posted(bystander, rooms[0])
        assert watching.next_durable().id == message["id"]
        print(f"a ban ended the streams in {ended_in:.3f} s")
    finally:
        for stream in [*victims, watching]:
            stream.close()


def test_sigterm_ends_every_stream_within_5_seconds_and_the_server_exits(services):
    server = LiveServer(services, workers=2)
    server.start()
    try:
        user = server.user()
        moderator = live_moderator(server)
        slugs = [user.create_room() for _ in range(2)]
        streams = [user.events(events_path(slug)) for slug in slugs for _ in range(3)]
        streams.append(moderator.events("/api/moderation/events"))
        for stream in streams:
            assert stream.status == 200 and stream.next(timeout=3).event == "ready"
        started = time.monotonic()
        server.process.send_signal(15)
        for stream in streams:
            assert stream.wait_closed(max(0.01, 5 - (time.monotonic() - started))), "a stream outlived SIGTERM by 5 s"
        ended_in = time.monotonic() - started
        server.process.wait(timeout=15)
        print(f"SIGTERM: streams ended within {ended_in:.2f} s, master exited after {time.monotonic() - started:.2f} s")
        assert server.process.returncode == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/healthz", timeout=2)
    finally:
        server.stop()


def test_presence_and_ready_data_are_json_objects(live):
    """Every event's data is one JSON object on one `data:` line (what EventSource hands the page)."""
    user = live.user()
    slug = user.create_room()
    stream = user.events(events_path(slug))
    try:
        for _ in range(2):
            event = stream.next(timeout=3)
            assert isinstance(json.loads(event.data), dict)
            assert "\n" not in event.data
    finally:
        stream.close()
