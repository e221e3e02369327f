"""Message reports (API.md, "Moderation"): any user reports a message; moderators list and resolve reports, and
only the moderators' feed carries `report_created` and `report_resolved` (never a room's stream or poll, nor the
several-rooms feed), resumed and filtered by room like any of its events."""
import redis
import requests

from chat.streams import Streams
from tests.support import event_key, live_moderator, operator_context, wait_until

FEED, POLL = "/api/moderation/events", "/api/moderation/poll"
REPORT_EVENTS = ("report_created", "report_resolved")


def act(user, method, path, status, **kwargs):
    response = user.request(method, path, **kwargs)
    assert response.status_code == status, (method, path, response.status_code, response.text)
    return response.json() if response.content else None


def send(user, slug, body):
    return act(user, "POST", f"/api/rooms/{slug}/messages", 201, json={"body": body})["message"]


def report(user, message, reason="spam", status=201):
    return act(user, "POST", f"/api/rooms/{message['room']}/messages/{message['id']}/reports", status,
               json={"reason": reason})


def resolve(moderator, report_id, action, status=200):
    return act(moderator, "POST", f"/api/moderation/reports/{report_id}/resolve", status, json={"action": action})


def cursor_of(stream):
    ready = stream.next(timeout=5)
    assert ready.event == "ready", ready
    return ready.json()["cursor"]


def test_a_report_then_the_same_report_again(live):
    author, reporter = live.user(), live.user()
    slug = author.create_room()
    message = send(author, slug, "buy cheap watches")
    first = report(reporter, message, "  spam, twice  ")
    assert set(first) == {"id", "room", "message", "reporter", "reason", "status", "resolution", "resolved_by",
                          "created_at"}
    assert first["room"] == slug and first["message"] == message and first["reporter"] == reporter.user["username"]
    assert first["reason"] == "spam, twice" and first["status"] == "open"
    assert first["resolution"] is None and first["resolved_by"] is None
    assert report(reporter, message, "another reason", status=200) == first  # the first, unchanged
    other = report(author, message, "mine too")  # another user's report is another report
    assert other["id"] != first["id"]


def test_what_a_report_refuses(live):
    author, reporter = live.user(), live.user()
    slug = author.create_room()
    message = send(author, slug, "hello")
    path = f"/api/rooms/{slug}/messages/{message['id']}/reports"
    for reason in ("", "   ", "x" * 501, None, 5, "bad\x00byte"):
        body = act(reporter, "POST", path, 422, json={"reason": reason})
        assert body["error"]["code"] == "validation_error" and "reason" in body["error"]["fields"]
    assert act(reporter, "POST", path, 422, json={})["error"]["fields"]["reason"]
    assert report(reporter, message, "x" * 500)["reason"] == "x" * 500
    for missing in (f"/api/rooms/{slug}/messages/999999-1/reports", f"/api/rooms/{slug}/messages/nonsense/reports",
                    f"/api/rooms/no-such-room/messages/{message['id']}/reports"):
        assert act(reporter, "POST", missing, 404, json={"reason": "spam"})["error"]["code"] == "not_found"
    other = author.create_room()  # a message is reported in its own room only
    assert act(reporter, "POST", f"/api/rooms/{other}/messages/{message['id']}/reports", 404,
               json={"reason": "spam"})["error"]["code"] == "not_found"
    anonymous = requests.post(live.url + path, json={"reason": "spam"}, timeout=10)
    assert anonymous.status_code == 401


def test_only_moderators_list_and_resolve(live):
    author, reporter = live.user(), live.user()
    slug = author.create_room()
    made = report(reporter, send(author, slug, "hello"))
    assert act(reporter, "GET", "/api/moderation/reports", 403)["error"]["code"] == "forbidden"
    assert act(reporter, "POST", f"/api/moderation/reports/{made['id']}/resolve", 403,
               json={"action": "dismiss"})["error"]["code"] == "forbidden"


def test_listing_and_resolving(live):
    moderator = live_moderator(live)
    author, reporter = live.user(), live.user()
    slug = author.create_room()
    kept, doomed = send(author, slug, "borderline"), send(author, slug, "abuse")
    first, second = report(reporter, kept, "rude?"), report(reporter, doomed, "abuse")
    listed = act(moderator, "GET", "/api/moderation/reports", 200, params={"status": "open"})["reports"]
    assert [entry["id"] for entry in listed][:2] == [second["id"], first["id"]]  # newest first
    assert act(moderator, "GET", "/api/moderation/reports", 422, params={"status": "closed"})["error"]["fields"]

    dismissed = resolve(moderator, first["id"], "dismiss")
    assert dismissed == {**first, "status": "resolved", "resolution": "dismiss",
                         "resolved_by": moderator.user["username"]}
    assert resolve(moderator, first["id"], "delete") == dismissed  # resolved already: answered as it is
    assert act(author, "GET", f"/api/rooms/{slug}/messages", 200)["messages"][0]["deleted"] is False

    deleted = resolve(moderator, second["id"], "delete")
    assert deleted["status"] == "resolved" and deleted["resolution"] == "delete"
    assert deleted["message"]["deleted"] is True and deleted["message"]["body"] == ""
    history = act(author, "GET", f"/api/rooms/{slug}/messages", 200)["messages"]
    assert [entry["deleted"] for entry in history] == [False, True]

    open_now = act(moderator, "GET", "/api/moderation/reports", 200, params={"status": "open"})["reports"]
    assert {first["id"], second["id"]}.isdisjoint(entry["id"] for entry in open_now)
    resolved = act(moderator, "GET", "/api/moderation/reports", 200, params={"status": "resolved"})["reports"]
    assert [entry["id"] for entry in resolved][:2] == [second["id"], first["id"]]

    log = act(moderator, "GET", "/api/moderation/actions", 200)["actions"]
    mine = [(entry["action"], entry["target"], entry["reason"]) for entry in log
            if entry["moderator"] == moderator.user["username"]]
    assert mine == [("resolve_report", str(second["id"]), "delete"), ("delete_message", doomed["id"], None),
                    ("resolve_report", str(first["id"]), "dismiss")]

    for bad in ({"action": "ban"}, {}):
        assert act(moderator, "POST", f"/api/moderation/reports/{second['id']}/resolve", 422,
                   json=bad)["error"]["fields"]["action"]
    for missing in ("999999", "nonsense"):
        assert act(moderator, "POST", f"/api/moderation/reports/{missing}/resolve", 404,
                   json={"action": "dismiss"})["error"]["code"] == "not_found"


def test_report_events_reach_the_moderators_feed_and_never_a_room_client(live):
    moderator = live_moderator(live)
    author, reporter, reader = live.user(), live.user(), live.user()
    slug = author.create_room()
    target = send(author, slug, "reported")
    moderators = moderator.events(FEED)
    room_stream = reader.events(f"/api/rooms/{slug}/events")
    several = reader.events("/api/events", params={"rooms": slug})
    try:
        feed_cursor, room_cursor, several_cursor = cursor_of(moderators), cursor_of(room_stream), cursor_of(several)
        room_poll_cursor = act(reader, "GET", f"/api/rooms/{slug}/poll", 200, params={"timeout": 0})["cursor"]
        several_poll_cursor = act(reader, "GET", "/api/poll", 200, params={"rooms": slug, "timeout": 0})["cursor"]

        made = report(reporter, target, "spam")
        created = moderators.next_durable()
        assert (created.event, created.json()) == ("report_created", {"report": made})
        report(reporter, target, "again", status=200)  # answered with the first: nothing is broadcast
        after = send(author, slug, "after the report")
        # Each client's next durable event is the message: no report, and no second report_created.
        assert moderators.next_durable().event == "message"
        for stream in (room_stream, several):
            event = stream.next_durable()
            assert (event.event, event.json()["id"]) == ("message", after["id"])

        resolved = resolve(moderator, made["id"], "delete")
        deletion = moderators.next_durable()
        assert deletion.event == "message_deleted"
        event = moderators.next_durable()
        assert (event.event, event.json()) == ("report_resolved", {"report": resolved})
        closing = send(author, slug, "closing")
        assert moderators.next_durable().json()["id"] == closing["id"]
        for stream in (room_stream, several):
            seen = [stream.next_durable(), stream.next_durable()]
            assert [entry.event for entry in seen] == ["message_deleted", "message"]
            assert seen[1].json()["id"] == closing["id"]

        # Polls, from the same starting points: the moderators' poll carries the reports, the others never.
        def reaching(user, path, params):
            """A poll's answer from a cursor, once it holds the last message (the process asked may be a moment
            behind the one that served the stream)."""
            def answer():
                body = act(user, "GET", path, 200, params={**params, "timeout": 0})
                return body if closing["id"] in [entry["data"].get("id") for entry in body["events"]] else None
            return wait_until(answer, what=f"the last message on {path}")

        polled = reaching(moderator, POLL, {"cursor": feed_cursor})["events"]
        ours = [entry["event"] for entry in polled if entry["data"].get("report", {}).get("room", slug) == slug
                and entry["data"].get("room", slug) == slug]
        assert ours == ["report_created", "message", "message_deleted", "report_resolved", "message"]
        # Read now, the report's message is a tombstone there too (from the process's memory or from Redis).
        again = next(entry for entry in polled if entry["event"] == "report_created")["data"]["report"]
        assert again == {**made, "message": {**target, "body": "", "deleted": True}}
        for path, params in ((f"/api/rooms/{slug}/poll", {"cursor": room_poll_cursor}),
                             ("/api/poll", {"rooms": slug, "cursor": several_poll_cursor}),
                             (f"/api/rooms/{slug}/poll", {"cursor": room_cursor}),
                             ("/api/poll", {"rooms": slug, "cursor": several_cursor})):
            body = reaching(reader, path, params)
            assert [entry["event"] for entry in body["events"]] == ["message", "message_deleted", "message"], path
            assert body["cursor"] == body["events"][-1]["id"]
    finally:
        for stream in (moderators, room_stream, several):
            stream.close()


def test_waiting_polls_are_woken_by_a_report_on_the_moderators_poll_only(live):
    import threading  # noqa: PLC0415

    moderator = live_moderator(live)
    author, reporter, reader = live.user(), live.user(), live.user()
    slug = author.create_room()
    waits = {"room": (reader, f"/api/rooms/{slug}/poll", {}), "several": (reader, "/api/poll", {"rooms": slug}),
             "moderators": (moderator, POLL, {"rooms": slug})}
    tails = {name: act(user, "GET", path, 200, params={**params, "timeout": 0})["cursor"]
             for name, (user, path, params) in waits.items()}
    target = send(author, slug, "reported")
    cursors = {}  # each just after the message, read by waiting for it
    for name, (user, path, params) in waits.items():
        body = act(user, "GET", path, 200, params={**params, "cursor": tails[name], "timeout": 20})
        assert [entry["data"]["id"] for entry in body["events"]] == [target["id"]], name
        cursors[name] = body["cursor"]
    answers = {}

    def wait(name):
        user, path, params = waits[name]
        answers[name] = act(user, "GET", path, 200, params={**params, "cursor": cursors[name], "timeout": 20})

    threads = [threading.Thread(target=wait, args=(name,)) for name in waits]
    for thread in threads:
        thread.start()
    try:
        made = report(reporter, target, "spam")
        threads[2].join(30)  # the moderators' poll answers with the report alone
        assert [(entry["event"], entry["data"]) for entry in answers["moderators"]["events"]] == \
            [("report_created", {"report": made})]
        after = send(author, slug, "after")
    finally:
        for thread in threads:
            thread.join(30)
    # The others were not woken by it: they answered with the message, never the report.
    for name in ("room", "several"):
        assert [(entry["event"], entry["data"]["id"]) for entry in answers[name]["events"]] == \
            [("message", after["id"])], name


def test_resuming_across_report_events(live):
    moderator = live_moderator(live)
    author, reporter, reader = live.user(), live.user(), live.user()
    slug = author.create_room()
    target = send(author, slug, "reported")
    before = act(moderator, "GET", POLL, 200, params={"timeout": 0})["cursor"]
    room_before = act(reader, "GET", f"/api/rooms/{slug}/poll", 200, params={"timeout": 0})["cursor"]
    made = report(reporter, target, "spam")
    after = send(author, slug, "after")

    resumed = moderator.events(FEED, last_event_id=before)
    try:
        got = [resumed.next_durable(), resumed.next_durable()]
        assert [entry.event for entry in got] == ["report_created", "message"]
        assert got[0].json() == {"report": made} and event_key(got[0].id) < event_key(got[1].id)
    finally:
        resumed.close()
    again = moderator.events(FEED, last_event_id=got[0].id)  # resumed from the report: exactly what follows
    try:
        assert again.next_durable().json()["id"] == after["id"]
    finally:
        again.close()
    room = reader.events(f"/api/rooms/{slug}/events", last_event_id=room_before)
    try:
        event = room.next_durable()
        assert (event.event, event.json()["id"]) == ("message", after["id"])
    finally:
        room.close()


def test_the_record_rebuilds_report_events_and_a_room_replay_leaves_them_out(live):
    """Fills, the relay and replays rebuild a room's events from the database: reports are among them, and
    a room's replay from the database (Redis lost its stream) skips them and goes on after them."""
    from chat.ids import ZERO, EventId  # noqa: PLC0415
    from chat.models import Room, events_after  # noqa: PLC0415

    moderator = live_moderator(live)
    author, reporter, reader = live.user(), live.user(), live.user()
    slug = author.create_room()
    start = act(reader, "GET", f"/api/rooms/{slug}/messages", 200)["cursor"]
    target = send(author, slug, "reported")
    made = report(reporter, target, "spam")
    resolved = resolve(moderator, made["id"], "dismiss")
    with operator_context(live):
        room = Room.query.filter_by(slug=slug).one()
        rebuilt = events_after(room.id, ZERO, EventId(room.event_ms, room.event_seq), 100)
    assert [(kind, data) for _, kind, data in rebuilt] == [
        ("message", target), ("report_created", {"report": made}), ("report_resolved", {"report": resolved})]
    assert [event_id for event_id, _, _ in rebuilt] == sorted(event_id for event_id, _, _ in rebuilt)

    client = redis.Redis.from_url(live.services["redis_url"], decode_responses=True)
    try:
        client.delete(Streams(client, live.services["prefix"], 10).room_stream_key(slug))
    finally:
        client.close()
    # Redis holds nothing of the room now: a room's poll and stream replay it from the record.
    body = act(reader, "GET", f"/api/rooms/{slug}/poll", 200, params={"cursor": start, "timeout": 0})
    assert [(entry["event"], entry["id"]) for entry in body["events"]] == [("message", target["id"])]
    stream = reader.events(f"/api/rooms/{slug}/events", last_event_id=start)
    try:
        assert cursor_of(stream) == start
        event = stream.next_durable()
        assert (event.event, event.json()["id"]) == ("message", target["id"])
        after = send(author, slug, "after")  # its publication restores the lost stream from the record
        event = stream.next_durable()
        assert (event.event, event.json()["id"]) == ("message", after["id"])
    finally:
        stream.close()


def test_the_rooms_filter_applies_through_the_reports_room(live):
    moderator = live_moderator(live)
    author, reporter = live.user(), live.user()
    first, second = author.create_room(), author.create_room()
    in_first, in_second = send(author, first, "one"), send(author, second, "two")
    feed = moderator.events(FEED, params={"rooms": second})
    try:
        cursor = cursor_of(feed)
        report(reporter, in_first, "spam")
        made = report(reporter, in_second, "spam")
        event = feed.next_durable()
        assert (event.event, event.json()["report"]["id"], event.json()["report"]["room"]) == \
            ("report_created", made["id"], second)
        polled = act(moderator, "GET", POLL, 200, params={"cursor": cursor, "rooms": second, "timeout": 0})["events"]
        assert [(entry["event"], entry["data"]["report"]["id"]) for entry in polled] == \
            [("report_created", made["id"])]
    finally:
        feed.close()


def test_resolutions_at_once_resolve_a_report_once(live):
    """Two moderators resolving one report while its author deletes the message: one resolution wins, the other
    answers it; one report_resolved and one message_deleted are published, and they agree with the record."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    first, second = live_moderator(live), live_moderator(live)
    author, reporter = live.user(), live.user()
    slug = author.create_room()
    target = send(author, slug, "contested")
    made = report(reporter, target, "spam")
    cursor = act(first, "GET", POLL, 200, params={"timeout": 0})["cursor"]  # (report_created may follow it)
    with ThreadPoolExecutor(3) as pool:
        deleting = pool.submit(act, first, "POST", f"/api/moderation/reports/{made['id']}/resolve", 200,
                               json={"action": "delete"})
        dismissing = pool.submit(act, second, "POST", f"/api/moderation/reports/{made['id']}/resolve", 200,
                                 json={"action": "dismiss"})
        by_author = pool.submit(act, author, "DELETE", f"/api/rooms/{slug}/messages/{target['id']}", 200)
        answers = [deleting.result(), dismissing.result()]
        by_author.result()
    # Both answer the one resolution (each with the message as it was when it answered: the author's deletion
    # may come between them).
    without_message = [{key: value for key, value in answer.items() if key != "message"} for answer in answers]
    assert without_message[0] == without_message[1] and answers[0]["status"] == "resolved"
    final = without_message[0]
    assert final["resolved_by"] == (first if final["resolution"] == "delete" else second).user["username"]
    def published():  # what the feed holds after the cursor, once both events reached the process asked
        # (either may come last: the author's deletion can be committed after the resolution)
        found = act(first, "GET", POLL, 200, params={"cursor": cursor, "rooms": slug, "timeout": 5})["events"]
        return found if {"report_resolved", "message_deleted"} <= {entry["event"] for entry in found} else None

    events = wait_until(published, what="report_resolved and message_deleted on the moderators' poll")
    kinds = [entry["event"] for entry in events]
    assert kinds.count("message_deleted") == 1 and kinds.count("report_resolved") == 1, kinds
    resolved = next(entry for entry in events if entry["event"] == "report_resolved")["data"]["report"]
    assert {key: value for key, value in resolved.items() if key != "message"} == final
    listed = act(first, "GET", "/api/moderation/reports", 200, params={"status": "resolved"})["reports"]
    now = next(entry for entry in listed if entry["id"] == made["id"])
    assert now["message"]["deleted"] is True and {key: value for key, value in now.items() if key != "message"} == final


def test_reports_per_hour_per_account(make_app):
    """CHAT_REPORT_LIMIT: past it `429 rate_limited` with Retry-After; reporting a message again answers the
    first report and counts for nothing; another account has its own allowance."""
    from tests.support import AuthActions  # noqa: PLC0415

    app = make_app(CHAT_REPORT_LIMIT="2/3600")
    author, reporter, other = (AuthActions(app.test_client()) for _ in range(3))
    for user in (author, reporter, other):
        assert user.register().status_code == 201
    slug = author.create_room()
    messages = [author.send(slug, f"message {n}").json["message"] for n in range(3)]

    def report_via(user, message):
        return user.post(f"/api/rooms/{slug}/messages/{message['id']}/reports", json={"reason": "spam"})

    first = report_via(reporter, messages[0])
    assert first.status_code == 201
    for _ in range(3):  # repeats: the first report each time, and no count
        again = report_via(reporter, messages[0])
        assert again.status_code == 200 and again.json == first.json
    assert report_via(reporter, messages[1]).status_code == 201
    refused = report_via(reporter, messages[2])
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert report_via(reporter, messages[0]).status_code == 200  # a repeat still answers, limit or not
    assert report_via(other, messages[2]).status_code == 201
