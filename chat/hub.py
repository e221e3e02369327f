"""The per-process hub: one Redis reader fans every room's new events out to this process's subscribers.

Written with `threading`: under gunicorn's gevent worker (monkey-patched) its threads are greenlets
and its events cooperative; in a plain process (the core's tests) they are real threads. Presence and the
per-user counts are presence.py's: the hub starts its loop and hands it the rooms announced as changed.
"""
import logging
import threading
import time
import weakref
from collections import defaultdict

from flask import current_app

from . import events, metrics
from .caches import Recent, SessionCache
from .extensions import REDIS_ERRORS
from .ids import ZERO
from .presence import PresenceTracker, UserCounts
from .subscription import Subscription

log = logging.getLogger(__name__)
_HUBS = weakref.WeakSet()  # every hub of this process, for SIGTERM


class Refused(Exception):
    """This process cannot take a subscription now (shutting down, at its cap, Redis being checked):
    the client should come back after `retry_after` seconds (the views answer 503)."""

    def __init__(self, reason: str, retry_after: int):
        super().__init__(reason)
        self.retry_after = retry_after


class TooManyStreams(Exception):
    """The user holds CHAT_MAX_STREAMS_PER_USER streams and waiting polls already."""

    def __init__(self, retry_after: int):
        super().__init__("too many open streams for this user")
        self.retry_after = retry_after


class Hub:
    """Reads the firehose and the control stream once for the process and hands entries out."""

    BLOCK_MS = 5000
    RECENT_PER_ROOM = 128  # above a poll's 100 events
    RECENT_FEED = 1000
    RECENT_KEPT_SECONDS = 60  # a room's recent events are dropped this long after its last local subscriber

    INCARNATION_CHECK_SECONDS = 5  # how soon a Redis emptied under a running process (FLUSHALL) is noticed

    def __init__(self, streams, config, verify):
        self.streams = streams
        # Checks the Redis now answering against the database (outbox.verify, given by the app: the hub
        # is below the write path): what identifies that check, or None while another process makes it.
        self.verify = verify
        self.max_streams = config["CHAT_MAX_STREAMS_PER_PROCESS"]
        self.max_queue = config["CHAT_SUBSCRIBER_QUEUE"]
        self.max_per_user = config["CHAT_MAX_STREAMS_PER_USER"]
        self.heartbeat = config["CHAT_HEARTBEAT_SECONDS"]
        self.by_room = defaultdict(set)
        self.firehose_subscribers = set()
        self.stream_count = 0
        self.shutting_down = False
        self._lock = threading.Lock()
        self._started = False
        # Presence is announced, not polled: the reader hands over the rooms announced as changed, the presence
        # loop re-reads those it watches (presence.py; docs/ARCHITECTURE.md, "Presence").
        self._presence_at = ZERO  # where the reader is in the presence changes stream
        # Streams and polls per user, across processes: counted by subscribe and unsubscribe, under the lock.
        self.user_counts = UserCounts(streams)
        self.presence = PresenceTracker(self, streams, config, self.user_counts)
        # What polls are answered from without the database or Redis while the reader runs (caches.py).
        self.sessions = SessionCache()
        self.known_rooms = {}  # slug -> CachedRoom
        self._recent = {}  # room -> Recent, for rooms followed here lately
        self._recent_feed = Recent(self.RECENT_FEED)
        self._followed_at = {}  # room -> when it last had a local subscriber
        self._reading = False  # the reader is running and its last Redis call succeeded
        self._run = None  # the check of Redis against the database this process last saw (outbox.verify)
        self._verified = False
        _HUBS.add(self)

    # Subscribers

    def subscribe(self, *, rooms: frozenset | None, feed: bool = False, present: frozenset = frozenset(),
                  presence: bool = False, session_id, user_id, username, is_stream=True,
                  sees_reports: bool = False) -> Subscription:
        """Register before catching up, so nothing published meanwhile can be missed.

        `rooms`: the slugs to follow (None: every room, a feed only); `feed`: deliver in firehose
        positions (the several-rooms and moderators' feeds) rather than a room's own; `present`: the
        rooms where this client counts as online (streams only: a poller is touched per request);
        `presence`: send it its rooms' presence; `sees_reports`: the moderators' feed (events.reaches)."""
        self.check_admission(username, is_stream)
        present = present if is_stream else frozenset()
        subscription = Subscription(rooms=rooms, feed=feed, present=present, presence=presence, session_id=session_id,
                                    user_id=user_id, username=username, max_queue=self.max_queue, is_stream=is_stream,
                                    sees_reports=sees_reports)
        with self._lock:
            if rooms is None:
                self.firehose_subscribers.add(subscription)
            else:
                now = time.monotonic()
                for room in rooms:
                    self.by_room[room].add(subscription)
                    self._followed_at[room] = now
            self.stream_count += is_stream
            self.user_counts.opened(username)
        if is_stream:
            try:
                self.presence.join(subscription)
            except BaseException:
                self.unsubscribe(subscription)
                raise
        return subscription

    def check_admission(self, username: str, is_stream: bool) -> None:
        """Raise what `subscribe` would refuse this with right now (a HEAD request asks without subscribing)."""
        self._ensure_started()
        if self.shutting_down:
            raise Refused("this server is shutting down; reconnect", retry_after=1)
        if is_stream and self.stream_count >= self.max_streams:
            raise Refused("too many open streams on this server; use long-polling", retry_after=5)
        if self.user_counts.held(username) >= self.max_per_user:
            raise TooManyStreams(retry_after=self.heartbeat)

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription.rooms is None:
                self.firehose_subscribers.discard(subscription)
            else:
                for room in subscription.rooms:
                    members = self.by_room.get(room)
                    if members is not None:
                        members.discard(subscription)
                        if not members:
                            del self.by_room[room]
            self.stream_count -= subscription.is_stream
            self.user_counts.closed(subscription.username, subscription.is_stream)
        if subscription.is_stream:
            self.presence.leave(subscription)

    def present_members(self) -> dict[str, list[str]]:
        """Each room followed here, with the members of the local streams present in it (for the presence loop)."""
        with self._lock:
            return {room: [s.presence_member for s in members if room in s.present]
                    for room, members in self.by_room.items()}

    def rooms_followed(self) -> set[str]:
        """The rooms that have a local subscriber now."""
        with self._lock:
            return set(self.by_room)

    def reader_lag(self) -> float | None:
        """Seconds this process's reader is behind the firehose (0 when caught up); None when it is not
        running. Starts it if no request has yet."""
        self._ensure_started()
        if not self._reading or self.shutting_down:
            return None
        newest, _ = self.streams.positions()
        return max(0.0, (newest.ms - self._firehose_at.ms) / 1000) if newest > self._firehose_at else 0.0

    # Memory for polls (caches.py): used only while the reader runs, since it applies the ends of
    # sessions and is what keeps the recent events complete.

    def cached_sessions(self) -> SessionCache | None:
        """The session cache, while the reader that keeps it honest runs (started here if no request has
        started it yet: a process that only takes posts uses the cache too)."""
        if not self._started:
            try:
                self._ensure_started()
            except (Refused, *REDIS_ERRORS):
                return None
        return self.sessions if self._reading else None

    def recent(self, room: str | None, position, rooms: frozenset | None = None, sees_reports: bool = False):
        """`(events after position, position they follow)` from memory: a room's (or with room=None the
        firehose's, of `rooms`), reports only with `sees_reports`; with position None, no events and the
        tail. None when memory cannot prove it holds every such event (the caller reads Redis)."""
        held = self._recent_feed if room is None else self._recent.get(room)
        if not self._reading or held is None:
            return None
        if position is None:
            last = held.last()
            return None if last is None else ([], last)
        found = held.after(position, rooms, sees_reports)
        return None if found is None else (found, position)

    def note_followed(self, rooms, now: float) -> None:
        """Note `rooms` as followed here at `now` (monotonic) and drop the recent events of each room followed
        no longer for RECENT_KEPT_SECONDS (called by the presence loop with its chores of each second)."""
        self._followed_at.update(dict.fromkeys(rooms, now))
        for room in [room for room, when in self._followed_at.items() if now - when > self.RECENT_KEPT_SECONDS]:
            del self._followed_at[room]
            self._recent.pop(room, None)

    # The reader

    def _ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            # Latched only once Redis answered: a failure here leaves the next request to try again.
            if not self._check_incarnation():
                raise Refused("the event store restarted and is being checked; reconnect", retry_after=1)
            self._firehose_at, self._control_at = self.streams.positions()
            self._presence_at = self.streams.presence_changes_end()
            self._started = self._reading = True
            threading.Thread(target=self._read_forever, name="chat-hub-reader", daemon=True).start()
            threading.Thread(target=self.presence.run_until_shutdown, name="chat-hub-presence", daemon=True).start()

    def _read_forever(self) -> None:
        try:
            self._read_until_shutdown()
        finally:
            self._forget_memory()  # readiness fails from now on, and nothing is served from memory

    def _read_until_shutdown(self) -> None:
        reader, backoff = None, 0.5
        checked_at = time.monotonic()
        while not self.shutting_down:
            try:
                if reader is None:
                    reader = self.streams.reader()
                if not self._verified or time.monotonic() - checked_at >= self.INCARNATION_CHECK_SECONDS:
                    if not self._check_incarnation():
                        time.sleep(0.2)  # another process is checking this Redis against the database
                        continue
                    checked_at = time.monotonic()
                found = self.streams.read_new(reader, self._firehose_at, self._control_at, self._presence_at,
                                              self.BLOCK_MS)
                backoff = 0.5
                self._reading = True
            except REDIS_ERRORS as error:
                if self.shutting_down:
                    break
                self._forget_memory()
                self._verified = False  # after a failure, check whether Redis restarted before reading on
                metrics.DEPENDENCY_ERRORS.labels(dependency="redis").inc()
                log.warning("hub: Redis read failed (%s); retrying in %.1f s", error, backoff)
                if reader is not None:  # a new client: a cluster's was seen to go on asking a master that failed over
                    reader.close()
                    reader = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
                continue
            for position, fields in found.control:
                self._control_at = position
                self._apply_control(fields)
            self._presence_at = found.presence_at
            if found.rooms_changed or found.presence_overflowed:
                self.presence.changed(found.rooms_changed, everything=found.presence_overflowed)
            if found.firehose:  # the lag of the newest: the others came before it in the same read
                metrics.HUB_LAG.observe(max(0.0, time.time() - found.firehose[-1].id.ms / 1000))
            for entry in found.firehose:
                self._firehose_at = entry.id
                try:
                    self._dispatch(entry)
                except Exception:  # a bug must not stop this process's delivery for good
                    log.exception("hub: delivering %s failed", entry.id)

    def _forget_memory(self) -> None:
        """While the reader is down, ends of sessions and new events may pass unseen: trust none of it."""
        self._reading = False
        self.presence.changed((), everything=True)  # announcements may pass unread too
        self.sessions.clear()
        self._recent.clear()
        self._recent_feed = Recent(self.RECENT_FEED)

    def _check_incarnation(self) -> bool:
        """Whether the Redis server now answering has been checked against the database (outbox.verify;
        this process checks it if no other is). When the check is not the one this process last saw (Redis
        restarted, or lost data), what its subscribers were sent, or planned from, may skip events: each
        of them is ended, to resume by its position (exactly, or with `reset`), and the reader starts
        over at the streams' ends. A process serves nothing before its first check; afterwards it goes
        on serving while it checks again (a subscriber admitted meanwhile is ended if the check differs)."""
        checked = self.verify()
        if checked is None:
            self._verified = False
            return False
        if self._run is not None and checked != self._run:
            log.warning("hub: Redis restarted or lost data (%s, was %s): ending every subscription here",
                        checked, self._run)
            self._forget_memory()
            self._firehose_at, self._control_at = self.streams.positions()
            self._presence_at = self.streams.presence_changes_end()
            for subscription in self._all():
                subscription.end("redis_restarted")
        self._run, self._verified = checked, True
        return True

    def _dispatch(self, entry) -> None:
        # Encoded once per process and per kind of position: the same bytes go to every subscriber.
        for_room = events.from_entry(entry, entry.room_event_id)
        for_feeds = events.LiveEvent(entry.id, for_room.type, for_room.data)
        self._recent_feed.add(entry.room, for_feeds)
        if entry.type in events.ROOMLESS:  # a ban: every moderators' feed, whatever rooms it lists (it is rare)
            for subscription in {subscription for subscription in self._all() if subscription.feed}:
                subscription.deliver(for_feeds)  # which drops it for any but the moderators' (events.reaches)
            return
        recent = self._recent.get(entry.room)
        if recent is None and (entry.room in self.by_room or entry.room in self._followed_at):
            recent = self._recent[entry.room] = Recent(self.RECENT_PER_ROOM)
        if recent is not None:
            recent.add(entry.room, for_room)
        for subscription in tuple(self.by_room.get(entry.room, ())):
            if subscription.feed:
                subscription.deliver(for_feeds)
            else:
                subscription.deliver(for_room)
        if self.firehose_subscribers:
            for subscription in tuple(self.firehose_subscribers):
                subscription.deliver(for_feeds)

    def _apply_control(self, fields: dict) -> None:
        session_id, user_id = fields.get("session_id", ""), fields.get("user_id", "")
        self.sessions.forget(session_id=int(session_id) if session_id else None,
                             user_id=int(user_id) if user_id else None)
        for subscription in self._all():
            if (session_id and str(subscription.session_id) == session_id) or \
                    (user_id and str(subscription.user_id) == user_id):
                subscription.end(fields.get("reason", "ended"))

    def _all(self) -> list[Subscription]:
        with self._lock:
            found = list(self.firehose_subscribers)
            for members in self.by_room.values():
                found.extend(members)
        return found

    # Shutdown

    def shutdown(self, window: float = 4.0) -> None:
        """End every subscription within `window` seconds, staggered so clients do not reconnect at once."""
        self.shutting_down = True
        subscriptions = self._all()
        batches = 20
        for index in range(batches):
            for subscription in subscriptions[index::batches]:
                subscription.end("shutdown")
            time.sleep(window / batches)


def shutdown_all() -> None:
    for hub in list(_HUBS):
        threading.Thread(target=hub.shutdown, daemon=True).start()


def current() -> Hub:
    """This app's hub in this process, created on first use (called several times by every poll)."""
    app = current_app._get_current_object()
    try:
        return app.extensions["chat_hub"]
    except KeyError:
        return _create(app)


def _create(app) -> Hub:
    from . import outbox, streams  # noqa: PLC0415  (the write path is above the hub)

    def verify():
        with app.app_context():
            return outbox.verify()

    hub = app.extensions["chat_hub"] = Hub(streams.current(), app.config, verify)
    return hub
