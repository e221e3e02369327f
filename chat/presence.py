"""What this process shares with the others about its clients: who is online in each room (written, followed by
announcement, sent to subscribers) and how many streams and polls each user holds.

Apart from the hub because it is a concern of its own: the hub owns the subscriptions and the reader; presence
owns its loop, its memory of every watched room's list and its pacing. The hub's reader hands it the rooms
announced as changed. Written with `threading`, as the hub is (greenlets under gevent, threads in the core's tests).
"""
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict

from . import events
from .extensions import REDIS_ERRORS
from .subscription import Presence

log = logging.getLogger(__name__)


class UserCounts:
    """Streams and polls per user: counted here, published to Redis once a second, and the other
    processes' counts read back as often, so a subscription is admitted without a Redis call.

    Counted under the hub's lock (`opened`, `closed`); published by the presence loop (`sync`)."""

    USER_COUNTS_REFRESH = 5  # seconds between re-publishing every count; one 3 times older is ignored

    def __init__(self, streams):
        self.streams = streams
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Keyed by username, which names one account for good (a user id can be reused after a database is
        # emptied, as tests do).
        self._here = Counter()  # username -> streams and polls held here
        self._changed = set()  # usernames whose count may differ from the published one
        self._published = {}  # username -> the count last published (what the others see)
        self._elsewhere = {}  # username -> what the other processes hold

    def held(self, username: str) -> int:
        """The user's streams and polls in every process: this one's exactly, the others' as last read (read
        now for a user new here)."""
        elsewhere = self._elsewhere.get(username)
        if elsewhere is None:
            elsewhere = self._elsewhere[username] = self._held_elsewhere([username])[username]
        return self._here[username] + elsewhere

    def opened(self, username: str) -> None:
        self._here[username] += 1
        self._changed.add(username)

    def closed(self, username: str, is_stream: bool) -> None:
        self._here[username] -= 1
        if not self._here[username]:
            del self._here[username]
        # A poller's count goes 1, 0, 1 between its polls: the end of a poll is published with the next
        # full refresh (within USER_COUNTS_REFRESH), so polling again costs no write; meanwhile the other
        # processes count that poll a few seconds longer than it lasted.
        if is_stream:
            self._changed.add(username)

    def _held_elsewhere(self, usernames) -> dict[str, int]:
        """What the other live processes hold, per user (a vanished process's counts lapse)."""
        now, found = time.time(), {}
        for username, by_process in self.streams.user_streams(usernames).items():
            found[username] = sum(int(count) for process, (count, written) in
                                 ((process, value.split(":")) for process, value in by_process.items())
                                 if process != self.process_id and now - float(written) < 3 * self.USER_COUNTS_REFRESH)
        return found

    def sync(self, everything: bool) -> None:
        """Publish this process's counts that changed since they were last published (or all of them,
        which also reads the others' back). A poller's count goes 1, 0, 1 between its polls: only a
        count that differs from the published one is worth a write."""
        changed, self._changed = self._changed, set()
        counts = {username: self._here.get(username, 0)
                  for username in (set(self._here) | set(self._published) if everything else changed)}
        if not everything:
            counts = {username: count for username, count in counts.items() if self._published.get(username) != count}
        stamp = time.time()
        self.streams.publish_user_streams(
            self.process_id, {username: f"{count}:{stamp}" if count else 0 for username, count in counts.items()},
            3 * self.USER_COUNTS_REFRESH)
        self._published.update(counts)
        if everything:
            self._published = {username: count for username, count in self._published.items() if count}
            self._elsewhere = self._held_elsewhere(list(self._here)) if self._here else {}


class PresenceTracker:
    """This process's side of presence: its members written, the watched rooms' lists kept current, and each
    changed list sent to the local subscribers that want it.

    Local members are re-announced (written) every presence_refresh seconds; a write that changes who is online
    in a room announces the room in its shard's presence changes stream, which the hub's reader follows (and
    hands over, `changed`), and the presence loop re-reads only the announced rooms it watches (each at most once
    a second), then sends a room's list to local subscribers when it changed: at most one presence event a second
    per room (docs/ARCHITECTURE.md, "Presence")."""

    PRESENCE_REFRESH = 10  # at most this many seconds between re-announcing local members
    # A big room's list is sent less often: every change costs (list size x subscribers) bytes.
    PRESENCE_SUBSCRIBERS_PER_SECOND = 500  # a room with 5,000 local subscribers gets it every 10 s

    def __init__(self, hub, streams, config, user_counts: UserCounts):
        # The hub's subscriptions are what is present and who is sent lists; its memory of recent events is
        # kept by this loop's each-second chores, as are the per-user counts.
        self.hub = hub
        self.streams = streams
        self.user_counts = user_counts
        self.presence_ttl = config["CHAT_PRESENCE_TTL_SECONDS"]
        # Re-announce well within the TTL, or connected members would expire between refreshes.
        self.presence_refresh = min(self.PRESENCE_REFRESH, max(1, self.presence_ttl / 3))
        self._online_sent = {}
        self._pollers = defaultdict(dict)  # room -> {poller's member: when it last polled (wall clock)}
        self._pollers_polled = set()  # rooms whose pollers polled since the presence loop last wrote them
        self._presence_due = {}  # room -> when its next presence event may go out
        self._online_now = {}  # room -> its online list as last read (kept current by announcements while watched)
        # Presence is announced, not polled: the reader hands over the rooms announced as changed, the presence
        # loop re-reads those it watches.
        self._rooms_changed = set()  # announced and not yet re-read
        self._reread_all = True  # changes may have passed unread (start, a failed read, a trimmed stream)
        self._changes_lock = threading.Lock()
        self._presence_wake = threading.Event()
        self._read_at = {}  # room -> when its list was last read (monotonic): at most once a second each
        self._expires_at = {}  # room -> when its oldest member expires unless written again (as last read)
        self._unsent = set()  # rooms whose changed list waits for its presence event to fall due
        self._everywhere = None  # the rooms a local feed of every room watches (None: no such feed here)
        self._online_json = {}  # room -> (that list, its JSON)

    # Members

    def join(self, subscription) -> None:
        """Write a new stream's member in the rooms where it is present (the loop writes it again each refresh)."""
        for room in subscription.present:
            self.streams.touch_presence(room, [subscription.presence_member], self.presence_ttl)

    def leave(self, subscription) -> None:
        """Remove an ended stream's member from the rooms where it was present."""
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
            self.streams.touch_presence(room, [member], self.presence_ttl)
        pollers[member] = time.time()
        self._pollers_polled.add(room)
        return new

    # Lists

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

    def online_everywhere(self) -> dict[str, list[str]]:
        """Who is online in each room where anyone is or lately was (an emptied list included, so that a
        client sees it empty): what a feed of every room is sent on connecting, and its poll answers."""
        return dict(sorted(self.streams.online(self._rooms_with_presence(), self.presence_ttl).items()))

    # The presence loop

    def changed(self, rooms, everything: bool = False) -> None:
        """Hand rooms announced as changed (or, `everything`, the news that some may have passed unread) to the
        presence loop, and wake it."""
        with self._changes_lock:
            self._rooms_changed.update(rooms)
            self._reread_all = self._reread_all or everything
        self._presence_wake.set()

    def _presence_interval(self, room: str) -> float:
        return min(10.0, max(1.0, len(self.hub.by_room.get(room, ())) / self.PRESENCE_SUBSCRIBERS_PER_SECOND))

    def _write_pollers(self) -> set[str]:
        """Write the presence of rooms whose pollers polled since last time (each poller at the time of
        its last poll) and forget pollers gone for longer than the TTL. The rooms that have pollers."""
        polled, self._pollers_polled = self._pollers_polled, set()
        now = time.time()
        for room, pollers in list(self._pollers.items()):
            for member in [member for member, when in list(pollers.items()) if now - when > self.presence_ttl]:
                del pollers[member]
            if not pollers:
                del self._pollers[room]
            elif room in polled:
                self.streams.touch_presence(room, dict(pollers), self.presence_ttl)
        return set(self._pollers)

    def run_until_shutdown(self) -> None:
        """The presence loop (the hub's thread `chat-hub-presence`): each second its chores, in between the
        announced rooms; a Redis failure is logged and everything is read again a second later."""
        last_second = last_refresh = last_counts = 0.0
        wake_at = 0.0  # when a room's deferred list falls due (its read or its event)
        while not self.hub.shutting_down:
            self._presence_wake.wait(max(0.0, min(last_second + 1, wake_at) - time.monotonic()))
            self._presence_wake.clear()
            if self.hub.shutting_down:
                break
            try:
                reindex = False
                if time.monotonic() - last_second >= 1:  # the chores of each second
                    last_second = time.monotonic()
                    rooms = self.hub.present_members()
                    everything = last_second - last_counts >= self.user_counts.USER_COUNTS_REFRESH
                    self.user_counts.sync(everything)
                    last_counts = last_second if everything else last_counts
                    rooms.update((room, rooms.get(room, [])) for room in self._write_pollers())
                    self.hub.note_followed(rooms, last_second)  # pollers' rooms keep their recent events too
                    if last_second - last_refresh >= self.presence_refresh:
                        for room, members in rooms.items():
                            if members:
                                self.streams.touch_presence(room, members, self.presence_ttl)
                        last_refresh, reindex = last_second, True
                    followed, each_second = rooms.keys(), True
                else:  # woken by an announcement: no walk over every subscription
                    followed, each_second = self.hub.rooms_followed(), False
                    followed.update(list(self._pollers))
                wake_at = self._follow_presence(followed, each_second, reindex)
            except REDIS_ERRORS as error:
                self.changed((), everything=True)  # what it took to re-read is to be read again
                log.warning("hub: presence update failed: %s", error)
                time.sleep(1)
                continue

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
            for subscription in (*self.hub.by_room.get(room, ()), *self.hub.firehose_subscribers):
                if subscription.presence:
                    subscription.deliver(item)
        for room in set(self._online_sent) - watched:
            del self._online_sent[room]
            self._presence_due.pop(room, None)
        return wake_at

    def _presence_everywhere(self) -> bool:
        """Whether a local feed of every room wants presence (a moderators' feed without `?rooms=`)."""
        return any(subscription.presence for subscription in tuple(self.hub.firehose_subscribers))

    def _rooms_with_presence(self) -> list[str]:
        # Twice the TTL: a member who vanished drops out after the TTL, and the room stays watched long enough
        # for its emptied list to go out.
        return self.streams.rooms_with_presence(2 * self.presence_ttl)
