"""API.md "Messages": posting (validation, idempotent client_id, limits), history paging, deletion, check order."""
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chat import streams
from chat.ids import EventId
from tests.support import (BAD_BODIES, TIME_FORMAT, UNLIMITED_POSTING, AuthActions, assert_error, assert_fields,
                           assert_refused, event_key)


def member_on(app) -> tuple[AuthActions, str]:
    """A user signed in to `app` (an app with settings of its own), and a room they created."""
    member = AuthActions(app.test_client())
    assert member.register().status_code == 201
    return member, member.create_room()


@pytest.fixture
def chatty(make_app):
    """A signed-in member and their room, on an app whose rate limit lets them post a lot."""
    return member_on(make_app(**UNLIMITED_POSTING))


def post_all(member, slug, bodies) -> list[dict]:
    messages = []
    for body in bodies:
        response = member.send(slug, body)
        assert response.status_code == 201, response.json
        messages.append(response.json["message"])
    return messages


def read_all(member, slug, limit: int) -> list[list[dict]]:
    """Page back with `before` until has_more is false; the pages, newest page first."""
    pages, params = [], {"limit": limit}
    while True:
        page = member.history(slug, **params).json
        assert 1 <= len(page["messages"]) <= limit or not page["has_more"]
        pages.append(page["messages"])
        if not page["has_more"]:
            return pages
        params["before"] = page["messages"][0]["id"]


def assert_pages_cover(pages, posted, limit):
    """Every page but the oldest is full, and the pages joined oldest first are exactly what was posted."""
    assert len(pages) == max(1, -(-len(posted) // limit))  # no empty page after the last one
    assert all(len(page) == limit for page in pages[:-1])
    joined = [message for page in reversed(pages) for message in page]
    assert joined == posted
    keys = [event_key(message["id"]) for message in joined]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def bodies(member, slug) -> list[str]:
    return [message["body"] for message in member.history(slug).json["messages"]]


def delete(browser, message, slug=None):
    return browser.delete(f"/api/rooms/{slug or message['room']}/messages/{message['id']}")


def restrict(moderator, slug, member, how: str) -> None:
    """Mute the member in the room, or lock the room."""
    response = moderator.mute(slug, member.username) if how == "mute" else moderator.post(f"/api/rooms/{slug}/lock")
    assert response.status_code in (200, 201), response.json


# Posting

def test_post_message_answers_the_message(member, room):
    response = member.send(room, "hello there", client_id="c-1")
    assert response.status_code == 201
    message = response.json["message"]
    assert_fields(message, room=room, body="hello there", client_id="c-1", deleted=False)
    assert_fields(message["sender"], id=member.user["id"], username=member.username)
    assert event_key(message["id"]) > (0, 0)
    assert TIME_FORMAT.match(message["created_at"])
    assert member.history(room).json["messages"] == [message]


def test_client_id_is_optional(member, room):
    first, second = member.send(room, "same"), member.send(room, "same")
    assert first.status_code == second.status_code == 201
    assert first.json["message"]["client_id"] is None
    assert first.json["message"]["id"] != second.json["message"]["id"]
    assert bodies(member, room) == ["same", "same"]


def test_messages_get_increasing_ids_in_the_order_they_were_posted(member, room):
    posted = post_all(member, room, ["one", "two", "three"])
    assert [event_key(m["id"]) for m in posted] == sorted(event_key(m["id"]) for m in posted)
    assert member.history(room).json["messages"] == posted


def test_any_signed_in_user_may_post_in_any_room(room, make_client):
    other = make_client()
    other.register()
    assert other.send(room, "hi from outside").status_code == 201


# Idempotent client_id

def test_a_repeated_client_id_answers_200_with_the_original(member, room):
    original = member.send(room, "first try", client_id="abc").json["message"]
    repeat = member.send(room, "a different body", client_id="abc")
    assert repeat.status_code == 200
    assert repeat.json["message"] == original
    assert member.history(room).json["messages"] == [original]


def test_repeats_of_a_client_id_racing_in_together_make_one_message_acknowledged_once(app, member, room):
    """A client that retries while its first attempt is still in flight: one 201, the rest 200, one message."""
    token, attempts = member.client.get_cookie("chat_session").value, 6
    start = threading.Barrier(attempts)

    def attempt(_):
        browser = app.test_client()
        browser.set_cookie("chat_session", token)
        start.wait(timeout=10)
        return browser.post(f"/api/rooms/{room}/messages", json={"body": "once", "client_id": "retried"},
                            headers=member.headers())

    with ThreadPoolExecutor(attempts) as pool:
        responses = list(pool.map(attempt, range(attempts)))
    assert sorted(response.status_code for response in responses) == [200] * (attempts - 1) + [201]
    assert len({response.json["message"]["id"] for response in responses}) == 1
    assert member.history(room).json["messages"] == [responses[0].json["message"]]


def test_a_repeat_racing_in_with_other_posts_costs_none_of_them(app, member, room):
    """Posts that arrive together are recorded together (group commit); a repeated client_id among them
    is answered with its original and every other post is still recorded, once, in the answered order."""
    token, bodies = member.client.get_cookie("chat_session").value, ["a", "b", "c", "d", "e", "f"]
    client_ids = ["same", "same", "same", "c1", "c2", "c3"]
    start = threading.Barrier(len(bodies))

    def attempt(index):
        browser = app.test_client()
        browser.set_cookie("chat_session", token)
        start.wait(timeout=10)
        return browser.post(f"/api/rooms/{room}/messages", json={"body": bodies[index], "client_id": client_ids[index]},
                            headers=member.headers())

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(attempt, range(len(bodies))))
    assert sorted(response.status_code for response in responses) == [200, 200, 201, 201, 201, 201]
    recorded = {response.json["message"]["id"]: response.json["message"] for response in responses}
    history = member.history(room).json["messages"]
    assert len(history) == 4 and {message["id"]: message for message in history} == recorded
    assert [message["id"] for message in history] == sorted(recorded, key=EventId.parse)


def test_a_client_id_is_scoped_to_the_sender_and_the_room(member, room, make_client):
    other_room = member.create_room()
    other = make_client()
    other.register()
    first = member.send(room, "mine", client_id="same")
    elsewhere = member.send(other_room, "mine elsewhere", client_id="same")
    theirs = other.send(room, "theirs", client_id="same")
    assert first.status_code == elsewhere.status_code == theirs.status_code == 201
    assert bodies(member, room) == ["mine", "theirs"]
    assert bodies(member, other_room) == ["mine elsewhere"]


def test_client_ids_of_the_allowed_alphabet_are_accepted(member, room):
    for client_id in ["a", "A-z_0-9", "x" * 64]:
        assert member.send(room, "hi", client_id=client_id).json["message"]["client_id"] == client_id


def test_invalid_client_ids_are_422(member, room):
    assert_refused(lambda client_id: member.send(room, "hi", client_id=client_id),
                   ["", "x" * 65, "has space", "dot.ted", "ünï", "newline\n", 7], 422, "validation_error", ["client_id"])
    assert bodies(member, room) == []


# Body rules

NORMALISED = [  # (sent, stored): CRLF and CR become LF, then surrounding whitespace is trimmed
    ("line one\r\nline two", "line one\nline two"),
    ("line one\rline two", "line one\nline two"),
    ("a\r\n\r\nb\r", "a\n\nb"),
    ("  \n\t padded \t\n  ", "padded"),
    ("\r\n keeps\tinner  space \r\n", "keeps\tinner  space"),
    ("émoji ✓ 😀", "émoji ✓ 😀"),
]


def test_the_body_is_normalised(member, room):
    for sent, stored in NORMALISED:
        assert member.send(room, sent).json["message"]["body"] == stored, sent
    assert bodies(member, room) == [stored for _, stored in NORMALISED]


def test_an_escaped_surrogate_pair_is_one_character(member, room):
    response = member.post(f"/api/rooms/{room}/messages", data='{"body": "\\ud83d\\ude00"}',
                           content_type="application/json")
    assert response.json["message"]["body"] == "😀"


def test_invalid_bodies_are_422(member, room):
    assert_refused(lambda body: member.send(room, body),
                   ["", "   ", "\r\n\t \r", None, 5,  # empty after trimming, not a string
                    "null \x00 byte", "bell\x07", "\x1b[31mred", "delete\x7f", "c1 \x85 control", "form\x0cfeed",
                    "vertical\x0btab"],  # control characters other than newline and tab
                   422, "validation_error", ["body"])
    assert bodies(member, room) == []


def test_a_missing_body_is_422(member, room):
    assert_error(member.post(f"/api/rooms/{room}/messages", json={"client_id": "x"}), 422, "validation_error",
                 ["body"])


def test_the_body_may_be_2000_characters_by_default(member, room):
    assert member.send(room, "\r\n  " + "x" * 2000 + "  \r\n").status_code == 201
    assert_error(member.send(room, "x" * 2001), 422, "validation_error", ["body"])


def test_chat_max_message_chars_sets_the_limit(make_app):
    member, slug = member_on(make_app(CHAT_MAX_MESSAGE_CHARS=5))
    assert member.send(slug, "  hello  ").status_code == 201
    assert_error(member.send(slug, "hello!"), 422, "validation_error", ["body"])


def test_a_request_over_chat_max_request_bytes_is_413(make_app):
    member, slug = member_on(make_app(CHAT_MAX_REQUEST_BYTES=1024))
    assert member.send(slug, "x" * 900).status_code == 201
    assert_error(member.send(slug, "x" * 1100), 413, "payload_too_large")
    assert len(bodies(member, slug)) == 1


def test_a_chunked_request_over_the_limit_is_413(member, room):
    """A body sent without Content-Length (chunked transfer) is cut off at the limit too."""
    oversized = io.BytesIO(b'{"body": "' + b"x" * (64 * 1024) + b'"}')
    response = member.post(f"/api/rooms/{room}/messages", input_stream=oversized, content_type="application/json",
                           environ_overrides={"wsgi.input_terminated": True})
    assert_error(response, 413, "payload_too_large")
    assert bodies(member, room) == []


def test_posting_to_an_unknown_room_is_404(member):
    assert_error(member.send("nowhere", "hi"), 404, "not_found")


# History

def test_history_of_an_empty_room(member, room):
    response = member.history(room)
    assert response.status_code == 200
    assert response.json["messages"] == [] and response.json["has_more"] is False
    event_key(response.json["cursor"])  # an event id, even before the first event


def test_history_of_an_unknown_room_is_404(member):
    assert_error(member.history("nowhere"), 404, "not_found")


def test_history_answers_the_newest_50_by_default_oldest_first(chatty):
    member, slug = chatty
    posted = post_all(member, slug, [f"message {n}" for n in range(51)])
    page = member.history(slug).json
    assert page["messages"] == posted[1:] and page["has_more"] is True
    assert member.history(slug, limit="", before="").json == page  # empty parameters mean "not given"


def test_paging_back_with_before_yields_everything_posted_in_order(chatty):
    member, slug = chatty
    posted = post_all(member, slug, [f"message {n}" for n in range(7)])
    for limit in (1, 3, 4, 7, 200):
        assert_pages_cover(read_all(member, slug, limit), posted, limit)


def forget(app, slug, how: str) -> None:
    """What Redis may no longer hold: the room's keys after a restart without persistence, or old entries
    trimmed by MAXLEN (done here exactly, to 3 entries, as `MAXLEN ~` would do over time)."""
    with app.app_context():
        room_streams = streams.current()
        if how == "lost":
            room_streams.redis.delete(room_streams.room_stream_key(slug), room_streams.tombstones_key(slug))
        else:
            room_streams.redis.xtrim(room_streams.room_stream_key(slug), maxlen=3, approximate=False)


@pytest.mark.parametrize("how", ["lost", "trimmed"])
def test_history_is_complete_beyond_what_redis_holds(chatty, how):
    member, slug = chatty
    older = post_all(member, slug, [f"old {n}" for n in range(6)])
    assert delete(member, older[1]).status_code == 200
    older[1] = {**older[1], "deleted": True, "body": ""}
    forget(member.client.application, slug, how)
    assert_pages_cover(read_all(member, slug, 2), older, 2)
    newer = post_all(member, slug, [f"new {n}" for n in range(4)])
    for limit in (1, 3, 4, 50):
        assert_pages_cover(read_all(member, slug, limit), older + newer, limit)


def test_history_has_no_more_before_the_first_message(member, room):
    first, second = post_all(member, room, ["first", "second"])
    assert member.history(room, before=second["id"]).json["messages"] == [first]
    assert member.history(room, before=second["id"]).json["has_more"] is False
    assert member.history(room, before=first["id"]).json["messages"] == []


def test_after_reads_what_follows_a_message_oldest_first(member, room):
    """`after=` (the project's addition, for a report's context): the oldest messages after an id, and
    whether newer ones exist; with `before`, only what lies between."""
    posted = post_all(member, room, [f"message {n}" for n in range(6)])
    page = member.history(room, after=posted[1]["id"], limit=3).json
    assert page["messages"] == posted[2:5] and page["has_more"] is True
    assert page["cursor"] == member.history(room).json["cursor"]
    assert member.history(room, after=posted[3]["id"]).json["messages"] == posted[4:]
    assert member.history(room, after=posted[3]["id"]).json["has_more"] is False
    assert member.history(room, after=posted[5]["id"]).json["messages"] == []
    assert member.history(room, after="0-0", before=posted[2]["id"]).json["messages"] == posted[:2]
    assert_refused(lambda after: member.history(room, after=after), ["abc", "1-"], 400, "invalid_cursor")


def test_nothing_comes_before_0_0(member, room):
    """`0-0` is a valid position (API.md), the one before a room's first event: a page before it is empty.
    (Redis refuses the exclusive range `(0-0`, which answered 503: found by tests/test_openapi.py.)"""
    post_all(member, room, ["first"])
    page = member.history(room, before="0-0")
    assert page.status_code == 200, page.json
    assert (page.json["messages"], page.json["has_more"]) == ([], False)
    assert page.json["cursor"] == member.history(room).json["cursor"]


def test_the_cursor_is_the_rooms_position_at_the_read(member, room, make_moderator):
    empty = event_key(member.history(room).json["cursor"])
    message = member.send(room, "hi").json["message"]
    assert member.history(room).json["cursor"] == message["id"] and event_key(message["id"]) > empty
    locked = make_moderator().post(f"/api/rooms/{room}/lock")
    assert locked.status_code == 200
    cursor = member.history(room).json["cursor"]  # the lock is an event after the message
    assert event_key(cursor) > event_key(message["id"])
    assert member.history(room, limit=1, before=message["id"]).json["cursor"] == cursor


def test_limit_outside_1_to_200_is_422(member, room):
    assert_refused(lambda limit: member.history(room, limit=limit), [0, -1, 201, "ten", "1.5"],
                   422, "validation_error", ["limit"])


def test_a_malformed_before_is_invalid_cursor(member, room):
    assert_refused(lambda before: member.history(room, before=before),
                   ["abc", "1-2-3", "-1", "1-", "12.5-1", "99999999999999999999999-0"], 400, "invalid_cursor")


# Deletion

def test_the_author_deletes_a_message_leaving_a_tombstone(member, room):
    kept, doomed = post_all(member, room, ["kept", "doomed"])
    response = delete(member, doomed)
    assert response.status_code == 200
    assert response.json["message"] == {**doomed, "deleted": True, "body": ""}
    assert member.history(room).json["messages"] == [kept, {**doomed, "deleted": True, "body": ""}]


def test_deleting_twice_answers_the_same_tombstone(member, room):
    message = member.send(room, "oops").json["message"]
    first, second = delete(member, message), delete(member, message)
    assert first.status_code == second.status_code == 200 and first.json == second.json


def test_a_moderator_may_delete_anyones_message(member, room, make_moderator):
    message = member.send(room, "rude").json["message"]
    response = delete(make_moderator(), message)
    assert response.status_code == 200 and response.json["message"]["deleted"] is True
    assert member.history(room).json["messages"][0]["body"] == ""


def test_others_may_not_delete_a_message(member, room, make_client):
    message = member.send(room, "mine").json["message"]
    other = make_client()
    other.register()
    assert_error(delete(other, message), 403, "forbidden")
    assert member.history(room).json["messages"] == [message]


def test_a_repeat_of_a_deleted_messages_client_id_answers_the_tombstone(member, room):
    message = member.send(room, "gone", client_id="once").json["message"]
    delete(member, message)
    repeat = member.send(room, "gone", client_id="once")
    assert repeat.status_code == 200 and repeat.json["message"] == {**message, "deleted": True, "body": ""}
    assert len(member.history(room).json["messages"]) == 1


def test_deleting_an_unknown_message_is_404(member, room):
    member.send(room, "present")
    assert_refused(lambda message_id: member.delete(f"/api/rooms/{room}/messages/{message_id}"),
                   ["999999999999-0", "1-0", "not-an-id", "abc"], 404, "not_found")
    assert bodies(member, room) == ["present"]


def test_a_message_is_deleted_only_through_its_own_room(member, room):
    message = member.send(room, "here").json["message"]
    assert_error(delete(member, message, slug=member.create_room()), 404, "not_found")
    assert_error(delete(member, message, slug="nowhere"), 404, "not_found")
    assert member.history(room).json["messages"] == [message]


# Rate limit

@pytest.fixture
def limited(make_app):
    """An app that lets each user post 3 messages per room per minute."""
    return make_app(CHAT_RATE_LIMIT="3/60")


def test_posting_over_the_rate_limit_is_429_with_retry_after(limited):
    member, slug = member_on(limited)
    post_all(member, slug, ["1", "2", "3"])
    response = member.send(slug, "4")
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert bodies(member, slug) == ["1", "2", "3"]


def test_the_rate_limit_is_per_user_and_room(limited):
    member, slug = member_on(limited)
    other, elsewhere = member_on(limited)
    post_all(member, slug, ["1", "2", "3"])
    assert member.send(elsewhere, "another room").status_code == 201
    assert other.send(slug, "another user").status_code == 201


def test_a_repeated_client_id_is_answered_even_over_the_rate_limit(limited):
    member, slug = member_on(limited)
    first = member.send(slug, "1", client_id="c1").json["message"]
    post_all(member, slug, ["2", "3"])
    repeat = member.send(slug, "1", client_id="c1")
    assert repeat.status_code == 200 and repeat.json["message"] == first


def test_messages_per_account_are_limited_across_rooms(make_app):
    """CHAT_USER_RATE_LIMIT counts a user's messages in every room together: many rooms are not many times
    the rate. A refused post counts nowhere, and other users are not affected."""
    app = make_app(CHAT_USER_RATE_LIMIT="4/60")
    member, first = member_on(app)
    rooms = [first] + [member.create_room() for _ in range(3)]
    for slug in rooms:
        assert member.send(slug, f"in {slug}").status_code == 201
    refused = member.send(rooms[0], "a fifth, anywhere")
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert_error(member.send(member.create_room(), "a new room changes nothing"), 429, "rate_limited")
    other, _ = member_on(app)
    assert other.send(rooms[0], "someone else").status_code == 201
    assert [bodies(member, slug) for slug in rooms] == [[f"in {rooms[0]}", "someone else"]] + \
        [[f"in {slug}"] for slug in rooms[1:]]


def test_message_bytes_per_account_are_limited(make_app):
    """CHAT_USER_BYTES_LIMIT counts the UTF-8 bytes of a user's messages in every room together (an emoji is
    four): a flood of maximum-size messages is stopped long before it can fill Redis."""
    app = make_app(CHAT_USER_BYTES_LIMIT="10000/60")
    member, slug = member_on(app)
    big = "\U0001f345" * 1000  # 1,000 characters, 4,000 bytes
    assert member.send(slug, big).status_code == 201
    assert member.send(member.create_room(), big).status_code == 201
    assert_error(member.send(slug, big), 429, "rate_limited")  # 12,000 bytes would pass 10,000
    assert member.send(slug, "small is still fine").status_code == 201  # 8,019 bytes


# The order of checks: 401, 403 csrf_failed, 403 banned / forbidden, 404, 413 / 415 / 400, 422,
# 403 muted / room_locked, 429

def test_a_ban_is_answered_after_csrf_and_before_404(member, room, make_moderator):
    assert make_moderator().ban(member.username).status_code == 201
    assert_error(member.client.post(f"/api/rooms/{room}/messages", json={"body": "x"}), 403, "csrf_failed")
    assert_error(member.send("nowhere", ""), 403, "banned")


def test_404_is_answered_before_the_body_is_read(member):
    assert_refused(lambda bad: member.post("/api/rooms/nowhere/messages", data=bad[0], content_type=bad[1]),
                   BAD_BODIES, 404, "not_found")


def test_413_is_answered_before_415(member, room):
    response = member.post(f"/api/rooms/{room}/messages", data="x" * (65 * 1024), content_type="text/plain")
    assert_error(response, 413, "payload_too_large")


def test_413_is_answered_before_422(member, room):
    assert_error(member.send(room, "x" * (65 * 1024)), 413, "payload_too_large")


@pytest.mark.parametrize("restriction", ["mute", "lock"])
def test_422_is_answered_before_muted_or_locked(member, room, make_moderator, restriction):
    restrict(make_moderator(), room, member, restriction)
    assert_error(member.send(room, ""), 422, "validation_error", ["body"])


@pytest.mark.parametrize(("restriction", "code"), [("mute", "muted"), ("lock", "room_locked")])
def test_muted_or_locked_is_answered_before_429(make_app, make_moderator, restriction, code):
    limited = make_app(CHAT_RATE_LIMIT="1/60")
    member, slug = member_on(limited)
    assert member.send(slug, "my one message").status_code == 201
    restrict(make_moderator(on=limited), slug, member, restriction)
    assert_error(member.send(slug, "one more"), 403, code)
