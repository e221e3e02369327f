"""Where a subscriber starts, and its way from there to the live tail: resuming a room or a feed exactly,
from Redis where it still holds the events, from the database where it no longer does, or with a reset
where neither can, read a page at a time so that no request holds a whole backlog in memory."""
from collections import deque
from dataclasses import dataclass

from flask import current_app

from . import events, outbox, streams
from .errors import Unavailable
from .extensions import db
from .ids import ZERO, EventId, FeedPosition
from .models import events_after, last_event_id

PAGE = 100  # events (or firehose entries) a catch-up reads at a time: its memory, however far behind it starts
RESUME_ATTEMPTS = 3  # plans in a row (none making progress) that a trim may race before the client is told to reload


@dataclass
class Plan:
    """Where a subscriber starts: the record's part (events after `after` up to `upto`, from the database;
    none if `upto` is None), then Redis from where that ends."""

    after: EventId | FeedPosition  # where the catch-up starts reading
    upto: EventId | None = None  # the last event the database serves; Redis holds what follows
    room_id: int | None = None  # whose record (a room's plan)
    reset: str | None = None  # why the client must reload history instead
    cursor: EventId | FeedPosition | None = None  # where the client stands: the start position, or the tail
    window: streams.Window | None = None  # what Redis held when the plan was made
    windows: list | None = None  # a feed's: what each shard's firehose held

    def __post_init__(self):
        if self.cursor is None:
            self.cursor = self.after


class Trimmed(Exception):
    """Redis trimmed entries that a catch-up still needed while it read them: plan again."""


def _most() -> int:
    """How far behind a room's stream may resume (CHAT_RESUME_MAX_EVENTS): a client further behind reloads
    history instead, cheaper for both sides than a replay of thousands of events (a poll pages through,
    100 events an answer)."""
    return current_app.config["CHAT_RESUME_MAX_EVENTS"]


def _window(slug: str | None, shard: int = 0) -> streams.Window:
    """Where a room's stream (or the shard's firehose) stands, read only from a Redis checked against the database
    (a Redis back from an older snapshot must not be served as it is: outbox.verify)."""
    window = streams.current().window(slug, shard)
    if not window.verified:
        if outbox.verify(None if slug else shard) is None:
            raise Unavailable("the event store restarted and is being checked; reconnect", retry_after=1)
        window = streams.current().window(slug, shard)
    return window


def plan_room(room, start: EventId | None, bounded: bool = False) -> Plan:
    """Decide how to resume a room exactly: from Redis where its stream holds the events, from the
    database for what it does not (older than its first entry, or not yet published), or a reset
    where neither can serve it, or (`bounded`: a stream) where it is too far behind. The database holds every acknowledged event; Redis a gap-free run of
    them (outbox.py), so the two together never skip one."""
    window = _window(room.slug)
    recorded = last_event_id(room.id)  # read after the window: never behind what Redis showed
    tail = max(window.last or ZERO, recorded)
    if start is None:  # the tail: only what happens after connecting
        return Plan(tail, window=window)
    if start > recorded:
        return Plan(recorded, reset="position unknown to this server")
    # A room's events are numbered one by one (models.allocate_event_ids): how far behind is a subtraction.
    if bounded and recorded.seq - start.seq > _most():
        return Plan(tail, reset="too far behind; reload history")
    if window.first is not None and start >= window.first:
        return Plan(start, window=window)  # what is not published yet arrives live
    upto = window.first.just_before() if window.first else window.last or recorded
    return Plan(start, upto=upto, room_id=room.id, window=window)


def plan_firehose(start: FeedPosition | None) -> Plan:
    """The feeds resume from the shards' firehoses alone, however far behind within their retention (read a
    page at a time); past it on any shard, from a position an earlier incarnation of a shard's Redis handed out
    (outbox.verify), or from one of another number of shards (CHAT_SHARDS changed), a reset.

    A position before a firehose's oldest entry is served from that entry on while the firehose never was
    trimmed (so a feed that began on an empty firehose, cursor 0-0, resumes exactly).
    """
    room_streams = streams.current()
    windows = [_window(None, shard) for shard in range(room_streams.shards)]
    tail = FeedPosition(window.last or ZERO for window in windows)
    if start is None:
        return Plan(tail, windows=windows)
    if len(start) != len(windows):
        return Plan(tail, reset="position unknown to this server")
    for shard, (position, window) in enumerate(zip(start, windows)):
        reset = _firehose_reset(room_streams, shard, position, window)
        if reset:
            return Plan(tail, reset=reset)
    return Plan(start, windows=windows)


def _firehose_reset(room_streams, shard: int, start: EventId, window: streams.Window) -> str | None:
    """Why a shard's firehose cannot resume from `start`, if it cannot."""
    since = room_streams.incarnation(shard).get("since")
    if since and start < EventId.parse(since):
        return "the server's event store restarted; reload history"
    if window.last is None:  # nothing yet (or Redis lost it): only 0-0 was handed out meanwhile
        return None if start == ZERO else "position no longer retained"
    trimmed = window.length >= room_streams.firehose_maxlen
    if start > window.last or (trimmed and window.first is not None and start < window.first.just_before()):
        return "position no longer retained"
    return None


def _dropped(planned: streams.Window, now: streams.Window, after: EventId, counted: bool = False) -> bool:
    """Whether Redis no longer holds entries after `after` that the plan relied on it for.

    A plan reads from Redis what follows `after` and at least everything from `planned.first` on (older
    events come from the database); if the oldest entry now retained is past both, a trim ran in between,
    unless (`counted`: a room's stream, whose events are numbered one by one) it is the very next event: a
    trim took only what was read already, which on a busy room is most of them.
    """
    if planned.first is None:
        return False  # the database served all up to `planned.last`; what came since is too new to trim
    if now.first is None:
        return max(now.last or ZERO, planned.last or ZERO) > after
    if counted and now.first > after and now.first.seq == after.seq + 1:
        return False
    return now.first > max(after, planned.first)


class CatchUp:
    """One subscriber's way from its start to the live tail, read a page at a time: the record's part of
    its plan, then what Redis holds, planned again from where it stands when a trim raced a read (so
    nothing is silently skipped). Start it after subscribing: the hub delivers whatever is appended
    after the last page. With `plan.reset` set the client must reload history; it follows live from
    `position` on.

    `plan_for(position)` plans from a position (None: the tail); `rooms` filters the firehose (None:
    every room); `sees_reports` keeps report events (events.reaches)."""

    def __init__(self, plan_for, start: EventId | None, slug: str | None, rooms: set | None = None,
                 sees_reports: bool = False):
        self.plan_for, self.slug, self.rooms, self.sees_reports = plan_for, slug, rooms, sees_reports
        self.streams = streams.current()
        self.plan = self._plan(start)
        self.cursor = self.plan.cursor  # where the client stood (or the tail): an empty poll answers it
        self.position = self.plan.after  # the last event read, shown to this subscriber or not
        self.at_tail = False
        self.replans, self._replanned_at = 0, self.position

    @property
    def done(self) -> bool:
        return self.at_tail or self.plan.reset is not None

    def page(self, most: int = PAGE) -> list:
        """The next events (at most `most`), oldest first; [] once `done`."""
        while not self.done:
            try:
                found = self._from_record(most) if self.plan.upto is not None else self._from_redis(most)
            except Trimmed:
                self._plan_again()
                continue
            if found:
                return found
        return []

    def upto(self, most: int) -> list:
        """Up to `most` events at once (a poll's answer), reading as many pages as that takes."""
        found = []
        while len(found) < most and not self.done:
            found += self.page(most - len(found))
        return found

    def _plan(self, start: EventId | None) -> Plan:
        plan = self.plan_for(start)
        db.session.commit()  # end the plan's read transaction: none is held across a Redis call
        return plan

    def _plan_again(self) -> None:
        self._count_replan()
        if self.replans < RESUME_ATTEMPTS:
            self.plan = self._plan(self.position)
        else:
            self.plan = Plan(self.streams.window(self.slug).last or self.position,
                             reset="too far behind; reload history")
        self.position = self.plan.after

    def _count_replan(self) -> None:
        """Count the trims that raced a read without any progress between them: a catch-up that read events
        since the last plan is not losing the race, however often a busy room's trim passes it."""
        if self.position != self._replanned_at:
            self.replans, self._replanned_at = 0, self.position
        self.replans += 1

    def _from_record(self, most: int) -> list:
        rows = events_after(self.plan.room_id, self.position, self.plan.upto, most)
        db.session.commit()
        if len(rows) < most:
            self.plan.upto = None  # the record's part is read: Redis from here on
        if rows:
            self.position = rows[-1][0]
        return [events.LiveEvent(event_id, kind, data) for event_id, kind, data in rows
                if events.reaches(kind, sees_reports=False)]

    def _from_redis(self, most: int) -> list:
        window, entries = self.streams.read_after(self.slug, self.position, most)
        counted = self.slug is not None  # a room's stream; the firehose's ids are not numbered one by one
        if self.plan.window is not None and _dropped(self.plan.window, window, self.position, counted):
            raise Trimmed(self.slug)
        if entries:
            self.position = entries[-1].id
        self.at_tail = len(entries) < most
        return [events.from_entry(entry) for entry in entries
                if events.in_rooms(entry.type, entry.room, self.rooms)
                and events.reaches(entry.type, self.sees_reports)]


class FeedCatchUp(CatchUp):
    """A feed's catch-up over every shard's firehose, from the plan's position on each to its end, a page at a time
    from each, merged by id: entries come in the order Redis took them (by its clock: one Redis, or the masters'),
    as they would have live. Each event's position is where the catch-up then stands on every shard
    (ids.FeedPosition)."""

    def __init__(self, start: FeedPosition | None, rooms: set | None = None, sees_reports: bool = False):
        self._read = {}  # shard -> (entries read and not yet taken, the last id read, whether that was its end)
        super().__init__(plan_firehose, start, None, rooms, sees_reports)

    def _plan_again(self) -> None:
        self._count_replan()
        if self.replans < RESUME_ATTEMPTS:
            self.plan = self._plan(self.position)
        else:
            self.plan = Plan(self._plan(None).after, reset="too far behind; reload history")
        self.position, self._read = self.plan.after, {}

    def _from_redis(self, most: int) -> list:
        found = []
        while len(found) < most:
            heads = {shard: read[0][0] for shard, read in self._fill().items() if read[0]}
            if not heads:
                self.at_tail = True
                break
            shard = min(heads, key=lambda each: heads[each].id)
            entry = self._read[shard][0].popleft()
            self.position = self.position.moved(shard, entry.id)
            if events.in_rooms(entry.type, entry.room, self.rooms) and events.reaches(entry.type, self.sees_reports):
                found.append(events.feed_event(entry, self.position, shard))
        return found

    def _fill(self) -> dict:
        """Every shard's unread entries, a page read for each shard whose entries were all taken (unless it was at
        its end); raises Trimmed when Redis no longer holds what a shard's plan relied on."""
        for shard, at in enumerate(self.position):
            pending, last, ended = self._read.get(shard, (None, at, False))
            if pending or ended:
                continue
            window, entries = self.streams.read_after(None, last, PAGE, shard)
            if _dropped(self.plan.windows[shard], window, last):
                raise Trimmed(shard)
            self._read[shard] = (deque(entries), entries[-1].id if entries else last, len(entries) < PAGE)
        return self._read
