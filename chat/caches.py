"""Per-process memory for the hot paths: who a session is, which rooms exist, and each room's latest
events, so that a poll near the tail costs no database query and no Redis round trip; and what a post's
checks read, so that a post costs no query before its write.

The live endpoints' memory is kept by the hub, whose reader applies the control stream: a session or
user that ends is forgotten by every process within its next read, and nothing is served from memory
while that reader is not running (its view of what ended could be stale). The posts' memory is checked
instead by the statement that records each post (PostCache), which makes it exact.
"""
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from .events import LiveEvent, in_rooms, reaches, shows_message, tombstoned_event
from .ids import EventId, FeedPosition


@dataclass(frozen=True, slots=True)
class CachedUser:
    id: int
    username: str
    role: str

    @property
    def is_moderator(self) -> bool:
        return self.role == "moderator"


@dataclass(frozen=True, slots=True)
class CachedSession:
    """What the live endpoints need of a signed-in, unbanned session."""

    id: int
    user_id: int
    csrf_token: str
    user: CachedUser
    expires_at: float = math.inf  # epoch seconds: the session's end as of its read (it only moves later)


@dataclass(frozen=True, slots=True)
class CachedRoom:
    """A room's identity (what reading its events needs; rooms are never renamed or deleted)."""

    id: int
    slug: str


class SessionCache:
    """Sessions by token hash. An entry loaded before its session or user was announced ended is
    never served, even if it was stored after the announcement arrived, nor one past its `expires_at`."""

    TTL = 30.0  # a backstop for what the control stream does not announce (a role changed by the CLI)
    MAX_ENTRIES = 100_000

    def __init__(self):
        self._by_token = {}  # token hash -> (CachedSession, monotonic time before it was loaded)
        self._ended_sessions = {}  # session id -> when it was announced ended
        self._ended_users = {}  # user id -> likewise (a ban)

    def get(self, token_hash: str) -> CachedSession | None:
        found = self._by_token.get(token_hash)
        if found is None:
            return None
        session, loaded_at = found
        if (time.monotonic() - loaded_at > self.TTL or time.time() >= session.expires_at
                or self._ended_since(session, loaded_at)):
            self._by_token.pop(token_hash, None)
            return None
        return session

    def put(self, token_hash: str, session: CachedSession, loaded_at: float) -> None:
        """Store a session read from the database; `loaded_at` is the monotonic time before the read."""
        if self._ended_since(session, loaded_at):
            return
        if len(self._by_token) >= self.MAX_ENTRIES:
            self._by_token.clear()  # a miss only costs one query
        self._by_token[token_hash] = (session, loaded_at)

    def forget(self, *, session_id: int | None = None, user_id: int | None = None) -> None:
        now = time.monotonic()
        if session_id:
            self._ended_sessions[session_id] = now
        if user_id:
            self._ended_users[user_id] = now
        # An end older than the TTL can only concern entries that have expired anyway.
        for ended in (self._ended_sessions, self._ended_users):
            if len(ended) > 10_000:
                for key in [key for key, when in ended.items() if now - when > self.TTL]:
                    del ended[key]

    def clear(self) -> None:
        self._by_token.clear()

    def _ended_since(self, session: CachedSession, loaded_at: float) -> bool:
        return (self._ended_sessions.get(session.id, -1.0) >= loaded_at
                or self._ended_users.get(session.user_id, -1.0) >= loaded_at)


@dataclass(frozen=True, slots=True)
class RoomRules:
    """What a post's checks read of a room for one user: its lock, its slow mode, the end of their mute."""

    locked: bool
    slow_mode_seconds: int
    mute_until: datetime | None

    def let_through(self, user: CachedUser, now: datetime) -> bool:
        """Whether a post by `user` passes these checks with nothing more to ask (no slow-mode turn to take)."""
        muted = self.mute_until is not None and self.mute_until > now
        return not muted and (user.is_moderator or not (self.locked or self.slow_mode_seconds))


class PostCache:
    """What a post's checks read from the database (the session with its user and ban, the room's rules for
    the user), each with the post rules' version it was read at (models.PostRules: bumped by every change
    that can refuse a post that was allowed before, in that change's transaction).

    Exact, not merely fresh: a post let through by memory carries the version its facts were read at, and
    the statement that gives it its id reads the version again (writer.py); if it differs, the post is
    not recorded and its request checks again from the database. A change that answered before the post
    began committed its bump before that statement ran, so the post either sees it or was concurrent
    with it. Memory only ever lets a post through: anything it would refuse is checked from the database.
    Entries older than the newest version this process has seen are not served (they would only fail)."""

    SESSION_TTL = 30.0  # a session is read again this often, so that its activity is noted (auth.py)
    MAX_ENTRIES = 100_000

    def __init__(self):
        self.newest = -1
        self._sessions = {}  # token hash -> (CachedSession, version, monotonic time before it was read)
        self._rules = {}  # (room id, user id) -> (RoomRules, version)

    def seen(self, version: int) -> None:
        if version > self.newest:
            self.newest = version

    def session(self, token_hash: str) -> tuple[CachedSession, int] | None:
        found = self._sessions.get(token_hash)
        if found is None:
            return None
        session, version, loaded_at = found
        if (version < self.newest or time.monotonic() - loaded_at > self.SESSION_TTL
                or time.time() >= session.expires_at):
            del self._sessions[token_hash]
            return None
        return session, version

    def put_session(self, token_hash: str, session: CachedSession, version: int, loaded_at: float) -> None:
        self.seen(version)
        self._bounded(self._sessions)[token_hash] = (session, version, loaded_at)

    def rules(self, room_id: int, user_id: int) -> tuple[RoomRules, int] | None:
        found = self._rules.get((room_id, user_id))
        if found is None or found[1] < self.newest:
            return None
        return found

    def put_rules(self, room_id: int, user_id: int, rules: RoomRules, version: int) -> None:
        self.seen(version)
        self._bounded(self._rules)[room_id, user_id] = (rules, version)

    def _bounded(self, entries: dict) -> dict:
        if len(entries) >= self.MAX_ENTRIES:
            entries.clear()  # a miss only costs a query
        return entries


class Recent:
    """The latest durable events of one room (in its positions) or of every room (in the firehose's),
    as `(room, event)`: every event the reader saw since the oldest held, with later deletions applied
    as Redis applies its tombstones, so the events after a position inside it need no Redis read."""

    __slots__ = ("events",)

    def __init__(self, size: int):
        self.events = deque(maxlen=size)

    def add(self, room: str, event: LiveEvent) -> None:
        if event.type == "message_deleted":
            self._tombstone(room, event.data.get("id"))
        self.events.append((room, event))

    def _tombstone(self, room: str, message_id: str) -> None:
        """The message, and the report events that show it (all after it: the search stops at the message)."""
        for index in range(len(self.events) - 1, -1, -1):
            held_room, held = self.events[index]
            if held_room == room and shows_message(held, message_id):
                self.events[index] = (room, LiveEvent(held.id, held.type, tombstoned_event(held.type, held.data),
                                                                 held.shard, held.local))
                if held.type == "message":
                    return

    def last(self) -> EventId | None:
        return self.events[-1][1].id if self.events else None

    def after(self, position: EventId, rooms: frozenset | None = None,
              sees_reports: bool = False) -> list[LiveEvent] | None:
        """The events after `position` (of `rooms` only, if given; reports only with `sees_reports`:
        events.reaches), oldest first; None when `position` is outside what this holds (older than its
        oldest event, or newer than its newest). It holds every event, so positions prove completeness."""
        if not self.events or position < self.events[0][1].id or position > self.events[-1][1].id:
            return None
        found = []
        for room, event in reversed(self.events):  # a poll's position is usually at or near the end
            if event.id <= position:
                break
            if in_rooms(event.type, room, rooms) and reaches(event.type, sees_reports):
                found.append(event)
        found.reverse()
        return found


class RecentFeed(Recent):
    """The latest events of every room in the feeds' positions (ids.FeedPosition), in the order the hub's
    readers dispatched them: each event's position covers all that came before it here."""

    __slots__ = ()

    def after(self, position: FeedPosition, rooms: frozenset | None = None,
              sees_reports: bool = False) -> list[LiveEvent] | None:
        """As Recent.after. A position at or past the oldest event's on every shard, and at or before the newest's,
        is inside: a shard's event newer than the position on that shard came after the oldest here."""
        if not self.events or len(position) != len(self.events[0][1].id) \
                or not self.events[0][1].id.covered_by(position) or not position.covered_by(self.events[-1][1].id):
            return None
        found = []
        for room, event in reversed(self.events):
            if event.id.covered_by(position):
                break  # and so is every event before it
            if not position.has_seen(event) and in_rooms(event.type, room, rooms) and reaches(event.type, sees_reports):
                found.append(event)
        found.reverse()
        return found

