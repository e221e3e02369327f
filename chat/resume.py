"""Where a subscriber starts: resuming a room or the moderators' feed exactly, from Redis where it still
holds the events, from the database where it no longer does, or with a reset where neither can."""
from dataclasses import dataclass, field

from flask import current_app

from . import events, outbox, streams
from .errors import Unavailable
from .extensions import db
from .ids import ZERO, EventId
from .models import events_between, last_event_id

CATCH_UP_BATCH = 500
RESUME_ATTEMPTS = 3  # plans in a row that a trim may race before the client is told to reload


@dataclass
class Plan:
    """Where a subscriber starts: events rebuilt from the database, then Redis from `after`."""

    after: EventId  # the position the Redis catch-up reads after
    replay: list  # LiveEvents from the database, before `after`
    reset: str | None = None  # why the client must reload history instead
    cursor: EventId | None = None  # where the client stands: the start position, or the tail
    window: streams.Window | None = None  # what Redis held when the plan was made
    backlog: list = field(default_factory=list)  # the replay, then what Redis holds after `after` (see resume)

    def __post_init__(self):
        if self.cursor is None:
            self.cursor = self.after


class Trimmed(Exception):
    """Redis trimmed entries that a catch-up still needed while it read them: plan again."""


def _most() -> int:
    """The most events a resume replays (CHAT_RESUME_MAX_EVENTS): a client further behind reloads history
    instead, so that no request holds a room's whole retained backlog in memory."""
    return current_app.config["CHAT_RESUME_MAX_EVENTS"]


def _window(slug: str | None) -> streams.Window:
    """Where a room's stream (or the firehose) stands, read only from a Redis checked against the database
    (a Redis back from an older snapshot must not be served as it is: outbox.verify)."""
    window = streams.current().window(slug)
    if not window.verified:
        if outbox.verify() is None:
            raise Unavailable("the event store restarted and is being checked; reconnect", retry_after=1)
        window = streams.current().window(slug)
    return window


def plan_room(room, start: EventId | None) -> Plan:
    """Decide how to resume a room exactly: from Redis where its stream holds the events, from the
    database for what it does not (older than its first entry, or not yet published), or a reset
    where neither can serve it. The database holds every acknowledged event; Redis a gap-free run of
    them (outbox.py), so the two together never skip one."""
    window = _window(room.slug)
    recorded = last_event_id(room.id)  # read after the window: never behind what Redis showed
    if start is None:  # the tail: only what happens after connecting
        return Plan(max(window.last or ZERO, recorded), [], window=window)
    if start > recorded:
        return Plan(recorded, [], reset="position unknown to this server")
    if window.first is not None and start >= window.first:
        return Plan(start, [], window=window)  # what is not published yet arrives live
    upto = window.first.just_before() if window.first else window.last or recorded
    rebuilt = events_between(room.id, start.clamped(), upto, _most())
    if rebuilt is None:
        return Plan(max(window.last or ZERO, recorded), [], reset="too far behind; reload history")
    # Where Redis takes over is where the record's part ends, shown to this client or not (a report).
    after = max(rebuilt[-1][0] if rebuilt else start, start)
    replay = [events.LiveEvent(event_id, kind, data) for event_id, kind, data in rebuilt
              if events.reaches(kind, sees_reports=False)]
    return Plan(after, replay, cursor=start, window=window)


def plan_firehose(start: EventId | None) -> Plan:
    """The feeds resume from the firehose alone; past its retention, or from a position an earlier
    incarnation of Redis handed out (outbox.verify), a reset.

    A position before its oldest entry is served from that entry on while the firehose never was
    trimmed (so a feed that began on an empty firehose, cursor 0-0, resumes exactly).
    """
    room_streams = streams.current()
    window = _window(None)
    if start is None:
        return Plan(window.last or ZERO, [], window=window)
    since = room_streams.incarnation().get("since")
    if since and start < EventId.parse(since):
        return Plan(window.last or ZERO, [], reset="the server's event store restarted; reload history")
    if window.last is None:  # nothing yet (or Redis lost it): only 0-0 was handed out meanwhile
        return Plan(ZERO, [], window=window) if start == ZERO else \
            Plan(ZERO, [], reset="position no longer retained")
    trimmed = window.length >= room_streams.firehose_maxlen
    if start > window.last or (trimmed and window.first is not None and start < window.first.just_before()):
        return Plan(window.last, [], reset="position no longer retained")
    return Plan(start, [], window=window)


def _dropped(planned: streams.Window, now: streams.Window, after: EventId) -> bool:
    """Whether Redis no longer holds entries after `after` that the plan relied on it for.

    A plan reads from Redis what follows `after` and at least everything from `planned.first` on (older
    events come from the database); if the oldest entry now retained is past both, a trim ran in between.
    """
    if planned.first is None:
        return False  # the database served all up to `planned.last`; what came since is too new to trim
    if now.first is None:
        return max(now.last or ZERO, planned.last or ZERO) > after
    return now.first > max(after, planned.first)


def catch_up(room_streams, slug, after: EventId, limit: int | None = None, rooms: set | None = None,
             planned: streams.Window | None = None, sees_reports: bool = False) -> list:
    """Events Redis holds after `after`, oldest first (tombstones applied); the firehose's if slug is None;
    reports only with `sees_reports` (events.reaches).

    Raises Trimmed when Redis dropped entries that the plan (which read `planned`) needs from it.
    """
    found = []
    while limit is None or len(found) < limit:
        window, entries = room_streams.read_after(slug, after, CATCH_UP_BATCH)
        if planned is not None and _dropped(planned, window, after):
            raise Trimmed(slug)
        found.extend(events.from_entry(entry) for entry in entries
                     if events.in_rooms(entry.type, entry.room, rooms) and events.reaches(entry.type, sees_reports))
        if len(entries) < CATCH_UP_BATCH:
            break
        after = entries[-1].id
    return found if limit is None else found[:limit]


def resume(plan_for, slug: str | None, limit: int | None = None, rooms: set | None = None,
           sees_reports: bool = False) -> Plan:
    """`plan_for()` with its backlog read: the database's part, then Redis's. Planned again when a trim
    raced the read, so that nothing is silently skipped. Call it after subscribing: the hub delivers
    whatever is appended after the read."""
    for _ in range(RESUME_ATTEMPTS):
        plan = plan_for()
        db.session.commit()  # end the plan's read transaction: none is held across a Redis call
        if plan.reset:
            return plan
        most = limit if limit is not None else _most() + 1 - len(plan.replay)  # a stream: all, up to the bound
        try:
            recent = catch_up(streams.current(), slug, plan.after, most, rooms, planned=plan.window,
                              sees_reports=sees_reports)
        except Trimmed:
            continue
        if limit is None and len(plan.replay) + len(recent) > _most():
            tail = streams.current().window(slug).last or plan.after
            return Plan(max(tail, plan.after), [], reset="too far behind; reload history")
        plan.backlog = plan.replay + recent
        return plan
    tail = streams.current().window(slug).last or plan.after
    return Plan(tail, [], reset="too far behind; reload history")
