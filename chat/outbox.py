"""Publishing what the database committed: the record is the order, Redis carries it to readers.

Every durable event is committed with the id its transaction took from the room (models.
allocate_event_id); the commit acknowledges it. Then it is published: by the request that made it,
and by the relay (every second, one process) for anything a crash or a Redis failure left behind.
A room's events are published strictly in id order: Redis refuses an event that does not follow the
room's last published one, and the publisher first publishes what is missing, from the database. So
each room's Redis stream always holds a gap-free run of the room's log, and readers take anything
older than its first entry from the database.

Each start of the Redis server is checked against the database before anything is published to it
or served from it (`verify`): a Redis that came back empty or from an older snapshot has rooms that
end below the record; each such stream starts over at the record's last id, and the feeds' positions
from before get a boundary (docs/ARCHITECTURE.md, "The write path").
"""
import logging
import time
from datetime import timedelta

import redis
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from . import metrics, streams
from .extensions import REDIS_ERRORS, db
from .ids import ZERO, EventId, utcnow
from .models import FeedEvent, Room, events_after, events_before

log = logging.getLogger(__name__)

FILL_BATCH = 500
RELAY_GRACE_MS = 1000  # the request that committed an event publishes it itself; the relay comes after
RELAY_RECENT_MS = 10 * 60 * 1000  # rooms the relay checks every second; every room once a minute
VERIFY_LEASE_SECONDS = 30
# When Redis comes back without a room's latest events, the rooms with an event in the last few seconds get up
# to this many back (events in flight around the restart then stay live); every other room starts over at once.
# The check must stay quick: publishes wait for it, and polls and streams answer 503 meanwhile.
RESTORE_RECENT = 100
RESTORE_WINDOW_MS = 10_000


GAP_WAITS = (0.002, 0.005)  # seconds: the event before is most likely being published right now


def publish(room_id: int, slug: str, event_id: EventId, event_type: str, data: dict) -> bool:
    """Publish one committed event, and before it whatever of its room is missing. False when Redis
    failed or is not verified yet: the event stays committed (acknowledged), and the relay publishes
    it once Redis is back."""
    room_streams = streams.current()
    try:
        try:
            outcome, last = room_streams.publish(slug, event_id, event_type, data)
        except streams.Refused:
            if verify() is None:
                return False
            outcome, last = room_streams.publish(slug, event_id, event_type, data)
        for wait in GAP_WAITS:  # give the request publishing the event before a moment, then fill from the record
            if outcome != "GAP":
                break
            time.sleep(wait)
            outcome, last = room_streams.publish(slug, event_id, event_type, data)
        if outcome == "GAP":
            fill(room_id, slug, last or ZERO, event_id)
        return True
    except (*REDIS_ERRORS, streams.Refused, SQLAlchemyError) as error:
        db.session.close()  # not rollback: the caller's objects keep what they hold (a rollback expires them)
        metrics.DEPENDENCY_ERRORS.labels(dependency="database" if isinstance(error, SQLAlchemyError) else "redis").inc()
        log.warning("publishing %s of %s left to the relay: %s", event_id, slug, type(error).__name__)
        return False


def publish_feed_event(entry: FeedEvent) -> bool:
    """Publish a committed event of no room (a ban or an unban: events.ROOMLESS) to the moderators' feed,
    once, and note that it was. False when Redis failed or is not verified yet: the relay publishes it."""
    room_streams = streams.current()
    try:
        try:
            room_streams.publish_roomless(entry.id, entry.type, entry.data)
        except streams.Refused:
            if verify() is None:
                raise
            room_streams.publish_roomless(entry.id, entry.type, entry.data)
        db.session.execute(update(FeedEvent).where(FeedEvent.id == entry.id).values(published_at=utcnow()))
        db.session.commit()
        return True
    except (*REDIS_ERRORS, streams.Refused, SQLAlchemyError) as error:
        db.session.close()  # not rollback: the caller's objects keep what they hold (a rollback expires them)
        metrics.DEPENDENCY_ERRORS.labels(dependency="database" if isinstance(error, SQLAlchemyError) else "redis").inc()
        log.warning("publishing %s %s to the moderators' feed left to the relay: %s", entry.type, entry.id,
                    type(error).__name__)
        return False


def _relay_feed_events() -> int:
    """Publish, in order, the events of no room that their requests could not (held back past the grace)."""
    held_back = FeedEvent.query.filter(FeedEvent.published_at.is_(None),
                                       FeedEvent.created_at < utcnow() - timedelta(milliseconds=RELAY_GRACE_MS)) \
        .order_by(FeedEvent.id).limit(FILL_BATCH).all()
    db.session.commit()
    return sum(publish_feed_event(entry) for entry in held_back)


def publish_many(room_id: int, slug: str, events: list[tuple[EventId, str, dict]]) -> None:
    """Publish a room's consecutive committed events (the writer's batch) in one round trip; from the
    first that does not simply follow, one by one as publish() does (waits, fills, leaves to the relay)."""
    try:
        outcomes = streams.current().publish_many(slug, events)
    except (*REDIS_ERRORS, streams.Refused):
        outcomes = []
    for index in range(len(events)):
        if index >= len(outcomes) or outcomes[index][0] == "GAP":
            for event in events[index:]:
                publish(room_id, slug, *event)
            return


def fill(room_id: int, slug: str, after: EventId, upto: EventId, verifying: bool = False) -> int:
    """Publish the room's events after `after` up to `upto`, from the database, in order; each only
    right after the one before it, so a concurrent publisher can only make it skip what is already
    there. Returns how many it published."""
    room_streams, published = streams.current(), 0
    for _ in range(10_000):  # bounded: each round publishes or skips at least one event
        batch = events_after(room_id, after, upto, FILL_BATCH)
        db.session.commit()  # no transaction held across the Redis calls
        if not batch:
            return published
        previous = after
        for event_id, event_type, data in batch:
            outcome, last = room_streams.publish(slug, event_id, event_type, data, previous=previous,
                                                 verifying=verifying)
            if outcome == "GAP":  # someone else moved the stream on: continue after what it holds
                if last is None or last < previous:
                    raise redis.ResponseError(f"stream of {slug} went back to {last} while filling")
                break
            published += outcome == "OK"
            previous = event_id
        else:
            last = batch[-1][0]
        after = max(after, last) if last is not None else after
        if after >= upto:
            return published
    raise RuntimeError(f"could not fill {slug} up to {upto}")


def relay(everything: bool = False) -> int:
    """Publish what requests left unpublished (a crash between commit and publish, a Redis failure):
    the rooms with events in the last minutes (or, with `everything`, every room) whose stream ends
    below the record. Returns how many events it published."""
    if verify() is None:
        return 0
    published = _relay_feed_events()
    query = db.session.query(Room.id, Room.slug, Room.event_ms, Room.event_seq).filter(Room.event_seq > 0)
    now_ms = int(time.time() * 1000)
    if not everything:
        query = query.filter(Room.event_ms >= now_ms - RELAY_RECENT_MS)
    rooms = [(room_id, slug, EventId(ms, seq)) for room_id, slug, ms, seq in query]
    db.session.commit()
    room_streams = streams.current()
    for start in range(0, len(rooms), 500):
        chunk = rooms[start:start + 500]
        lasts = room_streams.last_ids([slug for _, slug, _ in chunk])
        if everything:
            room_streams.trim_by_age([slug for _, slug, _ in chunk])  # idle rooms' old events (a post trims its own)
        for room_id, slug, recorded in chunk:
            last = lasts[slug]
            if (last is None or last < recorded) and recorded.ms < now_ms - RELAY_GRACE_MS:
                published += fill(room_id, slug, last or ZERO, recorded)
    if published:
        log.warning("relay: published %d events that their requests did not", published)
    return published


def verify(shard: int | None = None) -> str | None:
    """Check the Redis holding a shard (None: every shard) against the database if that was not done since it
    started (one process at a time per shard). Returns what identifies the check (the run_id and where feeds
    begin): when it changes, what a process delivered before may have skipped events, so its subscriptions must
    end and resume. None while another process is checking."""
    room_streams = streams.current()
    checked = []
    for each in range(room_streams.shards) if shard is None else [shard]:
        run = room_streams.run_id(each)
        recorded = room_streams.incarnation(each)
        # A changed CHAT_SHARDS moved rooms between shards: their streams are checked again in their new one.
        if recorded.get("run") != run or recorded.get("shards", "1") != str(room_streams.shards):
            if not room_streams.claim(f"verify:{each}", VERIFY_LEASE_SECONDS):
                return None
            try:
                recorded = _verify(room_streams, run, each)
            finally:
                room_streams.release(f"verify:{each}")
        checked.append(f"{recorded['run']}/{recorded.get('since', '')}")
    return " ".join(checked)


def _verify(room_streams, run: str, shard: int) -> dict:
    """Every room of the shard whose stream ends below the record is restored: a room with an event in the last
    few seconds gets its last events back (the stream starts over just before them if Redis lost more), any
    other starts over, empty, at the record's last id (readers take what is older from the database). If any room was
    behind, entries the feeds' clients may have seen are gone from the shard's firehose: a marker there makes
    every older feed position answer `reset`."""
    recorded = room_streams.incarnation(shard)
    rooms = [(room_id, slug, EventId(ms, seq)) for room_id, slug, ms, seq in
             db.session.query(Room.id, Room.slug, Room.event_ms, Room.event_seq).filter(Room.event_seq > 0)
             if streams.shard_of(slug, room_streams.shards) == shard]
    db.session.commit()
    restored, now_ms = 0, int(time.time() * 1000)
    for start in range(0, len(rooms), 500):
        chunk = rooms[start:start + 500]
        lasts = room_streams.last_ids([slug for _, slug, _ in chunk])
        for room_id, slug, recorded_last in chunk:
            last = lasts[slug]
            if last is not None and last >= recorded_last:
                continue
            restored += 1
            tail = events_before(room_id, recorded_last, RESTORE_RECENT) \
                if recorded_last.ms >= now_ms - RESTORE_WINDOW_MS else []
            db.session.commit()
            if last is None or not tail or last < tail[0][0].just_before():
                last = tail[0][0].just_before() if tail else recorded_last
                room_streams.floor(slug, last)
            if tail:
                fill(room_id, slug, last, recorded_last, verifying=True)
    since = EventId.parse(recorded["since"]) if recorded.get("since") else ZERO
    if restored:
        since = room_streams.mark_epoch(shard)
        log.warning("Redis %s, shard %d: %d of %d rooms ended below the record and were restored from it; feed "
                    "positions before %s there get reset", run, shard, restored, len(rooms), since)
    room_streams.mark_verified(run, since, shard)
    return {"run": run, "since": str(since)}
