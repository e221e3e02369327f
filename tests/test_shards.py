"""Rooms spread over several shards on one Redis (issue 12): two gunicorn instances with CHAT_SHARDS=4 under a key
prefix of their own, and the contract's live tests (the cluster module's list) run against them, so every room
stream, poll, feed and resume goes through a reader per shard and the feeds' positions per shard. Then what only
several shards have: a feed's position of one id per shard, resumed exactly across shards, and a position of
another number of shards answered with `reset`.
"""
import threading

import pytest
import redis

from chat.ids import FeedPosition
from chat.streams import Streams, shard_of
from tests import test_resume
from tests.conftest import reset_state
from tests.support import LiveServer, posted, room_name_in_shard, same_session
from tests.test_cluster import CONTRACT_TESTS

SHARDS = 4
FEED = "/api/events"

globals().update({test.__name__: test for test in CONTRACT_TESTS})


@pytest.fixture(scope="module")
def sharded_services(services):
    """The run's Redis and database, under a key prefix of this module's own: these servers' keys never meet the
    single-shard servers' of the other modules."""
    return {**services, "prefix": services["prefix"] + "-shards"}


def _sharded_server(sharded_services) -> LiveServer:
    server = LiveServer(sharded_services, workers=2, CHAT_SHARDS=SHARDS, **test_resume.SETTINGS)
    server.start()
    return server


@pytest.fixture(scope="module")
def sharded_live(sharded_services):
    server = _sharded_server(sharded_services)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_server(sharded_services, sharded_live):
    server = _sharded_server(sharded_services)
    yield server
    server.stop()


@pytest.fixture
def live(sharded_live, sharded_services):
    reset_state(sharded_services)
    return sharded_live


@pytest.fixture
def first_server(live):  # test_resume's name for it
    return live


@pytest.fixture
def second_server(other_server):
    return other_server


def _rooms_on_distinct_shards(user, count: int) -> list[str]:
    """`count` new rooms, each on a different shard (the slug decides: streams.shard_of)."""
    return [user.create_room(room_name_in_shard(shard, SHARDS)) for shard in range(count)]


def test_each_room_s_events_go_to_its_own_shard(live, sharded_services):
    alice = live.user()
    rooms = _rooms_on_distinct_shards(live.user(), SHARDS)
    for slug in rooms:
        posted(alice, slug, f"hello {slug}")
    client = redis.Redis.from_url(sharded_services["redis_url"], decode_responses=True)
    try:
        names = Streams(client, sharded_services["prefix"], 1, shards=SHARDS)
        for slug in rooms:
            shard = shard_of(slug, SHARDS)
            firehose = client.xrange(names.firehose_key(shard))
            assert slug in {fields.get("room") for _, fields in firehose}, slug
            others = {fields.get("room") for other in range(SHARDS) if other != shard
                      for _, fields in client.xrange(names.firehose_key(other))}
            assert slug not in others, slug
    finally:
        client.close()


def test_a_feed_over_rooms_of_every_shard_resumes_exactly_from_any_of_its_positions(live, other_server):
    """Posters write to one room on each shard at once; a reader follows all four on one instance, drops after a
    few events, and resumes on the other instance from its last position: every room's messages exactly once,
    in order. The positions carry one id per shard."""
    reader, posters = live.user(), [live.user() for _ in range(SHARDS)]
    rooms = _rooms_on_distinct_shards(live.user(), SHARDS)
    accepted = {slug: [] for slug in rooms}
    feed = reader.events(FEED, params={"rooms": ",".join(rooms)})
    start = feed.next(timeout=5).json()["cursor"]
    assert len(FeedPosition.parse(start)) == SHARDS

    def write(poster, slug):
        for n in range(8):
            accepted[slug].append(posted(poster, slug, f"{slug} {n}")["id"])

    writers = [threading.Thread(target=write, args=pair) for pair in zip(posters, rooms)]
    for writer in writers:
        writer.start()
    try:
        first_part = [feed.next_durable(timeout=20) for _ in range(10)]
    finally:
        feed.close()
    for writer in writers:
        writer.join(60)
    assert all(len(ids) == 8 for ids in accepted.values()), accepted
    position = first_part[-1].id
    assert len(FeedPosition.parse(position)) == SHARDS

    resumed = same_session(reader, other_server).events(FEED, params={"rooms": ",".join(rooms)},
                                                        last_event_id=position)
    try:
        assert resumed.next(timeout=5).json()["cursor"] == position
        rest = [resumed.next_durable(timeout=20) for _ in range(SHARDS * 8 - len(first_part))]
    finally:
        resumed.close()
    got = [event.json() for event in first_part + rest]
    for slug in rooms:
        assert [data["id"] for data in got if data["room"] == slug] == accepted[slug], slug


def test_a_position_of_another_number_of_shards_is_answered_with_reset(live):
    alice = live.user()
    slug = alice.create_room()
    posted(alice, slug, "before")
    feed = alice.events(FEED, params={"rooms": slug}, last_event_id="1-0")  # one shard's position
    try:
        assert feed.next(timeout=5).event == "ready"
        assert [event.event for event in _until_durable_or_reset(feed)][-1] == "reset"
    finally:
        feed.close()
    answer = alice.get("/api/poll", params={"rooms": slug, "cursor": "1-0.1-0", "timeout": 0})
    assert answer.status_code == 200
    assert [item["event"] for item in answer.json()["events"]] == ["reset"]
    assert len(FeedPosition.parse(answer.json()["cursor"])) == SHARDS


def _until_durable_or_reset(feed) -> list:
    """The events a stream sends after `ready` up to its first durable event or `reset` (presence comes first)."""
    seen = [feed.next(timeout=5)]
    while seen[-1].id is None and seen[-1].event != "reset":
        seen.append(feed.next(timeout=5))
    return seen



def test_changing_the_number_of_shards_keeps_every_room_s_history_and_resumes(sharded_services):
    """An operator stops the service, raises CHAT_SHARDS from 1 to 4 and starts it again: a room that moved to
    another shard keeps its whole history, a stream resumes from a position taken before exactly (what is older
    than its new stream comes from the database), and a feed position of one part gets `reset`."""
    services = {**sharded_services, "prefix": sharded_services["prefix"] + "-resharded"}
    before = LiveServer(services, workers=1)  # one shard
    before.start()
    try:
        alice = before.user()
        slug = alice.create_room(room_name_in_shard(2, SHARDS))  # shard 0 with one shard, shard 2 with four
        old = [posted(alice, slug, f"before {n}")["id"] for n in range(3)]
        feed_position = alice.get("/api/poll", params={"rooms": slug, "timeout": 0}).json()["cursor"]
    finally:
        before.stop()
    after = LiveServer(services, workers=1, CHAT_SHARDS=SHARDS)
    after.start()
    try:
        alice = same_session(alice, after)
        stream = alice.events(f"/api/rooms/{slug}/events", last_event_id=old[0])
        try:
            new = posted(alice, slug, "after")["id"]
            assert [stream.next_durable(timeout=10).id for _ in range(3)] == [*old[1:], new]
        finally:
            stream.close()
        history = alice.get(f"/api/rooms/{slug}/messages").json()["messages"]
        assert [message["id"] for message in history] == [*old, new]
        answer = alice.get("/api/poll", params={"rooms": slug, "cursor": feed_position, "timeout": 0}).json()
        assert [item["event"] for item in answer["events"]] == ["reset"]
    finally:
        after.stop()
