"""The per-process hub without HTTP: one reader over the run's Redis fans entries out to subscriptions."""
import threading
import time
import uuid
import weakref

import pytest
import redis

from chat.config import CHAT_DEFAULTS
from chat.hub import Hub, Refused, TooManyStreams
from chat.ids import ZERO, EventId
from chat.streams import Streams, shard_of
from tests.support import wait_until

CONFIG = {**CHAT_DEFAULTS, "CHAT_MAX_STREAMS_PER_PROCESS": 100}


@pytest.fixture
def streams(services):
    """Streams under a prefix of its own inside the run's prefix: no other hub reads it."""
    client = redis.Redis.from_url(services["redis_url"], decode_responses=True)
    prefix = f"{services['prefix']}:hub-{uuid.uuid4().hex[:8]}"
    streams = Streams(client, prefix, 1000)
    streams.mark_verified(streams.run_id(), ZERO)  # as outbox.verify leaves a Redis it checked
    yield streams
    doomed = list(client.scan_iter(f"*{prefix}:*", count=1000))  # a shard's keys start {prefix:s<n>}
    if doomed:
        client.delete(*doomed)
    client.close()


@pytest.fixture
def make_hub(streams):
    """`make_hub(**settings)`: a hub over `streams`, shut down after the test."""
    hubs = []

    def build(**settings):
        hubs.append(Hub(streams, {**CONFIG, **settings}, verify=lambda shard: streams.run_id(shard)))
        return hubs[-1]

    yield build
    for hub in hubs:
        hub.shutdown(window=0)


@pytest.fixture
def hub(make_hub):
    return make_hub()


def subscribe(hub, room="lobby", rooms=None, session_id=1, user_id=1, username="ann", is_stream=True, **feed):
    """A room's own subscription (`room`), or with room=None a feed over `rooms` (None: every room)."""
    if room is not None:
        rooms, feed = frozenset([room]), {"present": frozenset([room]), "presence": True}
    else:
        rooms, feed = (frozenset(rooms) if rooms else None), {"feed": True, **feed}
    return hub.subscribe(rooms=rooms, session_id=session_id, user_id=user_id, username=username,
                         is_stream=is_stream, **feed)


_last_seq = {}  # (prefix, room) -> the seq of its last event: the database's counter, played here


def append(streams, slug, n):
    """Publish a message with the next id of its room, as outbox.publish does after a commit."""
    seq = _last_seq[streams.prefix, slug] = _last_seq.get((streams.prefix, slug), 0) + 1
    event_id = EventId(int(time.time() * 1000), seq)
    assert streams.publish(slug, event_id, "message", {"id": str(event_id), "room": slug, "body": f"message {n}"}) \
        == ("OK", None)
    return event_id


_set_aside = weakref.WeakKeyDictionary()  # subscription -> the presence items `receive` took while waiting for durable events


def take(subscription, timeout):
    """What a subscription holds, waiting up to `timeout` if nothing: the items `receive` set aside first."""
    return _set_aside.pop(subscription, None) or subscription.take(timeout)


def receive(subscription, count, timeout=10):
    """The next `count` durable events of a subscription, waiting with a deadline (other items are set aside for
    `take`: presence is announced at once, so it may come between them)."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(got)} of {count} events within {timeout} s (ended: {subscription.ended})"
        for item in subscription.take(remaining):
            if hasattr(item, "id"):
                got.append(item)
            else:
                _set_aside.setdefault(subscription, []).append(item)
    return got


def ended(subscription, timeout=10):
    """Why the subscription ended, waiting for it with a deadline (presence items may wake it first)."""
    deadline = time.monotonic() + timeout
    while subscription.ended is None and time.monotonic() < deadline:
        subscription.take(deadline - time.monotonic())
    return subscription.ended


def test_subscribers_receive_appended_entries_in_order(hub, streams):
    lobby = [subscribe(hub, session_id=n) for n in (1, 2)]
    kitchen = subscribe(hub, room="kitchen", session_id=3)
    everything = subscribe(hub, room=None, session_id=4)
    sent = {"lobby": [], "kitchen": []}
    for n in range(40):
        slug = "lobby" if n % 3 else "kitchen"
        sent[slug].append((append(streams, slug, n), f"message {n}"))

    for subscription in lobby:
        got = receive(subscription, len(sent["lobby"]))
        assert [(event.id, event.data["body"]) for event in got] == sent["lobby"]
        assert all(event.type == "message" and event.data["id"] == str(event.id) for event in got)
    got = receive(kitchen, len(sent["kitchen"]))
    assert [(event.id, event.data["body"]) for event in got] == sent["kitchen"]
    # The moderators' feed: every room, in the firehose's order and with its own positions.
    got = receive(everything, 40)
    assert [event.data["body"] for event in got] == [f"message {n}" for n in range(40)]
    assert [event.id for event in got] == sorted(event.id for event in got)
    assert {event.data["id"] for event in got} == {str(event_id) for event_id, _ in sent["lobby"] + sent["kitchen"]}


def test_the_moderators_room_filter(hub, streams):
    filtered = subscribe(hub, room=None, rooms={"kitchen"})
    for n in range(6):
        append(streams, "lobby" if n % 2 else "kitchen", n)
    got = receive(filtered, 3)
    assert [event.data["body"] for event in got] == ["message 0", "message 2", "message 4"]


def test_a_several_rooms_feed_gets_its_rooms_in_firehose_positions_and_their_presence(hub, streams):
    feed = subscribe(hub, room=None, rooms={"lobby", "kitchen"}, present=frozenset({"lobby"}), presence=True)
    sent = [append(streams, slug, n) for n, slug in enumerate(["lobby", "cellar", "kitchen", "lobby"])]
    got = receive(feed, 3)
    assert [event.data["body"] for event in got] == ["message 0", "message 2", "message 3"]
    # Its own positions (the firehose's), with each message's room event id in its data.
    assert [event.data["id"] for event in got] == [str(sent[0]), str(sent[2]), str(sent[3])]
    assert [event.id for event in got] == sorted(event.id for event in got)
    # It counts as online only where it is present, and hears presence for every room it follows.
    online = {}
    deadline = time.monotonic() + 10
    while online.get("lobby") != ["ann"] and time.monotonic() < deadline:
        online.update({item.room: item.online for item in take(feed, 1) if hasattr(item, "room")})
    assert online.get("lobby") == ["ann"] and "ann" not in online.get("kitchen", [])
    hub.unsubscribe(feed)
    assert hub.online(["lobby"]) == {"lobby": []}


def test_a_feed_of_every_room_gets_presence_of_the_rooms_where_someone_is_elsewhere(make_hub, streams):
    """The moderators' feed (every room, with presence) hears a room's list when it changes, also when the
    member is connected to another process; a room nobody is in stays unwatched."""
    here, elsewhere = make_hub(), make_hub()
    moderators = subscribe(here, room=None, presence=True, sees_reports=True, username="mod")
    member = subscribe(elsewhere, room="attic", username="ann")

    def lists():
        found = {}
        deadline = time.monotonic() + 10
        while found.get("attic") != expected and time.monotonic() < deadline:
            found.update({item.room: item.online for item in take(moderators, 1) if hasattr(item, "room")})
        return found

    expected = ["ann"]
    assert lists() == {"attic": ["ann"]}  # the moderator, on a feed, is online nowhere
    elsewhere.unsubscribe(member)
    expected = []
    assert lists() == {"attic": []}
    assert here.online_everywhere() == {"attic": []}  # emptied lately: still watched, so its emptying was sent


def test_a_slow_subscriber_is_cut_off_while_the_others_get_everything(make_hub, streams):
    hub = make_hub(CHAT_SUBSCRIBER_QUEUE=5)
    # Feeds over every room: no presence items share their queues.
    slow = subscribe(hub, room=None, session_id=1)  # never reads
    fast = subscribe(hub, room=None, session_id=2)
    for n in range(12):
        append(streams, "lobby", n)
        # In step with the fast reader, so that only the slow one falls behind.
        assert [event.data["body"] for event in receive(fast, 1)] == [f"message {n}"]
    assert slow.ended == "overflow"
    # What it had queued before the cut is still there, in order: the client resumes after its last id.
    assert [item.data["body"] for item in slow.take(0)] == [f"message {n}" for n in range(5)]
    assert fast.ended is None


def test_control_entries_end_the_right_subscriptions(hub, streams):
    ann_here = subscribe(hub, session_id=11, user_id=7)
    ann_there = subscribe(hub, room="kitchen", session_id=12, user_id=7)
    ann_polling = subscribe(hub, session_id=12, user_id=7, is_stream=False)
    bob = subscribe(hub, session_id=13, user_id=8, username="bob")
    moderator = subscribe(hub, room=None, session_id=14, user_id=9, username="mod")

    streams.announce_end(session_id=11, reason="logout")
    assert ended(ann_here) == "logout"
    # One reader applies control entries in order: once one has acted, those before it have too.
    streams.announce_end(user_id=7, reason="banned")
    assert [ended(ann_there), ended(ann_polling)] == ["banned", "banned"]
    assert ann_here.ended == "logout"
    assert bob.ended is None and moderator.ended is None

    streams.announce_end(user_id=9, reason="banned")
    assert ended(moderator) == "banned" and bob.ended is None
    # The ended still hear nothing more; the others still do.
    message = append(streams, "lobby", 1)
    assert [event.id for event in receive(bob, 1)] == [message]


def test_the_hub_reads_only_what_is_appended_after_it_started(hub, streams):
    before = append(streams, "lobby", 0)
    subscription = subscribe(hub)
    after = append(streams, "lobby", 1)
    assert [event.id for event in receive(subscription, 1)] == [after]
    assert before < after


def test_stream_cap_and_shutdown(make_hub):
    hub = make_hub(CHAT_MAX_STREAMS_PER_PROCESS=2)
    held = [subscribe(hub, session_id=n) for n in (1, 2)]
    with pytest.raises(Refused) as refused:
        subscribe(hub, session_id=3)
    assert refused.value.retry_after > 0
    poll = subscribe(hub, session_id=3, is_stream=False)  # polls are not streams: not capped
    hub.unsubscribe(held.pop())
    held.append(subscribe(hub, session_id=4))  # a place freed up

    started = time.monotonic()
    shutting = threading.Thread(target=hub.shutdown, kwargs={"window": 1.0})
    shutting.start()
    for subscription in [*held, poll]:
        assert ended(subscription, 5) == "shutdown"
    assert time.monotonic() - started < 2
    with pytest.raises(Refused):
        subscribe(hub, session_id=5)
    shutting.join(5)


def test_streams_per_user_are_counted_across_processes(make_hub):
    here, there = make_hub(CHAT_MAX_STREAMS_PER_USER=3), make_hub(CHAT_MAX_STREAMS_PER_USER=3)
    held = [subscribe(here, session_id=1), subscribe(there, session_id=2, is_stream=False)]
    # `here` reads what `there` holds every USER_COUNTS_REFRESH seconds (nothing of it before its first subscription).
    wait_until(lambda: here._user_counts_elsewhere.get("ann") == 1, what="the other process's count")
    held.append(subscribe(here, session_id=3))
    with pytest.raises(TooManyStreams) as refused:
        subscribe(here, session_id=4, is_stream=False)  # polls count too
    assert refused.value.retry_after > 0
    subscribe(here, session_id=5, user_id=2, username="bob")  # another user is not affected
    there.unsubscribe(held[1])
    # A poll's end is published with the next full refresh, and read back with the one after.
    wait_until(lambda: here._user_counts_elsewhere.get("ann") == 0, timeout=3 * here.USER_COUNTS_REFRESH,
               what="the freed place")
    subscribe(here, session_id=6)


# Presence is announced, not polled: each change of a room's membership is appended to its shard's presence
# changes stream, which every hub's reader follows; a hub re-reads only the rooms announced (and a room it watches
# when its oldest member expires, to drop members whose process died).

def presence_of(subscription, room, expected, timeout=10):
    """Wait for a presence item of `room` listing `expected`; the lists of `room` seen on the way."""
    seen, deadline = [], time.monotonic() + timeout
    while expected not in seen and time.monotonic() < deadline:
        seen += [item.online for item in take(subscription, deadline - time.monotonic())
                 if hasattr(item, "room") and item.room == room]
    assert expected in seen, f"{room}: {seen}, never {expected}"
    return seen


def test_a_join_in_one_process_reaches_a_subscriber_in_another_as_presence(make_hub):
    here, there = make_hub(), make_hub()
    bob = subscribe(here, room="porch", username="bob", session_id=1)
    presence_of(bob, "porch", ["bob"])
    ann = subscribe(there, room="porch", username="ann", session_id=2)
    presence_of(bob, "porch", ["ann", "bob"])
    presence_of(ann, "porch", ["ann", "bob"])
    there.unsubscribe(ann)
    presence_of(bob, "porch", ["bob"])


def test_a_member_whose_process_died_is_dropped_and_announced_when_it_expires(make_hub, streams):
    """A member written once and never again (its process died) expires unannounced; a hub that watches the room
    reads it again when its oldest member expires, drops it from Redis and announces the change, so every hub's
    list empties."""
    ttl = 2
    watchers = [make_hub(CHAT_PRESENCE_TTL_SECONDS=ttl) for _ in range(2)]
    feeds = [subscribe(hub, room=None, rooms={"attic"}, presence=True, username="mod", session_id=n)
             for n, hub in enumerate(watchers)]  # watching, not present
    streams.touch_presence({"attic": ["ghost|gone"]}, ttl)  # as the process that then died did
    for feed in feeds:
        presence_of(feed, "attic", ["ghost"])
    for feed in feeds:
        presence_of(feed, "attic", [], timeout=ttl + 10)
    assert streams.redis.zscore(streams.presence_key("attic"), "ghost|gone") is None  # dropped, not only unlisted


def test_a_read_reports_when_presence_changes_may_have_passed_unread(streams):
    """Trimming keeps at least MAXLEN >= READ_COUNT changes, so a reader it passed finds a full read: that is
    what makes a hub re-read every list it watches."""
    assert streams.PRESENCE_CHANGES_MAXLEN >= streams.READ_COUNT
    start = streams.positions()[2]
    reader = streams.reader()
    try:
        streams.leave_presence("den", "ann|1")  # not there: nothing to announce
        streams.touch_presence({"den": ["ann|1"]}, 30)
        streams.touch_presence({"den": ["ann|1"]}, 30)  # there already: nothing to announce
        streams.leave_presence("den", "ann|1")
        found = streams.read_new(reader, 0, ZERO, ZERO, start, 0)
        assert found.rooms_changed == {"den"} and not found.presence_overflowed
        pipe = streams.redis.pipeline(transaction=False)
        for n in range(streams.READ_COUNT):
            pipe.xadd(streams.presence_changes_key(), {"room": f"room-{n}"})
        pipe.execute()
        found = streams.read_new(reader, 0, ZERO, ZERO, found.presence_at, 0)
        assert len(found.rooms_changed) == streams.READ_COUNT and found.presence_overflowed
    finally:
        reader.close()


def test_one_heartbeat_writes_many_rooms_of_several_shards_and_announces_only_changes(services, monkeypatch):
    """A process's heartbeat over all its rooms is a few script calls (one per shard and per group of rooms), not one
    per room; each room gets its own members and expiry, lands in its own shard's index, and only the rooms where
    who is online changed are announced, each in its own shard's changes."""
    client = redis.Redis.from_url(services["redis_url"], decode_responses=True)
    streams = Streams(client, f"{services['prefix']}:beat-{uuid.uuid4().hex[:8]}", 1000, shards=3)
    monkeypatch.setattr(streams, "PRESENCE_ROOMS_PER_CALL", 4)  # so that a shard's rooms take several calls
    rooms = {f"room-{n}": [f"user{n}|1", f"user{n}|2"] for n in range(20)}
    shards = {slug: shard_of(slug, 3) for slug in rooms}
    assert set(shards.values()) == {0, 1, 2}
    try:
        starts = [streams.positions(shard)[2] for shard in range(3)]
        assert streams.touch_presence(rooms, ttl=30) == set(rooms)  # everyone new
        again = {**rooms, "room-3": {"user3|1": time.time()}}  # user3|2 is still within its 30 s
        assert streams.touch_presence(again, ttl=30) == set()  # nothing changed: nothing announced
        assert streams.online(list(rooms), 30) == {slug: sorted({m.split("|")[0] for m in members})
                                                   for slug, members in rooms.items()}
        for shard in range(3):
            indexed = set(client.zrange(streams.presence_rooms_key(shard), 0, -1))
            assert indexed == {slug for slug, home in shards.items() if home == shard}
            announced = [fields["room"] for _id, fields in
                         client.xrange(streams.presence_changes_key(shard), f"({starts[shard]}", "+")]
            assert sorted(announced) == sorted(slug for slug, home in shards.items() if home == shard)
        assert 0 < client.ttl(streams.presence_key("room-7")) <= 60
    finally:
        doomed = list(client.scan_iter(f"*{streams.prefix}:*", count=1000))  # a shard's keys: {prefix:s<n>}:...
        if doomed:
            client.delete(*doomed)
        client.close()


class QuietHub(Hub):
    PRESENCE_REFRESH = 60  # its members' heartbeats (and its reconcile) fall outside the test's window


def test_idle_rooms_cost_no_redis_commands(private_redis):
    """With members online in many rooms and nothing changing, two processes send Redis a handful of commands in
    three seconds (their blocking reads and the per-user counts), not a read of every room each second."""
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    streams = Streams(client, "idle", 1000)
    streams.mark_verified(streams.run_id(), ZERO)
    config = {**CONFIG, "CHAT_PRESENCE_TTL_SECONDS": 300}
    hubs = [QuietHub(streams, config, verify=lambda shard: streams.run_id(shard)) for _ in range(2)]
    rooms = [f"room-{n}" for n in range(20)]
    try:
        members = [subscribe(hub, room=room, username=f"user{index}", session_id=index, user_id=index)
                   for index, hub in enumerate(hubs) for room in rooms]
        for subscription in members:
            presence_of(subscription, next(iter(subscription.rooms)), ["user0", "user1"])
        # A room announced again within a second of its read is read once more a second later: let that pass.
        time.sleep(2)
        before = client.info("stats")["total_commands_processed"]
        time.sleep(3)  # a window of idleness: there is no event to await
        commands = client.info("stats")["total_commands_processed"] - before - 1  # less the first INFO
        assert commands < len(rooms), f"{commands} Redis commands in 3 s with {len(rooms)} idle rooms"
    finally:
        for hub in hubs:
            hub.shutdown(window=0)
        client.close()
