"""The moderators' feed (API.md, "Moderation"): every durable event of every room, one SSE stream or long-poll."""
import threading

import pytest
import requests

from tests.support import feed_positions_increase, live_moderator, metric, no_polls_waiting, wait_until

FEED, POLL = "/api/moderation/events", "/api/moderation/poll"


def room_of(data):
    """The room an event's data carries: a slug, or for `room_updated` the room object."""
    return data["room"]["slug"] if isinstance(data["room"], dict) else data["room"]


def act(user, method, path, status, **kwargs):
    response = user.request(method, path, **kwargs)
    assert response.status_code == status, (path, response.status_code, response.text)
    return response.json() if response.content else None


def happenings(moderator, author, target, first, second):
    """One of each durable event, across two rooms; returns the expected (event, room) sequence."""
    one = act(author, "POST", f"/api/rooms/{first}/messages", 201, json={"body": "in the first room"})["message"]
    act(author, "POST", f"/api/rooms/{second}/messages", 201, json={"body": "in the second room"})
    act(author, "DELETE", f"/api/rooms/{first}/messages/{one['id']}", 200)
    act(moderator, "POST", f"/api/rooms/{second}/mutes", 201, json={"username": target, "minutes": 10})
    act(moderator, "DELETE", f"/api/rooms/{second}/mutes/{target}", 204)
    act(moderator, "POST", f"/api/rooms/{first}/lock", 200)
    act(moderator, "POST", f"/api/rooms/{first}/unlock", 200)
    return [("message", first), ("message", second), ("message_deleted", first), ("user_muted", second),
            ("user_unmuted", second), ("room_updated", first), ("room_updated", first)]


def test_only_moderators_may_read_the_feed(live):
    user = live.user()
    for path in (FEED, POLL):
        refused = user.get(path, params={"timeout": 0})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        anonymous = requests.get(live.url + path, timeout=10)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"


def test_every_durable_event_of_every_room_with_its_room(live):
    moderator = live_moderator(live)
    author, target = live.user(), live.user()
    first, second = author.create_room(), author.create_room()
    feed = moderator.events(FEED)
    try:
        ready = feed.next(timeout=5)
        assert ready.event == "ready" and ready.id is None
        cursor = ready.json()["cursor"]
        expected = happenings(moderator, author, target.user["username"], first, second)
        got = []
        while len(got) < len(expected):
            event = feed.next(timeout=10)
            assert event.event != "reset", event
            if event.id is not None and room_of(event.json()) in (first, second):
                got.append(event)
        assert [(event.event, room_of(event.json())) for event in got] == expected
        ids = [event.id for event in got]
        assert feed_positions_increase(ids)
        message, deleted, muted = got[0].json(), got[2].json(), got[3].json()
        assert message["body"] == "in the first room" and message["sender"]["username"] == author.user["username"]
        assert deleted == {"id": message["id"], "room": first, "deleted_by": author.user["username"]}
        assert muted["username"] == target.user["username"] and muted["by"] == moderator.user["username"]
        assert [got[5].json()["room"]["locked"], got[6].json()["room"]["locked"]] == [True, False]

        # The poll serves the same events, with the same positions, from the same cursor; read now, the
        # deleted message is its tombstone.
        body = moderator.get(POLL, params={"cursor": cursor, "timeout": 0}).json()
        polled = [event for event in body["events"] if room_of(event["data"]) in (first, second)]
        expected_data = [{**message, "body": "", "deleted": True}] + [event.json() for event in got[1:]]
        assert [(event["id"], event["event"], event["data"]) for event in polled] == \
            [(event.id, event.event, data) for event, data in zip(got, expected_data)]
    finally:
        feed.close()


def test_rooms_filter(live):
    moderator = live_moderator(live)
    author = live.user()
    rooms = [author.create_room() for _ in range(3)]
    wanted = ",".join(rooms[:2])
    feed = moderator.events(FEED, params={"rooms": wanted})
    try:
        cursor = feed.next(timeout=5).json()["cursor"]
        sent = [act(author, "POST", f"/api/rooms/{slug}/messages", 201, json={"body": f"to {slug}"})["message"]
                for slug in (rooms[2], rooms[0], rooms[2], rooms[1], rooms[2])]
        expected = [(message["id"], message["room"]) for message in sent if message["room"] != rooms[2]]
        got = [feed.next_durable() for _ in expected]
        assert [(event.json()["id"], event.json()["room"]) for event in got] == expected
        # Nothing from the third room came in between: the next event is the next one posted in a listed room.
        last = act(author, "POST", f"/api/rooms/{rooms[0]}/messages", 201, json={"body": "last"})["message"]
        assert feed.next_durable().json()["id"] == last["id"]

        body = moderator.get(POLL, params={"cursor": cursor, "timeout": 0, "rooms": wanted}).json()
        assert [event["data"]["id"] for event in body["events"]] == [message_id for message_id, _ in expected] + \
            [last["id"]]
        assert all(event["data"]["room"] in rooms[:2] for event in body["events"])
    finally:
        feed.close()


def test_resume_by_last_event_id_is_exact_across_rooms(live):
    moderator = live_moderator(live)
    author = live.user()
    rooms = [author.create_room(), author.create_room()]

    def post(n):
        return act(author, "POST", f"/api/rooms/{rooms[n % 2]}/messages", 201, json={"body": f"n{n}"})["message"]

    feed = moderator.events(FEED, params={"rooms": ",".join(rooms)})
    try:
        feed.next(timeout=5)
        early = [post(n) for n in range(3)]
        seen = [feed.next_durable() for _ in early]
        assert [event.json()["id"] for event in seen] == [message["id"] for message in early]
    finally:
        feed.close()
    resume_from = seen[1].id  # as if the connection dropped after the second event
    later = [post(n) for n in range(3, 7)]
    expected = [message["id"] for message in early[2:] + later]

    for kwargs in ({"last_event_id": resume_from}, {"params": {"last_event_id": resume_from}}):
        feed = moderator.events(FEED, params={"rooms": ",".join(rooms), **kwargs.pop("params", {})}, **kwargs)
        try:
            assert feed.next(timeout=5).json()["cursor"] == resume_from
            got = [feed.next_durable() for _ in expected]
            assert [event.json()["id"] for event in got] == expected
            assert got[0].id == seen[2].id  # the feed's own positions are stable
            sentinel = post(7)
            assert feed.next_durable().json()["id"] == sentinel["id"]
            expected.append(sentinel["id"])
        finally:
            feed.close()

    polled, cursor = [], resume_from
    while len(polled) < len(expected):
        body = moderator.get(POLL, params={"cursor": cursor, "timeout": 2, "rooms": ",".join(rooms)}).json()
        assert body["events"], "the poll found nothing where events exist"
        polled += [event["data"]["id"] for event in body["events"]]
        cursor = body["cursor"]
    assert polled == expected


def test_moderation_poll_waits_and_wakes(live):
    moderator = live_moderator(live)
    author = live.user()
    slug = author.create_room()
    cursor = moderator.get(POLL, params={"timeout": 0}).json()["cursor"]
    answers = []
    before = no_polls_waiting(live)
    waiting = threading.Thread(target=lambda: answers.append(
        moderator.get(POLL, params={"cursor": cursor, "timeout": 20, "rooms": slug})), daemon=True)
    waiting.start()
    wait_until(lambda: answers or metric(live, "chat_polls_waiting") > before, what="the moderation poll waits")
    assert not answers
    message = act(author, "POST", f"/api/rooms/{slug}/messages", 201, json={"body": "wake up"})["message"]
    waiting.join(5)
    assert answers and answers[0].status_code == 200
    assert answers[0].headers["Cache-Control"] == "no-store"
    body = answers[0].json()
    assert [(event["event"], event["data"]) for event in body["events"]] == [("message", message)]
    assert body["cursor"] == body["events"][0]["id"]


@pytest.mark.parametrize("bad", ["nope", "1-2-3"])
def test_malformed_positions_are_invalid_cursor(live, bad):
    moderator = live_moderator(live)
    for response in (moderator.get(POLL, params={"cursor": bad, "timeout": 0}),
                     moderator.get(FEED, headers={"Last-Event-ID": bad})):
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"


def test_a_demoted_moderators_feed_ends_and_is_refused_after(live):
    """`flask users demote` (actions.set_role) ends the moderator's streams in every process, and the
    reconnect is refused: no process keeps the role it had cached."""
    from chat import actions  # noqa: PLC0415
    from chat.models import find_user  # noqa: PLC0415
    from tests.support import operator_context  # noqa: PLC0415

    moderator = live_moderator(live)
    feed = moderator.events(FEED)
    try:
        assert feed.next(timeout=5).event == "ready"
        with operator_context(live):
            actions.set_role(find_user(moderator.user["username"]), "user")
        assert feed.wait_closed(timeout=5), "the feed outlived the demotion"
    finally:
        feed.close()
    refused = moderator.get(FEED)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


# Bans on the moderators' feed (the project's addition): `user_banned` / `user_unbanned`, durable, on no other feed.

def polled_until(user, path, params, last_id):
    """A poll's events from a cursor, once they hold the event whose `data.id` is `last_id` (the process asked
    may be a moment behind the one that served the stream)."""
    def answer():
        body = act(user, "GET", path, 200, params={**params, "timeout": 0})
        return body if last_id in [entry["data"].get("id") for entry in body["events"]] else None
    return wait_until(answer, what=f"{last_id} on {path}")


def test_bans_reach_every_moderators_feed_and_never_a_room_or_the_several_rooms_feed(live):
    moderator = live_moderator(live)
    author, target, reader = live.user(), live.user(), live.user()
    slug, elsewhere = author.create_room(), author.create_room()
    name = target.user["username"]
    streams = {"moderators": moderator.events(FEED), "filtered": moderator.events(FEED, params={"rooms": elsewhere}),
               "room": reader.events(f"/api/rooms/{slug}/events"), "several": reader.events("/api/events",
                                                                                           params={"rooms": slug})}
    polls = {"moderators": (moderator, POLL, {}), "room": (reader, f"/api/rooms/{slug}/poll", {}),
             "several": (reader, "/api/poll", {"rooms": slug})}
    try:
        for stream in streams.values():
            assert stream.next(timeout=5).event == "ready"
        cursors = {key: act(user, "GET", path, 200, params={**params, "timeout": 0})["cursor"]
                   for key, (user, path, params) in polls.items()}

        ban = act(moderator, "POST", "/api/bans", 201, json={"username": name, "reason": "spam"})
        assert act(moderator, "POST", "/api/bans", 201, json={"username": name}) == ban  # in force: nothing new
        act(moderator, "DELETE", f"/api/bans/{name}", 204)
        act(moderator, "DELETE", f"/api/bans/{name}", 204)  # not banned: nothing to announce
        closing = act(author, "POST", f"/api/rooms/{slug}/messages", 201, json={"body": "closing"})["message"]

        # Every moderators' feed, filtered by room or not (a ban holds in every room): the ban, the unban, once each.
        for key in ("moderators", "filtered"):
            got = [streams[key].next_durable() for _ in range(2)]
            assert [(event.event, event.json()) for event in got] == [
                ("user_banned", ban), ("user_unbanned", {"username": name, "by": moderator.user["username"]})], key
        assert set(ban) == {"username", "by", "reason", "created_at"} and ban["reason"] == "spam"
        assert streams["moderators"].next_durable().json()["id"] == closing["id"]
        # A room's stream and the several-rooms feed: the message next, never a ban.
        for key in ("room", "several"):
            event = streams[key].next_durable()
            assert (event.event, event.json()["id"]) == ("message", closing["id"]), key

        for key, (user, path, params) in polls.items():
            body = polled_until(user, path, {**params, "cursor": cursors[key]}, closing["id"])
            expected = ["user_banned", "user_unbanned", "message"] if key == "moderators" else ["message"]
            assert [entry["event"] for entry in body["events"]] == expected, key
            assert all(entry["id"] for entry in body["events"])  # durable: each has its position
    finally:
        for stream in streams.values():
            stream.close()


def test_resuming_across_ban_events_is_exact(live):
    moderator = live_moderator(live)
    author, target = live.user(), live.user()
    slug = author.create_room()
    name = target.user["username"]
    before = act(moderator, "GET", POLL, 200, params={"timeout": 0})["cursor"]
    ban = act(moderator, "POST", "/api/bans", 201, json={"username": name})
    middle = act(author, "POST", f"/api/rooms/{slug}/messages", 201, json={"body": "between"})["message"]
    act(moderator, "DELETE", f"/api/bans/{name}", 204)
    last = act(author, "POST", f"/api/rooms/{slug}/messages", 201, json={"body": "last"})["message"]
    expected = [("user_banned", ban["username"]), ("message", middle["id"]), ("user_unbanned", name),
                ("message", last["id"])]

    def key(event_type, data):
        return event_type, data.get("id") or data["username"]

    feed = moderator.events(FEED, last_event_id=before)
    try:
        got = [feed.next_durable() for _ in expected]
        assert [key(event.event, event.json()) for event in got] == expected
        assert feed_positions_increase([event.id for event in got])
    finally:
        feed.close()
    again = moderator.events(FEED, last_event_id=got[0].id)  # from the ban's own position: exactly what follows
    try:
        assert [key(event.event, event.json()) for event in (again.next_durable() for _ in expected[1:])] == \
            expected[1:]
    finally:
        again.close()
    body = polled_until(moderator, POLL, {"cursor": got[2].id}, last["id"])  # from the unban's position
    assert [key(entry["event"], entry["data"]) for entry in body["events"]] == expected[3:]
    body = polled_until(moderator, POLL, {"cursor": before}, last["id"])
    assert [(entry["id"], *key(entry["event"], entry["data"])) for entry in body["events"]] == \
        [(event.id, *key(event.event, event.json())) for event in got]


# Presence on the moderators' feed (the project's addition): who is online in the rooms it follows.

def presence_of(feed, slug, online, timeout=10):
    """The feed's next `presence` of `slug` that lists exactly `online` (earlier lists of it may come first)."""
    return feed.wait_for(lambda event: event.event == "presence" and event.id is None
                         and event.json() == {"room": slug, "online": online}, timeout=timeout)


def test_the_moderators_feed_carries_presence_of_every_room_where_someone_is(live):
    moderator = live_moderator(live)
    author, visitor = live.user(), live.user()
    slug = author.create_room()
    name = visitor.user["username"]
    feed = moderator.events(FEED)
    try:
        assert feed.next(timeout=5).event == "ready"
        joined = visitor.events(f"/api/rooms/{slug}/events")
        try:
            presence_of(feed, slug, [name])  # the moderator, on a feed, is online nowhere
            late = moderator.events(FEED)  # connecting now: the room's list comes with `ready` (unchanged since,
            try:                             # it is not sent again)
                assert late.next(timeout=5).event == "ready"
                presence_of(late, slug, [name], timeout=5)
            finally:
                late.close()
            # The moderators' poll: presence rides along in `online`, by room.
            assert act(moderator, "GET", POLL, 200, params={"timeout": 0})["online"][slug] == [name]
            assert act(moderator, "GET", POLL, 200, params={"timeout": 0, "rooms": slug})["online"] == {slug: [name]}
            act(visitor, "POST", "/api/auth/logout", 204)  # ends the visitor's stream within 2 s
            presence_of(feed, slug, [])  # the visitor left: the room's list empties
        finally:
            joined.close()
    finally:
        feed.close()


def test_a_filtered_moderators_feed_carries_presence_of_its_rooms_only(live):
    moderator = live_moderator(live)
    author, visitor = live.user(), live.user()
    first, second = author.create_room(), author.create_room()
    name = visitor.user["username"]
    everything, filtered = moderator.events(FEED), moderator.events(FEED, params={"rooms": second})
    try:
        for feed in (everything, filtered):
            assert feed.next(timeout=5).event == "ready"
        in_first = visitor.events(f"/api/rooms/{first}/events")
        presence_of(everything, first, [name])
        in_second = visitor.events(f"/api/rooms/{second}/events")
        try:
            # The filtered feed's first presence naming the visitor is of its own room, not the one joined before.
            seen = filtered.wait_for(lambda event: event.event == "presence" and name in event.json()["online"])
            assert seen.json() == {"room": second, "online": [name]}
        finally:
            in_first.close()
            in_second.close()
    finally:
        everything.close()
        filtered.close()


def test_a_ban_wakes_a_waiting_moderators_poll_whatever_its_rooms(live):
    moderator = live_moderator(live)
    author, target = live.user(), live.user()
    slug = author.create_room()
    cursor = act(moderator, "GET", POLL, 200, params={"timeout": 0, "rooms": slug})["cursor"]
    answers = []
    before = no_polls_waiting(live)
    waiting = threading.Thread(target=lambda: answers.append(
        act(moderator, "GET", POLL, 200, params={"cursor": cursor, "timeout": 20, "rooms": slug})), daemon=True)
    waiting.start()
    wait_until(lambda: answers or metric(live, "chat_polls_waiting") > before, what="the moderators' poll waits")
    ban = act(moderator, "POST", "/api/bans", 201, json={"username": target.user["username"]})
    waiting.join(10)
    assert answers, "the ban did not wake the poll"
    assert [(event["event"], event["data"]) for event in answers[0]["events"]] == [("user_banned", ban)]
