"""Every cursor, fuzzed with hypothesis (issue 11): `Last-Event-ID` and `last_event_id` / `lastEventId` of the
streams, the polls' `cursor`, the history's `before`, on a room's endpoints, the several-rooms feed and the
moderators' feed. Whatever the text: never a 5xx; a well-formed event id (two decimal integers of at
most 2^64 - 1, API.md) answers 2xx, anything else `400 invalid_cursor`, and an empty one means none given.
From a well-formed position, the events are exactly those after it (before it, for the history).

Against the session's live gunicorn: the streams need a real reader, and the polls' fast lane is part of
what is fuzzed. Derandomized and bounded, like tests/test_openapi.py: the same cases every run."""
import re

import pytest
import requests
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.support import UNLIMITED_POSTING, LiveServer, SSEClient, event_key, live_moderator, posted

MAX_PART = 2**64 - 1
MESSAGES = 12

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                phases=[Phase.explicit, Phase.generate])

EDGES = ["", "0-0", "0", "-", "a-b", "1-", "-1", "-1-0", "1--1", "0-0-0", "1_000-1", "1.5-0", "+1-0", "0x10-0",
         "\u0661-\u0661", "\uff11-\uff11", "1-1\x00", "1" * 21 + "-0", "1" * 400 + "-1", f"{MAX_PART}-{MAX_PART}",
         f"{MAX_PART + 1}-0", f"0-{MAX_PART + 1}", f"{2**63}-0", f"{2**63 - 1}-{2**63 - 1}", "00000000000000000001-0"]
# Arbitrary text (unicode, empty, overlong), integers of any size and sign, and `a-b` shapes of both.
CURSORS = st.one_of(st.sampled_from(EDGES), st.text(max_size=40), st.text(max_size=400, alphabet="0123456789-"),
                    st.integers().map(str),
                    st.builds("{}-{}".format, st.integers(-2**70, 2**70), st.integers(-2**70, 2**70)))
# What an HTTP header can carry (latin-1, no control characters; HTTP drops surrounding blanks).
HEADER_CURSORS = CURSORS.map(lambda text: "".join(c for c in text if " " <= c <= "\xff" and c != "\x7f").strip())


def well_formed(text: str) -> bool:
    """API.md's event id, written out again independently of chat/ids.py: ASCII digits only."""
    match = re.fullmatch(r"([0-9]{1,20})-([0-9]{1,20})", text)
    return bool(match) and int(match[1]) <= MAX_PART and int(match[2]) <= MAX_PART


def check_status(answer: requests.Response, cursor: str) -> None:
    assert answer.status_code < 500, (cursor, answer.status_code, answer.text[:200])
    if cursor == "" or well_formed(cursor):
        assert answer.status_code == 200, (cursor, answer.status_code, answer.text[:200])
    else:
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_cursor", (cursor, answer.text)


@pytest.fixture(scope="module")
def server(services):
    # Neither the posting limits nor the stream cap is under test: an example posts, and each opens a stream
    # whose place is given back only at its next heartbeat.
    server = LiveServer(services, CHAT_MAX_STREAMS_PER_USER=100000, **UNLIMITED_POSTING)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(server):
    """A room with a few messages, a moderator, and the positions the feeds gave those messages."""
    user = server.user()
    slug = user.create_room()
    moderator = live_moderator(server)
    feed_tail = user.get("/api/poll", params={"rooms": slug, "timeout": 0}).json()["cursor"]
    ids = [posted(user, slug, f"message {n} \u2028 \U0001F600")["id"] for n in range(MESSAGES)]
    feed = user.get("/api/poll", params={"rooms": slug, "cursor": feed_tail, "timeout": 0}).json()["events"]
    assert [event["data"]["id"] for event in feed] == ids
    # The stream test posts as it goes: its own room, so that the others' expectations stay put.
    streamed = user.create_room()
    return {"user": user, "moderator": moderator, "slug": slug, "ids": ids, "feed_ids": [e["id"] for e in feed],
            "streamed": streamed, "streamed_ids": [posted(user, streamed)["id"] for _ in range(MESSAGES)]}


# A well-formed position near the world's: one of them, one below or above it in either part.
POSITION = st.tuples(st.integers(0, MESSAGES - 1), st.sampled_from([(0, 0), (0, -1), (0, 1), (-1, 0), (1, 0)]))


def after(ids: list, position: str) -> list:
    return [i for i in ids if event_key(i) > event_key(position)]


def at(world, positions_key: str, choice) -> str:
    index, (d_ms, d_seq) = choice
    ms, seq = event_key(world[positions_key][index])
    return f"{ms + d_ms}-{max(0, seq + d_seq)}"


# Any text: the status rules.

POLLS = {"room": lambda w: (w["user"], f"/api/rooms/{w['slug']}/poll", {}),
         "feed": lambda w: (w["user"], "/api/poll", {"rooms": w["slug"]}),
         "moderators": lambda w: (w["moderator"], "/api/moderation/poll", {})}
STREAMS = {"room": lambda w: (w["user"], f"/api/rooms/{w['slug']}/events", {}),
           "feed": lambda w: (w["user"], "/api/events", {"rooms": w["slug"]}),
           "moderators": lambda w: (w["moderator"], "/api/moderation/events", {})}


@pytest.mark.parametrize("endpoint", POLLS)
@FUZZ
@given(cursor=CURSORS)
def test_any_poll_cursor_is_2xx_or_invalid_cursor(world, endpoint, cursor):
    user, path, params = POLLS[endpoint](world)
    for _ in range(2):  # the second, with the session known, may be answered by the fast lane
        check_status(user.get(path, params={**params, "cursor": cursor, "timeout": 0}, timeout=10), cursor)


@FUZZ
@given(before=CURSORS)
def test_any_history_before_is_2xx_or_invalid_cursor(world, before):
    answer = world["user"].get(f"/api/rooms/{world['slug']}/messages", params={"before": before, "limit": 200})
    check_status(answer, before)


def test_every_edge_case_on_every_cursor_every_run(world):
    """The edge cases above, each on every cursor (the fuzzing draws only some of them on a given run)."""
    for cursor in EDGES:
        for endpoint in POLLS:
            user, path, params = POLLS[endpoint](world)
            check_status(user.get(path, params={**params, "cursor": cursor, "timeout": 0}, timeout=10), cursor)
        check_status(world["user"].get(f"/api/rooms/{world['slug']}/messages", params={"before": cursor}), cursor)
        for endpoint in STREAMS:
            user, path, params = STREAMS[endpoint](world)
            stream = open_stream(user, path, {**params, "last_event_id": cursor})
            try:
                check_status(stream.response, cursor)
            finally:
                stream.close()


def open_stream(user, path, params, header=None) -> SSEClient:
    return SSEClient(user.http, user.base_url + path, last_event_id=header, params=params)


@pytest.mark.parametrize("endpoint", STREAMS)
@pytest.mark.parametrize("where", ["Last-Event-ID", "last_event_id", "lastEventId"])
@FUZZ
@given(cursor=HEADER_CURSORS)
def test_any_stream_start_position_is_2xx_or_invalid_cursor(world, endpoint, where, cursor):
    user, path, params = STREAMS[endpoint](world)
    header = cursor if where == "Last-Event-ID" else None
    stream = open_stream(user, path, params if header is not None else {**params, where: cursor}, header)
    try:
        check_status(stream.response, cursor)
        if stream.status == 200:
            assert stream.next(timeout=5).event == "ready"
    finally:
        stream.close()


# Well-formed positions: exactly the events after them.

@pytest.mark.parametrize("endpoint", POLLS)
@FUZZ
@given(choice=POSITION)
def test_a_poll_from_a_position_answers_exactly_what_came_after_it(world, endpoint, choice):
    positions = world["ids" if endpoint == "room" else "feed_ids"]
    position = at(world, "ids" if endpoint == "room" else "feed_ids", choice)
    user, path, params = POLLS[endpoint](world)
    answer = user.get(path, params={**params, "rooms": world["slug"], "cursor": position, "timeout": 0}
                      if endpoint != "room" else {"cursor": position, "timeout": 0}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert [event["id"] for event in answer.json()["events"] if event["id"]] == after(positions, position)


@FUZZ
@given(choice=POSITION)
def test_the_history_before_a_position_is_exactly_what_came_before_it(world, choice):
    position = at(world, "ids", choice)
    answer = world["user"].get(f"/api/rooms/{world['slug']}/messages", params={"before": position, "limit": 200})
    assert answer.status_code == 200, answer.text
    assert [message["id"] for message in answer.json()["messages"]] == \
        [i for i in world["ids"] if event_key(i) < event_key(position)]


@pytest.mark.parametrize("where", ["Last-Event-ID", "last_event_id"])
@FUZZ
@given(choice=POSITION)
def test_a_stream_from_a_position_sends_exactly_what_came_after_it_then_goes_on(world, where, choice):
    user, slug, ids = world["user"], world["streamed"], world["streamed_ids"]
    position = at(world, "streamed_ids", choice)
    expected = after(ids, position)
    header = position if where == "Last-Event-ID" else None
    stream = open_stream(user, f"/api/rooms/{slug}/events", {} if header else {where: position}, header)
    try:
        assert stream.status == 200
        assert stream.next(timeout=5).event == "ready"
        got = [stream.next_durable(timeout=5).id for _ in expected]
        # Nothing more of the past: the next event is the one posted now.
        ids.append(posted(user, slug)["id"])
        assert stream.next_durable(timeout=5).id == ids[-1]
    finally:
        stream.close()
    assert got == expected
