"""The several-rooms feed (API.md, "Live events for several rooms at once"): one SSE stream or long-poll
for a browser's many rooms, with its own positions, exact resume, and presence per room."""
import threading

import pytest
import requests

from tests.support import LiveServer, live_moderator, metric, no_polls_waiting, posted, wait_until

FEED, POLL = "/api/events", "/api/poll"


def room_of(data):
    return data["room"]["slug"] if isinstance(data["room"], dict) else data["room"]


def error_code(response):
    return response.status_code, response.json()["error"]["code"]


def test_refusals(live):
    user = live.user()
    rooms = [user.create_room() for _ in range(2)]
    for path in (FEED, POLL):
        assert error_code(requests.get(live.url + path, params={"rooms": rooms[0]}, timeout=10)) == \
            (401, "not_authenticated")
        for params in ({}, {"rooms": ""}, {"rooms": " , "}, {"rooms": ",".join(f"r{n}" for n in range(51))}):
            refused = user.get(path, params={**params, "timeout": 0})
            assert error_code(refused) == (422, "validation_error") and "rooms" in refused.json()["error"]["fields"]
        assert error_code(user.get(path, params={"rooms": f"{rooms[0]},no-such-room", "timeout": 0})) == \
            (404, "not_found")
        assert error_code(user.get(path, params={"rooms": rooms[0], "away": rooms[1], "timeout": 0})) == \
            (422, "validation_error")
    assert error_code(user.get(FEED, params={"rooms": rooms[0]}, headers={"Last-Event-ID": "nope"})) == \
        (400, "invalid_cursor")
    assert error_code(user.get(POLL, params={"rooms": rooms[0], "cursor": "1-2-3"})) == (400, "invalid_cursor")


def test_the_most_rooms_with_the_longest_slugs_fit_in_one_request(live):
    """50 slugs of 64 characters, in `rooms` and again in `away`: a request line of about 6.6 KB, over
    gunicorn's default limit (4094 bytes, refused with its own HTML 414) but within gunicorn.conf.py's."""
    moderator = live_moderator(live)  # no cap on rooms created
    rooms = [moderator.create_room(f"{n:02d}" + "x" * 62) for n in range(50)]
    assert {len(slug) for slug in rooms} == {64}
    listed = ",".join(rooms)
    polled = moderator.get(POLL, params={"rooms": listed, "away": listed, "timeout": 0})
    assert polled.status_code == 200 and set(polled.json()["online"]) == set(rooms)
    assert len(polled.request.url) > 4094
    feed = moderator.events(FEED, params={"rooms": listed, "away": listed})
    try:
        assert feed.status == 200 and feed.next(timeout=5).json()["rooms"] == rooms
    finally:
        feed.close()


def test_a_user_follows_the_listed_rooms_over_one_stream(live):
    reader, author, moderator = live.user(), live.user(), live_moderator(live)
    rooms = [author.create_room() for _ in range(3)]
    listed = rooms[:2]
    feed = reader.events(FEED, params={"rooms": ",".join(listed)})
    try:
        assert feed.status == 200 and feed.headers["Content-Type"].startswith("text/event-stream")
        ready = feed.next(timeout=5)
        assert ready.event == "ready" and ready.id is None and ready.json()["rooms"] == listed
        sent = [posted(author, slug, f"to {slug}") for slug in (rooms[2], rooms[0], rooms[1], rooms[2], rooms[0])]
        moderator.post(f"/api/rooms/{rooms[1]}/lock").raise_for_status()
        moderator.delete(f"/api/rooms/{rooms[0]}/messages/{sent[1]['id']}").raise_for_status()
        got = [feed.next_durable() for _ in range(5)]
        assert [(event.event, room_of(event.json())) for event in got] == [
            ("message", rooms[0]), ("message", rooms[1]), ("message", rooms[0]), ("room_updated", rooms[1]),
            ("message_deleted", rooms[0])]
        # A message keeps its room event id in data.id; the feed's ids are its own, increasing.
        assert [event.json()["id"] for event in got[:3]] == [sent[1]["id"], sent[2]["id"], sent[4]["id"]]
        assert got[0].json()["body"] == f"to {rooms[0]}"
        assert got[4].json() == {"id": sent[1]["id"], "room": rooms[0], "deleted_by": moderator.user["username"]}
        assert len({event.id for event in got}) == 5
        # Nothing of the unlisted room came in between.
        posted(author, rooms[2])
        last = posted(author, rooms[0])
        assert feed.next_durable().json()["id"] == last["id"]
    finally:
        feed.close()


def test_presence_per_room_and_away(live):
    reader, other = live.user(), live.user()
    shown, sidebar_only = other.create_room(), other.create_room()
    me = reader.user["username"]
    feed = reader.events(FEED, params={"rooms": f"{shown},{sidebar_only}", "away": sidebar_only})
    try:
        online = {}

        def heard():
            event = feed.wait_for(lambda event: event.event == "presence")
            online[event.json()["room"]] = event.json()["online"]
            return online.get(shown) == [me] and sidebar_only in online

        wait_until(heard, what="presence of both rooms")
        assert online[sidebar_only] == []
        assert reader.get(f"/api/rooms/{shown}").json()["online"] == [me]
        assert reader.get(f"/api/rooms/{sidebar_only}").json()["online"] == []
        # Someone joining a listed room is announced on the feed.
        joined = other.events(f"/api/rooms/{sidebar_only}/events")
        try:
            wait_until(lambda: feed.wait_for(lambda event: event.event == "presence").json() ==
                       {"room": sidebar_only, "online": [other.user["username"]]}, what="the other user's arrival")
        finally:
            joined.close()
    finally:
        feed.close()
    wait_until(lambda: reader.get(f"/api/rooms/{shown}").json()["online"] == [], timeout=30,
               what="leaving within 30 s of closing (API.md)")


def test_exact_resume_while_several_posters_write_and_the_list_changes(live):
    reader = live.user()
    posters = [live.user() for _ in range(3)]
    rooms = [poster.create_room() for poster in posters]
    accepted = {slug: [] for slug in rooms}
    feed = reader.events(FEED, params={"rooms": ",".join(rooms[:2])})
    start = feed.next(timeout=5).json()["cursor"]

    def write(poster, slug):
        for n in range(10):  # the default rate limit: 10 per user and room in 10 s
            accepted[slug].append(posted(poster, slug, f"{slug} {n}")["id"])

    writers = [threading.Thread(target=write, args=pair) for pair in zip(posters, rooms)]
    for writer in writers:
        writer.start()
    try:
        first_part = [feed.next_durable(timeout=20) for _ in range(8)]  # then the connection drops
    finally:
        feed.close()
    for writer in writers:
        writer.join(60)
    assert all(len(ids) == 10 for ids in accepted.values()), accepted
    position = first_part[-1].id
    # The third room's writer may have finished before the drop: it gets one message after it for sure.
    accepted[rooms[2]].append(posted(live.user(), rooms[2], "after the drop")["id"])

    def check(events, listed, after_first_part):
        """Every listed room's messages after the first part, exactly once, in each room's order."""
        for slug in listed:
            mine = [data["id"] for data in events if data["room"] == slug]
            seen_before = [event.json()["id"] for event in first_part if event.json()["room"] == slug] \
                if after_first_part else []
            assert seen_before + mine == accepted[slug], slug
        assert all(data["room"] in listed for data in events)

    # The same list, over SSE: the rest, exactly.
    total = sum(len(accepted[slug]) for slug in rooms[:2]) - len(first_part)
    resumed = reader.events(FEED, params={"rooms": ",".join(rooms[:2])}, last_event_id=position)
    try:
        assert resumed.next(timeout=5).json()["cursor"] == position
        got = [resumed.next_durable() for _ in range(total)]
        check([event.json() for event in got], rooms[:2], True)
        ids = [event.id for event in got]
        assert len(set(ids)) == len(ids)
    finally:
        resumed.close()

    # A changed list (one room dropped, one added), over polling, from the same position: every event of
    # the new list after it, the added room's included.
    def poll_all(listed, cursor):
        found = []
        while True:
            body = reader.get(POLL, params={"rooms": ",".join(listed), "cursor": cursor, "timeout": 0}).json()
            if not body["events"]:
                return found
            assert set(body["online"]) == set(listed)
            found += [(event["id"], event["data"]) for event in body["events"]]
            cursor = body["cursor"]

    everything = poll_all(rooms, start)
    check([data for _, data in everything], rooms, False)
    after_position = everything[[feed_id for feed_id, _ in everything].index(position) + 1:]
    changed = poll_all([rooms[2], rooms[1]], position)
    assert changed == [(feed_id, data) for feed_id, data in after_position if data["room"] != rooms[0]]
    assert any(data["room"] == rooms[2] for _, data in changed)


def test_the_poll_waits_then_wakes_for_a_listed_room_only(live):
    reader, author = live.user(), live.user()
    listed, other = author.create_room(), author.create_room()
    cursor = reader.get(POLL, params={"rooms": listed, "timeout": 0}).json()["cursor"]
    answers = []
    before = no_polls_waiting(live)
    waiting = threading.Thread(target=lambda: answers.append(
        reader.get(POLL, params={"rooms": listed, "cursor": cursor, "timeout": 20})), daemon=True)
    waiting.start()
    wait_until(lambda: answers or metric(live, "chat_polls_waiting") > before, what="the poll waits")
    posted(author, other)
    message = posted(author, listed)
    waiting.join(10)
    assert answers and answers[0].status_code == 200 and answers[0].headers["Cache-Control"] == "no-store"
    body = answers[0].json()
    assert [(event["event"], event["data"]) for event in body["events"]] == [("message", message)]
    assert body["cursor"] == body["events"][0]["id"] and body["online"] == {listed: [reader.user["username"]]}


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_logout_ends_the_feed(live, transport):
    reader = live.user()
    slug = reader.create_room()
    if transport == "sse":
        feed = reader.events(FEED, params={"rooms": slug})
        feed.next(timeout=5)
        reader.post("/api/auth/logout").raise_for_status()
        assert feed.wait_closed(5)
        return
    answers = []
    before = no_polls_waiting(live)
    waiting = threading.Thread(target=lambda: answers.append(
        reader.get(POLL, params={"rooms": slug, "timeout": 20})), daemon=True)
    waiting.start()
    wait_until(lambda: answers or metric(live, "chat_polls_waiting") > before, what="the poll waits")
    reader.post("/api/auth/logout").raise_for_status()
    waiting.join(5)
    assert answers and error_code(answers[0]) == (401, "not_authenticated")


def test_a_head_request_opens_nothing(live):
    user = live.user()
    slug = user.create_room()
    streams_before = metric(live, "chat_streams_open")
    paths = [(f"/api/rooms/{slug}/events", "text/event-stream"), (FEED, "text/event-stream"),
             (f"/api/rooms/{slug}/poll", "application/json"), (POLL, "application/json")]
    for path, content_type in paths:
        for _ in range(10):
            answer = user.request("HEAD", path, params={"rooms": slug, "timeout": 20}, timeout=5)
            assert answer.status_code == 200 and answer.headers["Content-Type"].startswith(content_type)
        assert error_code(requests.get(live.url + path, params={"rooms": slug}, timeout=5)) == \
            (401, "not_authenticated")
        assert requests.head(live.url + path, params={"rooms": slug}, timeout=5).status_code == 401
    # Nothing subscribed: no stream counted, nobody online (and each HEAD of a poll answered at once).
    assert metric(live, "chat_streams_open") <= streams_before  # earlier tests' streams may still be closing
    assert user.get(f"/api/rooms/{slug}").json()["online"] == []


@pytest.fixture(scope="module")
def capped(services):
    """Two workers; a user holds at most three streams and polls, counted across both."""
    server = LiveServer(services, workers=2, CHAT_MAX_STREAMS_PER_USER=3, CHAT_HEARTBEAT_SECONDS=2)
    server.start()
    yield server
    server.stop()


def test_streams_and_polls_per_user_are_capped_across_processes(capped):
    user, other = capped.user(), capped.user()
    slug = user.create_room()
    held = [user.events(FEED, params={"rooms": slug}), user.events(f"/api/rooms/{slug}/events")]
    waiting = threading.Thread(target=lambda: user.get(POLL, params={"rooms": slug, "timeout": 20}), daemon=True)
    try:
        assert [stream.status for stream in held] == [200, 200]
        waiting.start()

        def refused():
            """A fourth is refused once both processes have heard of the others (within a second)."""
            attempt = user.events(f"/api/rooms/{slug}/events")
            if attempt.status == 200:
                attempt.close()
                return None
            return attempt

        answer = wait_until(refused, timeout=5, what="the fourth stream refused")
        assert answer.status == 429 and answer.response.json()["error"]["code"] == "too_many_streams"
        assert int(answer.headers["Retry-After"]) > 0
        poll = user.get(f"/api/rooms/{slug}/poll", params={"timeout": 0})
        assert (poll.status_code, poll.json()["error"]["code"]) == (429, "too_many_streams")
        # A HEAD asks the same question without opening anything (a page uses it to see why a stream failed).
        head = user.request("HEAD", f"/api/rooms/{slug}/events")
        assert head.status_code == 429 and int(head.headers["Retry-After"]) > 0
        held.insert(0, other.events(FEED, params={"rooms": slug}))
        assert held[0].status == 200  # another user is not affected
        held.pop().close()
        # A closed stream frees its place within a heartbeat.
        reopened = wait_until(lambda: (attempt := user.events(FEED, params={"rooms": slug})).status == 200 and attempt,
                              timeout=4, what="a place freed by a closed stream")
        held.append(reopened)
    finally:
        for stream in held:
            stream.close()
