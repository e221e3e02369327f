"""The service on a real Redis Cluster (issue 12, first step): three masters and three replicas of the test's own
(tests/cluster.py), two gunicorn instances of two workers each with REDIS_CLUSTER=1, and the contract's live
paths run against them: the same tests as on one Redis, imported from their modules, with `live`,
`other_server` and `first_server` overridden here. A script or multi-key command whose keys were in several
slots would fail them (redis-py refuses it, or the server answers CROSSSLOT).
"""
import functools
import itertools
import threading
import time
import zlib

import pytest
import requests
from redis.cluster import RedisCluster

from chat import create_app, streams
from chat.extensions import connect
from chat.streams import Streams, shard_of
from tests import test_live_feed, test_live_poll, test_live_sse, test_moderation_feed, test_resume, test_scale_out
from tests.cluster import PrivateCluster
from tests.conftest import app_config, close_app, reset_state
from tests.support import (LiveServer, free_port, another_session, event_key, events_path, history_ids, live_moderator, poll_path,
                           posted, room_name_in_shard, same_session, unique, wait_until)

SHARDS = 3  # rooms spread over the three masters' slots (where the shards' slots fall: the cluster decides)

# The contract's live tests, collected here a second time to run on the cluster (with this module's fixtures).
CONTRACT_TESTS = [
    test_live_poll.test_waits_then_wakes_on_a_new_durable_event,
    test_live_poll.test_logout_during_a_waiting_poll_answers_401_within_2_seconds,
    test_live_poll.test_ban_during_a_waiting_poll_answers_403_banned_within_2_seconds,
    test_live_sse.test_start_from_last_event_id_header_and_query_parameters,
    test_live_sse.test_message_deletion_mute_and_lock_events_carry_the_contract_fields,
    test_live_sse.test_logout_ends_that_sessions_stream_but_not_another_session,
    test_live_sse.test_ban_ends_every_stream_of_the_user,
    test_live_feed.test_a_user_follows_the_listed_rooms_over_one_stream,
    test_live_feed.test_exact_resume_while_several_posters_write_and_the_list_changes,
    test_live_feed.test_the_poll_waits_then_wakes_for_a_listed_room_only,
    test_live_feed.test_logout_ends_the_feed,
    test_moderation_feed.test_every_durable_event_of_every_room_with_its_room,
    test_moderation_feed.test_resume_by_last_event_id_is_exact_across_rooms,
    test_moderation_feed.test_moderation_poll_waits_and_wakes,
    test_moderation_feed.test_bans_reach_every_moderators_feed_and_never_a_room_or_the_several_rooms_feed,
    test_moderation_feed.test_the_moderators_feed_carries_presence_of_every_room_where_someone_is,
    test_scale_out.test_messages_posted_on_one_instance_reach_subscribers_of_the_other_in_order,
    test_scale_out.test_logout_on_one_instance_ends_the_stream_held_on_the_other,
    test_resume.test_torture_across_two_instances,
]
globals().update({test.__name__: test for test in CONTRACT_TESTS})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server = PrivateCluster(tmp_path_factory.mktemp("cluster"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def cluster_services(services, cluster):
    """The run's database and key prefix, with the cluster for Redis: REDIS_URL names the master of shard 0's
    slot, the one the failover test kills (the hardest case: the node the app was told of is gone)."""
    client = connect(cluster.url, cluster=True, max_connections=1)
    slot = client.keyslot(Streams(client, services["prefix"], 1).firehose_key())
    client.close()
    return {**services, "redis_url": f"redis://127.0.0.1:{cluster.master_of(slot)}/0", "cluster": True}


@pytest.fixture(scope="module")
def live_on_cluster(cluster_services):
    """Posting unlimited and about 10 entries per room kept in Redis (test_resume's settings): resumes from
    further back are served from the database."""
    server = LiveServer(cluster_services, workers=2, CHAT_SHARDS=SHARDS, **test_resume.SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_server(cluster_services, live_on_cluster):
    """A second instance on the same cluster and database (test_scale_out's)."""
    server = LiveServer(cluster_services, workers=2, CHAT_SHARDS=SHARDS, **test_resume.SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live(live_on_cluster, cluster_services):
    reset_state(cluster_services)
    return live_on_cluster


@pytest.fixture
def first_server(live):  # test_resume's name for it
    return live


@pytest.fixture
def second_server(other_server):
    return other_server


@pytest.fixture
def cluster_client(cluster_services):
    client = connect(cluster_services["redis_url"], cluster=True, max_connections=4)
    yield client
    client.close()


def test_the_app_talks_to_the_cluster_through_the_cluster_client(cluster_services, cluster_client):
    app = create_app(app_config(cluster_services, REDIS_CLUSTER=True), instance_path=cluster_services["instance"])
    try:
        with app.app_context():
            assert isinstance(streams.current().redis, RedisCluster)
            reader = streams.current().reader()
            assert isinstance(reader, RedisCluster)
            reader.close()
    finally:
        close_app(app)
    # One key per master at least: the cluster really spreads keys, so one slot per shard is a choice.
    owners = {cluster_client.get_node_from_key(f"probe:{n}").name for n in range(30)}
    assert len(owners) == PrivateCluster.MASTERS


def test_every_key_of_a_room_is_in_its_shards_slot(live, cluster_client):
    """After a room's life (messages, a deletion, presence, slow mode), every key the service wrote for it, found
    by scanning the whole cluster, is in the slot of its shard's firehose, incarnation and presence streams (a
    room of shard 1: shard 0's are also the control stream's and the bans')."""
    moderator, author = live_moderator(live), live.user()
    slug = author.create_room(room_name_in_shard(1, SHARDS))
    stream = author.events(events_path(slug))
    try:
        assert stream.next(timeout=5).event == "ready"
        message = posted(author, slug)
        assert author.delete(f"/api/rooms/{slug}/messages/{message['id']}").status_code == 200
        assert moderator.post(f"/api/rooms/{slug}/slow_mode", json={"seconds": 60}).status_code == 200
        posted(author, slug)
        assert [stream.next_durable().event for _ in range(4)] == \
            ["message", "message_deleted", "room_updated", "message"]
        names = Streams(cluster_client, live.services["prefix"], 1, shards=SHARDS)
        written = list(cluster_client.scan_iter(f"*:room:{slug}:*", count=1000))  # while the stream is present
    finally:
        stream.close()
    assert {names.room_stream_key(slug), names.tombstones_key(slug), names.presence_key(slug),
            names.slow_mode_key(slug, author.user["id"])} <= set(written), written
    shard_keys = [names.firehose_key(1), names.incarnation_key(1), names.presence_rooms_key(1),
                  names.presence_changes_key(1)]
    assert len({cluster_client.keyslot(key) for key in [*written, *shard_keys]}) == 1
    assert len({cluster_client.keyslot(key) for key in [names.firehose_key(0), names.control_key(),
                                                        names.feed_event_key(1)]}) == 1


def test_ready_on_the_cluster(live):
    """/readyz asks every master for its eviction policy and checks this process's reader keeps up."""
    answer = requests.get(live.url + "/readyz", timeout=5)
    assert answer.status_code == 200 and answer.json()["redis"] == "ok", answer.text


def test_a_rooms_shard_is_the_crc32_of_its_slug():
    """Documented (docs/ARCHITECTURE.md) and stable across processes: zlib's CRC-32, not Python's salted hash()."""
    assert [shard_of(slug, 4) for slug in ("general", "random", "ops-2026")] == \
        [zlib.crc32(slug.encode()) % 4 for slug in ("general", "random", "ops-2026")] == [2, 1, 1]
    assert {shard_of(f"room-{n}", 1) for n in range(50)} == {0}


@pytest.mark.parametrize("settings, refusal", [
    ({"CHAT_SHARDS": 17}, "CHAT_SHARDS=17 is out of range: 1 to 16"),
    ({"CHAT_SHARDS": 0}, "CHAT_SHARDS=0 is out of range"),
    ({"REDIS_CLUSTER": True, "REDIS_URL": None}, "REDIS_CLUSTER=1 needs REDIS_URL"),
    ({"REDIS_URL": "redis://10.0.0.1:6379/0,10.0.0.2:6379"}, "only a Redis Cluster has them"),
])
def test_settings_not_supported_yet_are_refused_at_startup(services, settings, refusal):
    with pytest.raises(RuntimeError, match=refusal):
        create_app(app_config(services, **settings), instance_path=services["instance"])


def test_a_process_starts_while_the_first_node_redis_url_names_is_down(cluster_services, cluster):
    """REDIS_URL may name several nodes: a process started while the first one is down (nothing listens on
    its port) finds the cluster through the next, and serves."""
    nodes = f"redis://127.0.0.1:{free_port()}/0,127.0.0.1:{cluster.master_of(0)}"
    server = LiveServer({**cluster_services, "redis_url": nodes}, workers=1, CHAT_SHARDS=SHARDS)
    server.start()
    try:
        answer = requests.get(server.url + "/readyz", timeout=10)
        assert answer.status_code == 200 and answer.json()["redis"] == "ok", answer.text
        user = server.user()
        posted(user, user.create_room())
    finally:
        server.stop()


def _refused_for_now(response) -> bool:
    """503 with Retry-After: the page waits as asked and tries again (a 500 it would show as a failure)."""
    return response.status_code == 503 and int(response.headers["Retry-After"]) >= 1


def _posted_as_the_page_does(user, slug, body, client_id, timeout=30) -> dict:
    """Post, and after a 503 post again with the same client_id once Retry-After has passed."""
    deadline = time.monotonic() + timeout
    while True:
        response = user.send(slug, body, client_id=client_id)
        if response.status_code in (200, 201):
            return response.json()["message"]
        assert _refused_for_now(response) and time.monotonic() < deadline, (response.status_code, response.text)
        time.sleep(float(response.headers["Retry-After"]))


def _follow(user, slug, position, timeout=30):
    """Durable events (and resets) after `position`, by SSE, as EventSource follows a room: when the stream
    ends, or is refused for now, it connects again from the last id it got."""
    deadline = time.monotonic() + timeout
    while True:
        stream = user.events(events_path(slug), last_event_id=position)
        try:
            if stream.status != 200:
                assert _refused_for_now(stream.response), (stream.status, stream.response.text)
                assert time.monotonic() < deadline, "refused until the deadline"
                time.sleep(float(stream.headers["Retry-After"]))
                continue
            while True:
                event = stream.wait_for(lambda e: e.id is not None or e.event == "reset",
                                        timeout=max(0.1, deadline - time.monotonic()))
                position = event.id or position
                yield event
        except AssertionError as error:
            if "the stream ended" not in str(error):
                raise
        finally:
            stream.close()


@pytest.mark.parametrize("others_served", [False, True], ids=["every-slot-refused", "one-slot-refused"])
def test_while_no_node_serves_a_rooms_slot_the_page_is_told_to_retry_then_gets_everything_once(
        cluster, live, cluster_client, others_served):
    """While no node serves the slot of a room's keys (as between a master's failure and its replica's
    promotion), redis-py's cluster client raises errors outside RedisError (RedisClusterException): the room
    answers 503 with Retry-After, never 500. With the nodes' default (cluster-require-full-coverage yes) every
    node refuses every command, so posts are refused too; with `no` only that slot fails, and a post is still
    acknowledged (the database's record is the acknowledgement; it is published once the slot is back).
    Afterwards a post retried with its client_id is one message, and the stream and the poll deliver each
    message once, in order, and then what is posted next."""
    user = live.user()
    slug = user.create_room()
    cursor = user.get(f"/api/rooms/{slug}/messages").json()["cursor"]
    slot = cluster_client.keyslot(Streams(cluster_client, live.services["prefix"], 1, shards=SHARDS).room_stream_key(slug))
    client_id, body = unique("c"), "posted while no node serves the room's slot"
    with cluster.slot_unserved(slot, others_served):
        during = user.send(slug, body, client_id=client_id)
        assert during.status_code == 201 if others_served else _refused_for_now(during), \
            (during.status_code, during.text)
        polled = user.get(poll_path(slug), params={"cursor": cursor, "timeout": 0})
        assert _refused_for_now(polled), (polled.status_code, polled.text)
        stream = user.events(events_path(slug), last_event_id=cursor)
        stream.close()
        assert _refused_for_now(stream.response), (stream.status, stream.response.text)
    first = _posted_as_the_page_does(user, slug, body, client_id)
    second = posted(user, slug)
    assert history_ids(user, slug) == [first["id"], second["id"]]
    assert [event["id"] for event in test_resume.poll_from(user, slug, cursor, 2)] == [first["id"], second["id"]]
    follower = _follow(user, slug, cursor)
    try:
        assert [(event.event, event.id) for event in itertools.islice(follower, 2)] == \
            [("message", first["id"]), ("message", second["id"])]
        third = posted(user, slug)  # reaches the stream live (or by its resume, if the server ended it)
        event = next(follower)
        assert (event.event, event.id) == ("message", third["id"])
    finally:
        follower.close()


def _follow_feed(servers, user, slug, position, shown, resets):
    """The several-rooms feed listing `slug`, by SSE from the feed `position`, kept as the page keeps it
    (API.md): reconnecting from its last id when the stream ends or is refused for now; on `reset`, the room's
    history reloaded and shown instead, and from then on only the messages after it."""
    total, connection, shown_upto = test_resume.POSTERS * test_resume.PER_POSTER, 0, None
    deadline = time.monotonic() + 80
    while len(shown) < total and time.monotonic() < deadline:
        viewer = same_session(user, servers[connection % len(servers)])
        connection += 1
        stream = viewer.events("/api/events", params={"rooms": slug}, last_event_id=position)
        try:
            if stream.status != 200:
                test_resume._back_off(stream.response)
                continue
            while len(shown) < total:
                event = stream.wait_for(lambda e: e.id is not None or e.event == "reset", timeout=15)
                if event.event == "reset":
                    resets.append(event.json()["reason"])
                    reloaded = history_ids(viewer, slug)
                    assert shown == reloaded[:len(shown)], "the feed had skipped or repeated a message before its reset"
                    shown[:] = reloaded
                    shown_upto = shown[-1] if shown else None
                    continue
                assert event.event == "message" and event.json()["room"] == slug, (event.event, event.data)
                position = event.id
                if shown_upto is None or event_key(event.json()["id"]) > event_key(shown_upto):
                    shown.append(event.json()["id"])
        except AssertionError as error:
            if "the stream ended" not in str(error):
                raise
        finally:
            stream.close()


def test_a_master_killed_mid_traffic_loses_nothing_acknowledged(cluster, live, other_server, cluster_client):
    """The cross-instance torture (5 posters x 100 messages in a room of shard 0, a follower reconnecting from its
    last id) while the master serving shard 0's slot (the control stream's too) is SIGKILLed once 150 messages were delivered: its replica takes over, posters
    retry as the page does, and the follower (whose stream ends when its process sees the new master's run_id)
    still gets every acknowledged message exactly once, in order; so does a poller beside it, and a several-rooms
    feed shows them all (exactly, or through a `reset` and the reloaded history). Last in this module: it leaves
    that slot without a replica."""
    slot = cluster_client.keyslot(Streams(cluster_client, live.services["prefix"], 1).firehose_key())
    killed = []
    # The feed follows the torture's room from a feed position taken before the room exists (positions hold
    # whatever the list), so that it misses none of the room's messages.
    viewer = live.user()
    feed_start = viewer.get("/api/poll", params={"rooms": viewer.create_room(), "timeout": 0}).json()["cursor"]
    followers, deadline = {}, time.monotonic() + 85  # the followers' end: within _torture's 90 s

    def kill_the_master(received):
        wait_until(lambda: len(received) >= 150, 60, what="150 messages received")
        killed.append(cluster.kill_master_of(slot))
        assert live.services["redis_url"] == f"redis://127.0.0.1:{killed[0]}/0", "REDIS_URL names another node"

    def follow_three_ways(servers, owner, slug, start, received):
        """The torture's SSE follower, and beside it a poller and a feed, each with a session of its own."""
        followers.update(owner=owner, slug=slug, polled=[], shown=[], resets=[], errors=[])
        others = [threading.Thread(target=test_resume._guard, daemon=True, args=(
            functools.partial(test_resume.follow_by_poll, through_outages=True), followers["errors"], servers,
            another_session(owner, servers[0]), slug, start, followers["polled"])),
            threading.Thread(target=test_resume._guard, daemon=True, args=(
                _follow_feed, followers["errors"], servers, another_session(owner, servers[1]), slug, feed_start,
                followers["shown"], followers["resets"]))]
        for thread in others:
            thread.start()
        test_resume.follow_by_sse(servers, owner, slug, start, received, through_outages=True)
        for thread in others:
            thread.join(max(1, deadline - time.monotonic()))

    elapsed = test_resume._torture([live, other_server], follow_three_ways, test_resume.posted_through_outages,
                                   kill_the_master, room_name=room_name_in_shard(0, SHARDS))
    assert killed, "the master was never killed"
    assert not followers["errors"], followers["errors"]
    everything = history_ids(followers["owner"], followers["slug"])
    assert followers["polled"] == everything, "the poller missed or repeated a message"
    # A feed resumes exactly, unless the new master's room streams ended below the database's record (events
    # lost with the old master, or not yet published): then its older positions answer `reset` (API.md), and
    # the page shows the reloaded history and what followed.
    assert followers["shown"] == everything, f"the feed (resets: {followers['resets']}) shows otherwise"
    wait_until(cluster.whole, 30, what="the cluster whole again, its replica promoted")
    print(f"torture through a failover of master {killed[0]}: {elapsed:.1f} s; feed resets: {followers['resets']}")
