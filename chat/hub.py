"""The per-process hub: one Redis reader per shard fans every room's new events out to this process's subscribers.

Written with `threading`: under gunicorn's gevent worker (monkey-patched) its threads are greenlets
and its events cooperative; in a plain process (the core's tests) they are real threads.
"""
import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from collections import Counter, defaultdict

from flask import current_app

from . import events, logs, metrics
from .caches import Recent, RecentFeed, SessionCache
from .extensions import REDIS_ERRORS
from .ids import ZERO, FeedPosition
from .subscription import Presence, Subscription

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
    """Reads each shard's firehose, and the control stream, once for the process and hands entries out."""

    BLOCK_MS = 5000
    RECENT_PER_ROOM = 128  # above a poll's 100 events
    RECENT_FEED = 1000
    RECENT_KEPT_SECONDS = 60  # a room's recent events are dropped this long after its last local subscriber
    PRESENCE_REFRESH = 10  # at most this many seconds between re-announcing local members

    INCARNATION_CHECK_SECONDS = 5  # how soon a Redis emptied under a running process (FLUSHALL) is noticed

    def __init__(self, streams, config, verify):
        self.streams = streams
        # Checks the Redis now answering against the database (outbox.verify, given by the app: the hub
        # is below the write path): what identifies that check, or None while another process makes it.
        self.verify = verify
        self.max_streams = config["CHAT_MAX_STREAMS_PER_PROCESS"]
        self.max_queue = config["CHAT_SUBSCRIBER_QUEUE"]
        self.presence_ttl = config["CHAT_PRESENCE_TTL_SECONDS"]
        self.max_per_user = config["CHAT_MAX_STREAMS_PER_USER"]
        self.heartbeat = config["CHAT_HEARTBEAT_SECONDS"]
        # Re-announce well within the TTL, or connected members would expire between refreshes.
        self.presence_refresh = min(self.PRESENCE_REFRESH, max(1, self.presence_ttl / 3))
        self.by_room = defaultdict(set)
        self.firehose_subscribers = set()
        self.stream_count = 0
        self.shutting_down = False
        self._lock = threading.Lock()
        self._started = False
        self._online_sent = {}
        self._pollers = defaultdict(dict)  # room -> {poller's member: when it last polled (wall clock)}
        self._pollers_polled = set()  # rooms whose pollers polled since the presence loop last wrote them
        self._presence_due = {}  # room -> when its next presence event may go out
        self._online_now = {}  # room -> its online list as last read (kept current by announcements while watched)
        # Presence is announced, not polled: the reader hands over the rooms announced as changed, the presence
        # loop re-reads those it watches (docs/ARCHITECTURE.md, "Presence").
        shards = streams.shards
        self._firehose_at = [ZERO] * shards  # where each shard's reader is in its firehose
        self._control_at = ZERO  # where shard 0's reader is in the control stream
        self._presence_at = [ZERO] * shards  # where each shard's reader is in its presence changes stream
        self._rooms_changed = set()  # announced and not yet re-read
        self._reread_all = True  # changes may have passed unread (start, a failed read, a trimmed stream)
        self._changes_lock = threading.Lock()
        self._presence_wake = threading.Event()
        self._read_at = {}  # room -> when its list was last read (monotonic): at most once a second each
        self._expires_at = {}  # room -> when its oldest member expires unless written again (as last read)
        self._unsent = set()  # rooms whose changed list waits for its presence event to fall due
        self._everywhere = None  # the rooms a local feed of every room watches (None: no such feed here)
        self._online_json = {}  # room -> (that list, its JSON)
        # What polls are answered from without the database or Redis while the reader runs (caches.py).
        self.sessions = SessionCache()
        self.known_rooms = {}  # slug -> CachedRoom
        self._recent = {}  # room -> Recent, for rooms followed here lately
        self._recent_feed = RecentFeed(self.RECENT_FEED)
        self._followed_at = {}  # room -> when it last had a local subscriber
        self._reading = False  # every shard's reader is running and its last Redis call succeeded
        self._failing = set()  # the shards whose reader's last Redis call failed
        self._dispatching = threading.Lock()  # a feed event's position holds every shard's: one reader at a time
        self._run = {}  # shard -> the check of its Redis against the database this process last saw (outbox.verify)
        self._verified = set()  # the shards whose check holds
        # Streams and polls per user: counted here, published to Redis once a second, and the other
        # processes' counts read back as often, so a subscription is admitted without a Redis call.
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Keyed by username, which names one account for good (a user id can be reused after a database is
        # emptied, as tests do).
        self._user_counts = Counter()  # username -> streams and polls held here
        self._user_counts_changed = set()
        self._published_counts = {}  # username -> the count last published (what the others see)
        self._user_counts_elsewhere = {}  # username -> what the other processes hold
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
            self._user_counts[username] += 1
            self._user_counts_changed.add(username)
        if is_stream:
            try:
                self.streams.touch_presence(dict.fromkeys(present, [subscription.presence_member]),
                                            self.presence_ttl)
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
        elsewhere = self._user_counts_elsewhere.get(username)
        if elsewhere is None:
            elsewhere = self._user_counts_elsewhere[username] = self._held_elsewhere([username])[username]
        if self._user_counts[username] + elsewhere >= self.max_per_user:
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
            self._user_counts[subscription.username] -= 1
            if not self._user_counts[subscription.username]:
                del self._user_counts[subscription.username]
            # A poller's count goes 1, 0, 1 between its polls: the end of a poll is published with the next
            # full refresh (within USER_COUNTS_REFRESH), so polling again costs no write; meanwhile the other
            # processes count that poll a few seconds longer than it lasted.
            if subscription.is_stream:
                self._user_counts_changed.add(subscription.username)
        if subscription.is_stream:
            try:
                for room in subscription.present:
                    self.streams.leave_presence(room, subscription.presence_member)
            except REDIS_ERRORS:
                pass  # it expires by itself

    def touch_poller(self, room: str, member: str) -> bool:
        """Count a long-poller as present. Only a poller new here is written to Redis now (True: its
        answer then reads the room's list afresh); the presence loop writes the others once a second,
        each with the time it last polled, so a busy poller's requests cost no Redis call and a poller
        that left drops out 30 s after its last poll, like a closed stream."""
        pollers = self._pollers[room]
        new = member not in pollers
        if new:
            self.streams.touch_presence({room: [member]}, self.presence_ttl)
        pollers[member] = time.time()
        self._pollers_polled.add(room)
        return new

    def online_json(self, room: str, fresh: bool) -> bytes:
        """A room's online list as JSON, for poll answers: encoded once per change of the list (a big
        room's list is most of a poll answer)."""
        names = self.online([room], recent_enough=not fresh)[room]
        encoded = self._online_json.get(room)
        if encoded is None or encoded[0] is not names:
            encoded = self._online_json[room] = (names, events.encode_json(names))
        return encoded[1]

    def online(self, rooms, *, recent_enough: bool = False) -> dict[str, list[str]]:
        """Who is online in each room, from Redis; with `recent_enough`, for rooms watched here, as the presence
        loop keeps it (re-read on each announced change, at most a second apart)."""
        known = {}
        for room in rooms if recent_enough else ():
            names = self._online_now.get(room)  # the presence loop may drop a room meanwhile
            if names is not None:
                known[room] = names
        if len(known) < len(rooms):
            known.update(self.streams.online([room for room in rooms if room not in known], self.presence_ttl))
        return known

    def reader_lag(self) -> float | None:
        """Seconds this process's readers are behind their firehoses (the furthest; 0 when caught up); None when
        one is not running. Starts them if no request has yet."""
        self._ensure_started()
        if not self._reading or self.shutting_down:
            return None
        lag = 0.0
        for shard, at in enumerate(self._firehose_at):
            newest = self.streams.positions(shard)[0]
            lag = max(lag, (newest.ms - at.ms) / 1000 if newest > at else 0.0)
        return lag

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

    # The readers: one per shard, each following its shard's firehose and presence changes (shard 0's, the
    # control stream too) with one blocking XREAD of one slot.

    def _ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            # Latched only once Redis answered: a failure here leaves the next request to try again.
            for shard in range(self.streams.shards):
                if not self._check_incarnation(shard):
                    raise Refused("the event store restarted and is being checked; reconnect", retry_after=1)
                self._start_at_the_end(shard)
            self._started = self._reading = True
            for shard in range(self.streams.shards):
                threading.Thread(target=self._read_forever, args=(shard,), name=f"chat-hub-reader-{shard}",
                                 daemon=True).start()
            threading.Thread(target=self._presence_forever, name="chat-hub-presence", daemon=True).start()

    def _start_at_the_end(self, shard: int) -> None:
        firehose, control, presence = self.streams.positions(shard)
        self._firehose_at[shard], self._presence_at[shard] = firehose, presence
        if shard == 0:
            self._control_at = control

    def _read_forever(self, shard: int) -> None:
        try:
            self._read_until_shutdown(shard)
        finally:
            self._forget_memory(shard)  # readiness fails from now on, and nothing is served from memory

    def _read_until_shutdown(self, shard: int) -> None:
        reader, backoff = None, 0.5
        checked_at = time.monotonic()
        while not self.shutting_down:
            try:
                if reader is None:
                    reader = self.streams.reader()
                if shard not in self._verified or time.monotonic() - checked_at >= self.INCARNATION_CHECK_SECONDS:
                    if not self._check_incarnation(shard):
                        time.sleep(0.2)  # another process is checking this Redis against the database
                        continue
                    checked_at = time.monotonic()
                found = self.streams.read_new(reader, shard, self._firehose_at[shard], self._control_at,
                                              self._presence_at[shard], self.BLOCK_MS)
                backoff = 0.5
                self._failing.discard(shard)
                self._reading = not self._failing
            except REDIS_ERRORS as error:
                if self.shutting_down:
                    break
                self._forget_memory(shard)
                self._verified.discard(shard)  # after a failure, check whether Redis restarted before reading on
                metrics.DEPENDENCY_ERRORS.labels(dependency="redis").inc()
                log.warning("hub: Redis read of shard %d failed (%s); retrying in %.1f s", shard, error, backoff)
                if reader is not None:  # a new client: a cluster's was seen to go on asking a master that failed over
                    reader.close()
                    reader = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
                continue
            for position, fields in found.control:
                self._control_at = position
                self._apply_control(fields)
            self._presence_at[shard] = found.presence_at
            if found.rooms_changed or found.presence_overflowed:
                self._presence_changed(found.rooms_changed, everything=found.presence_overflowed)
            if found.firehose:  # the lag of the newest: the others came before it in the same read
                metrics.HUB_LAG.observe(max(0.0, time.time() - found.firehose[-1].id.ms / 1000))
            with self._dispatching:
                for entry in found.firehose:
                    self._firehose_at[shard] = entry.id
                    try:
                        self._dispatch(entry, shard)
                    except Exception:  # a bug must not stop this process's delivery for good
                        log.exception("hub: delivering %s of shard %d failed", entry.id, shard)

    def _forget_memory(self, failing: int | None = None) -> None:
        """While a reader is down, ends of sessions and new events may pass unseen: trust none of it."""
        if failing is not None:
            self._failing.add(failing)
        self._reading = False
        self._presence_changed((), everything=True)  # announcements may pass unread too
        self.sessions.clear()
        self._recent.clear()
        self._recent_feed = RecentFeed(self.RECENT_FEED)

    def _check_incarnation(self, shard: int) -> bool:
        """Whether the Redis server now holding the shard has been checked against the database (outbox.verify;
        this process checks it if no other is). When the check is not the one this process last saw (Redis
        restarted, or lost data), what its subscribers were sent, or planned from, may skip events: each
        of them is ended, to resume by its position (exactly, or with `reset`), and the shard's reader starts
        over at its streams' ends. A process serves nothing before its first check; afterwards it goes
        on serving while it checks again (a subscriber admitted meanwhile is ended if the check differs)."""
        checked = self.verify(shard)
        if checked is None:
            self._verified.discard(shard)
            return False
        was = self._run.get(shard)
        if was is not None and checked != was:
            log.warning("hub: Redis of shard %d restarted or lost data (%s, was %s): ending every subscription here",
                        shard, checked, was)
            self._forget_memory()
            with self._dispatching:
                self._start_at_the_end(shard)
            for subscription in self._all():
                subscription.end("redis_restarted")
        self._run[shard] = checked
        self._verified.add(shard)
        return True

    def _dispatch(self, entry, shard: int) -> None:
        # Encoded once per process and per kind of position: the same bytes go to every subscriber. A feed's
        # position is every shard's reader's (a subscriber sent this event was sent all they dispatched before).
        for_room = events.from_entry(entry, entry.room_event_id)
        for_feeds = events.LiveEvent(FeedPosition(self._firehose_at), for_room.type, for_room.data, shard, entry.id)
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

    # Presence: local members are re-announced (written) every presence_refresh seconds; a write that changes who
    # is online in a room announces the room in its shard's presence changes stream, which the reader follows, and
    # the presence loop re-reads only the announced rooms it watches (each at most once a second), then sends a
    # room's list to local subscribers when it changed: at most one presence event a second per room.
    # A big room's list is sent less often: every change costs (list size x subscribers) bytes.
    PRESENCE_SUBSCRIBERS_PER_SECOND = 500  # a room with 5,000 local subscribers gets it every 10 s

    def _presence_interval(self, room: str) -> float:
        return min(10.0, max(1.0, len(self.by_room.get(room, ())) / self.PRESENCE_SUBSCRIBERS_PER_SECOND))

    def _presence_changed(self, rooms, everything: bool = False) -> None:
        """Hand rooms announced as changed (or, `everything`, the news that some may have passed unread) to the
        presence loop, and wake it."""
        with self._changes_lock:
            self._rooms_changed.update(rooms)
            self._reread_all = self._reread_all or everything
        self._presence_wake.set()

    def _write_pollers(self) -> set[str]:
        """Write the presence of rooms whose pollers polled since last time (each poller at the time of
        its last poll) and forget pollers gone for longer than the TTL. The rooms that have pollers."""
        polled, self._pollers_polled = self._pollers_polled, set()
        now, written = time.time(), {}
        for room, pollers in list(self._pollers.items()):
            for member in [member for member, when in list(pollers.items()) if now - when > self.presence_ttl]:
                del pollers[member]
            if not pollers:
                del self._pollers[room]
            elif room in polled:
                written[room] = dict(pollers)
        self.streams.touch_presence(written, self.presence_ttl)
        return set(self._pollers)

    USER_COUNTS_REFRESH = 5  # seconds between re-publishing every count; one 3 times older is ignored

    def _held_elsewhere(self, usernames) -> dict[str, int]:
        """What the other live processes hold, per user (a vanished process's counts lapse)."""
        now, found = time.time(), {}
        for username, by_process in self.streams.user_streams(usernames).items():
            found[username] = sum(int(count) for process, (count, written) in
                                 ((process, value.split(":")) for process, value in by_process.items())
                                 if process != self.process_id and now - float(written) < 3 * self.USER_COUNTS_REFRESH)
        return found

    def _sync_user_counts(self, everything: bool) -> None:
        """Publish this process's counts that changed since they were last published (or all of them,
        which also reads the others' back). A poller's count goes 1, 0, 1 between its polls: only a
        count that differs from the published one is worth a write."""
        changed, self._user_counts_changed = self._user_counts_changed, set()
        counts = {username: self._user_counts.get(username, 0)
                  for username in (set(self._user_counts) | set(self._published_counts) if everything else changed)}
        if not everything:
            counts = {username: count for username, count in counts.items() if self._published_counts.get(username) != count}
        stamp = time.time()
        self.streams.publish_user_streams(
            self.process_id, {username: f"{count}:{stamp}" if count else 0 for username, count in counts.items()},
            3 * self.USER_COUNTS_REFRESH)
        self._published_counts.update(counts)
        if everything:
            self._published_counts = {username: count for username, count in self._published_counts.items() if count}
            self._user_counts_elsewhere = self._held_elsewhere(list(self._user_counts)) if self._user_counts else {}

    def _presence_forever(self) -> None:
        last_second = last_refresh = last_counts = 0.0
        wake_at = 0.0  # when a room's deferred list falls due (its read or its event)
        outage = logs.Outage("hub: presence updates")
        while not self.shutting_down:
            self._presence_wake.wait(max(0.0, min(last_second + 1, wake_at) - time.monotonic()))
            self._presence_wake.clear()
            if self.shutting_down:
                break
            try:
                reindex = False
                if time.monotonic() - last_second >= 1:  # the chores of each second
                    last_second = time.monotonic()
                    with self._lock:
                        rooms = {room: [s.presence_member for s in members if room in s.present]
                                 for room, members in self.by_room.items()}
                    everything = last_second - last_counts >= self.USER_COUNTS_REFRESH
                    self._sync_user_counts(everything)
                    last_counts = last_second if everything else last_counts
                    rooms.update((room, rooms.get(room, [])) for room in self._write_pollers())
                    self._followed_at.update(dict.fromkeys(rooms, last_second))
                    for room in [room for room, when in self._followed_at.items()
                                 if last_second - when > self.RECENT_KEPT_SECONDS]:
                        del self._followed_at[room]
                        self._recent.pop(room, None)
                    if last_second - last_refresh >= self.presence_refresh:
                        self.streams.touch_presence({room: members for room, members in rooms.items() if members},
                                                    self.presence_ttl)
                        last_refresh, reindex = last_second, True
                    followed, each_second = rooms.keys(), True
                else:  # woken by an announcement: no walk over every subscription
                    with self._lock:
                        followed, each_second = set(self.by_room), False
                    followed.update(list(self._pollers))
                wake_at = self._follow_presence(followed, each_second, reindex)
            except REDIS_ERRORS as error:
                self._presence_changed((), everything=True)  # what it took to re-read is to be read again
                outage.failed(error)
                time.sleep(1)
                continue
            outage.passed()

    def _follow_presence(self, followed, each_second: bool, reindex: bool) -> float:
        """Re-read the watched rooms' lists that may have changed, send those that did, and return when to come
        back for the lists deferred by the once-a-second limits.

        Watched: the rooms followed here, and (while a local feed of every room wants presence) the rooms where
        anyone is or lately was online (read from the index again when `reindex`, with each heartbeat round).
        Read: the newly watched, the announced, every watched room after changes may have passed unread, and
        (checked `each_second`) each room whose oldest member has expired unless written since: a member whose
        process died expires without anyone announcing it, so whoever reads the room first then drops it from
        Redis and announces it (within a second of its expiry). A live room is so read every TTL, less up to a
        heartbeat period."""
        with self._changes_lock:
            changed, self._rooms_changed = self._rooms_changed, set()
            reread_all, self._reread_all = self._reread_all, False
        if self._presence_everywhere():
            if self._everywhere is None or reindex or reread_all:
                self._everywhere = set(self._rooms_with_presence())
            self._everywhere |= changed  # announced: someone is, or just was, online there
        else:
            self._everywhere = None
        watched = set(followed) | (self._everywhere or set())
        now, wake_at, wall_clock = time.monotonic(), time.monotonic() + 1, time.time()
        new = watched - self._online_now.keys()
        to_read = set(watched) if reread_all else new | (changed & watched)
        if each_second:
            to_read |= {room for room in watched if self._expires_at.get(room, math.inf) <= wall_clock}
        early = {room for room in to_read - new if now - self._read_at.get(room, -math.inf) < 1}
        if early and not reread_all:  # read again within the second: once it is over (a busy room, once a second)
            to_read -= early
            with self._changes_lock:
                self._rooms_changed |= early
            wake_at = min(wake_at, *(self._read_at[room] + 1 for room in early))
        if to_read:
            for room, (names, expires_at) in self.streams.sweep_presence(sorted(to_read), self.presence_ttl).items():
                self._read_at[room], self._expires_at[room] = now, expires_at or math.inf
                if self._online_now.get(room) != names:  # an unchanged list keeps its identity (online_json)
                    self._online_now[room] = names
        for room in set(self._online_now) - watched:
            del self._online_now[room]
            self._read_at.pop(room, None)
            self._expires_at.pop(room, None)
        for room in set(self._online_json) - self._online_now.keys():
            self._online_json.pop(room, None)
        candidates, self._unsent = (to_read | self._unsent) & watched, set()
        for room in candidates:  # only a list just read, or one held back, can differ from the one sent
            names = self._online_now.get(room)
            if names is None or self._online_sent.get(room) == names:
                continue
            due = self._presence_due.get(room, 0)
            if now < due:
                self._unsent.add(room)
                wake_at = min(wake_at, due)
                continue
            self._online_sent[room] = names
            self._presence_due[room] = now + self._presence_interval(room) - 0.05
            item = Presence(room, names)
            for subscription in (*self.by_room.get(room, ()), *self.firehose_subscribers):
                if subscription.presence:
                    subscription.deliver(item)
        for room in set(self._online_sent) - watched:
            del self._online_sent[room]
            self._presence_due.pop(room, None)
        return wake_at

    def _presence_everywhere(self) -> bool:
        """Whether a local feed of every room wants presence (a moderators' feed without `?rooms=`)."""
        return any(subscription.presence for subscription in tuple(self.firehose_subscribers))

    def _rooms_with_presence(self) -> list[str]:
        # Twice the TTL: a member who vanished drops out after the TTL, and the room stays watched long enough
        # for its emptied list to go out.
        return self.streams.rooms_with_presence(2 * self.presence_ttl)

    def online_everywhere(self) -> dict[str, list[str]]:
        """Who is online in each room where anyone is or lately was (an emptied list included, so that a
        client sees it empty): what a feed of every room is sent on connecting, and its poll answers."""
        return dict(sorted(self.streams.online(self._rooms_with_presence(), self.presence_ttl).items()))

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

    def verify(shard: int):
        with app.app_context():
            return outbox.verify(shard)

    hub = app.extensions["chat_hub"] = Hub(streams.current(), app.config, verify)
    return hub
