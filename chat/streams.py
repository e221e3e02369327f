"""Redis: the only module that knows a key name or calls an X* command.

Every key of a room, and of the shard it belongs to, starts with the shard's hash tag `{<prefix>:s<n>}`
(the room's shard: shard_of), so each script and each multi-key command touches one Redis Cluster slot
(docs/ARCHITECTURE.md, "Redis keys"). Each room has a stream (a gap-free run of its log, with the ids the database gave: outbox.py) and a set
of deleted message ids (tombstones applied when entries are read back). One firehose stream carries every
room's durable events, appended in the same script as the room's entry: the feeds, and what each
process's hub reads. Scripts that publish or read check that this Redis was verified against the database
since it started (its run_id), so a Redis back from an older snapshot is never served as it is.
"""
import json
import time
import zlib
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

from . import lua
from .events import tombstoned_event
from .ids import ZERO, EventId

class Refused(Exception):
    """This Redis has not been checked against the database since it started (outbox.verify)."""


@dataclass(frozen=True)
class Entry:
    """A durable event read back from a stream, tombstones applied."""

    id: EventId  # position in the stream it was read from (the firehose has its own)
    type: str
    data: dict
    room: str = ""
    room_event_id: EventId | None = None


@dataclass
class NewEntries:
    """What one read of the hub's streams found (Streams.read_new)."""

    firehose: list[Entry]
    control: list[tuple[EventId, dict]]
    rooms_changed: set[str]  # rooms whose membership was announced as changed
    presence_at: EventId  # where the presence changes were read up to
    presence_overflowed: bool  # more changes may be waiting, or were trimmed unread: re-read every list


@dataclass(frozen=True)
class Window:
    """What a stream holds: `last` is where it continues after, `first` its oldest retained entry."""

    last: EventId | None
    first: EventId | None
    length: int = 0  # entries held; below the stream's MAXLEN, nothing was ever trimmed from it
    verified: bool = True  # this Redis was checked against the database since it started (outbox.verify)


def _parse_id(raw) -> EventId | None:
    return EventId.parse(raw) if raw else None


def shard_of(slug: str, shards: int) -> int:
    """The shard a room belongs to: CRC-32 (zlib's, as in gzip and PNG) of its slug's UTF-8, modulo the
    number of shards. Stable across processes, machines and Python versions (unlike hash()); a slug never
    changes, so neither does its room's shard while CHAT_SHARDS does not."""
    return zlib.crc32(slug.encode()) % shards


class Streams:
    """Named operations on the service's Redis keys, for one key prefix."""

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str, maxlen: int, max_age_seconds: float = 0,
                 shards: int = 1, connect_reader=None):
        """`connect_reader()`, if given, makes the hub's reader (see reader()); a cluster client needs it."""
        self.redis = client
        self._connect_reader = connect_reader
        self.prefix = prefix
        self.shards = shards
        self.cluster = isinstance(client, RedisCluster)
        self.maxlen = maxlen
        self.firehose_maxlen = max(maxlen * 10, 100000)
        self.max_age_ms = int(max_age_seconds * 1000)
        self._publish = client.register_script(lua.PUBLISH)
        self._publish_roomless = client.register_script(lua.PUBLISH_ROOMLESS)
        self._floor = client.register_script(lua.FLOOR)
        self._last_ids = client.register_script(lua.LAST_IDS)
        self._read_after = client.register_script(lua.READ_AFTER)
        self._rate_limit = client.register_script(lua.RATE_LIMIT)
        self._rate_give_back = client.register_script(lua.RATE_GIVE_BACK)
        self._post_allowance = client.register_script(lua.POST_ALLOWANCE)
        self._post_give_back = client.register_script(lua.POST_GIVE_BACK)
        self._slow_mode = client.register_script(lua.SLOW_MODE)
        self._touch_presence = client.register_script(lua.TOUCH_PRESENCE)
        self._leave_presence = client.register_script(lua.LEAVE_PRESENCE)
        self._sweep_presence = client.register_script(lua.SWEEP_PRESENCE)

    # Key builders. A room's keys and its shard's share the shard's hash tag: one Cluster slot per shard. The
    # control stream and the events of no room (bans) are shard 0's alone; shard-wide keys default to it.
    def shard_tag(self, shard: int) -> str:
        return f"{{{self.prefix}:s{shard}}}"

    def _room(self, slug: str) -> str:
        return f"{self.shard_tag(shard_of(slug, self.shards))}:room:{slug}"

    def room_stream_key(self, slug: str) -> str:
        return f"{self._room(slug)}:log"

    def tombstones_key(self, slug: str) -> str:
        return f"{self._room(slug)}:deleted"

    def slow_mode_key(self, slug: str, user_id: int) -> str:
        return f"{self._room(slug)}:slow:{user_id}"

    def firehose_key(self, shard: int = 0) -> str:
        return f"{self.shard_tag(shard)}:firehose"

    def control_key(self, shard: int = 0) -> str:
        return f"{self.shard_tag(shard)}:control"

    def incarnation_key(self, shard: int = 0) -> str:
        return f"{self.shard_tag(shard)}:incarnation"

    def feed_event_key(self, record_id: int) -> str:
        """An event of no room goes to shard 0's firehose: its once-key shares that slot."""
        return f"{self.shard_tag(0)}:feed-event:{record_id}"

    def rate_key(self, scope: str) -> str:  # one key per script: any slot
        return f"{self.prefix}:rate:{scope}"

    def publish(self, slug: str, event_id: EventId, event_type: str, data: dict,
                previous: EventId | None = None, verifying: bool = False) -> tuple[str, EventId | None]:
        """Append one durable event, with the id the database gave it, to the room's stream and the
        firehose, atomically, only right after the room's previous event (`previous`, else the event one
        `seq` before). Returns ("OK" | "DUP", None), or ("GAP", the stream's last id, None if it has
        none): the events in between must be published first. Raises Refused before this Redis is verified
        (unless `verifying`: the check itself restores events).
        """
        return self._outcome(self._publish(**self._publish_call(slug, event_id, event_type, data, previous, verifying)))

    def publish_many(self, slug: str, events: list[tuple[EventId, str, dict]]) -> list[tuple[str, EventId | None]]:
        """publish() for several consecutive events of a room in one round trip (one per event on a cluster), in
        order: each outcome as publish() gives it (an event after a GAP finds a GAP too)."""
        calls = [self._publish_call(slug, event_id, event_type, data, None, False) for event_id, event_type, data in events]
        # (A call that a Redis without the script refused is made again after the others: its followers then
        # find a GAP, which the caller fills, as after any failed publish.)
        return [self._outcome(outcome) for outcome in self._each(self._publish, calls)]

    def _each(self, script, calls: list[dict]) -> list:
        """`script(**call)` for each call, in one round trip by the script's hash alone (redis-py's Script in a
        pipeline first asks SCRIPT EXISTS, a round trip of its own). On a cluster, whose pipeline refuses
        EVALSHA, one round trip each (a script taking the whole batch would make it one again; SCALING.md).
        A Redis that does not know the script (restarted, flushed) gets the refused calls again one by one
        through the Script, which loads it."""
        if self.cluster:
            return [script(**call) for call in calls]
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(script.sha, len(call["keys"]), *call["keys"], *call["args"])
        answers = pipe.execute(raise_on_error=False)
        for index, answer in enumerate(answers):
            if isinstance(answer, redis.exceptions.NoScriptError):
                answers[index] = script(**calls[index])
            elif isinstance(answer, Exception):
                raise answer
        return answers

    def _publish_call(self, slug, event_id, event_type, data, previous, verifying) -> dict:
        shard = shard_of(slug, self.shards)
        keys = [self.room_stream_key(slug), self.firehose_key(shard), self.tombstones_key(slug), self.incarnation_key(shard)]
        tombstone = data["id"] if event_type == "message_deleted" else ""
        args = [str(event_id), str(previous) if previous is not None else "", event_type,
                json.dumps(data, separators=(",", ":"), ensure_ascii=False), slug, self.maxlen, self.firehose_maxlen,
                tombstone, "" if verifying else "1", self._oldest_kept()]
        return {"keys": keys, "args": args}

    def _oldest_kept(self) -> str:
        """The lowest id the streams keep by age (CHAT_STREAM_MAX_AGE_SECONDS), '0-0' without that bound."""
        return f"{int(time.time() * 1000) - self.max_age_ms}-0" if self.max_age_ms else "0-0"

    def trim_by_age(self, slugs: list[str]) -> None:
        """Trim these rooms' streams, and the firehose, by age: a publish trims its own room, this the idle."""
        if not self.max_age_ms:
            return
        oldest, pipe = self._oldest_kept(), self.redis.pipeline(transaction=False)
        for key in [*(self.firehose_key(shard) for shard in range(self.shards)),
                    *(self.room_stream_key(slug) for slug in slugs)]:
            pipe.xtrim(key, minid=oldest)
        pipe.execute()

    @staticmethod
    def _outcome(outcome) -> tuple[str, EventId | None]:
        if outcome[0] == "EPOCH":
            raise Refused()
        if outcome[0] == "GAP":
            return "GAP", _parse_id(outcome[1])
        return outcome[0], None

    def publish_roomless(self, record_id: int, event_type: str, data: str) -> bool:
        """Append an event of no room (events.ROOMLESS; `data` its JSON) to the firehose, where its position is
        its id, once per record: False if it was there already. Raises Refused before this Redis is verified."""
        found = self._publish_roomless(keys=[self.firehose_key(), self.incarnation_key(), self.feed_event_key(record_id)],
                                       args=[event_type, data, self.firehose_maxlen])
        if not found:
            raise Refused()
        return found != "DUP"

    def floor(self, slug: str, last: EventId) -> bool:
        """Start the room's stream over, empty, at `last` if it ends below it (see _FLOOR)."""
        return bool(self._floor(keys=[self.room_stream_key(slug)], args=[str(last)]))

    def last_ids(self, slugs: list[str]) -> dict[str, EventId | None]:
        """Each room stream's last-generated id (None where there is no stream), in one round trip."""
        if not slugs:
            return {}
        found = self._last_ids(keys=[self.room_stream_key(slug) for slug in slugs])
        return {slug: _parse_id(raw) for slug, raw in zip(slugs, found)}

    # Incarnations: each start of the Redis server holding a shard (its run_id) is checked against the database
    # once for that shard.
    def run_id(self, shard: int = 0) -> str:
        """The run_id of the server holding the shard's keys: on a cluster, the master now serving their slot
        (a replica promoted in its place has its own, so the check runs again)."""
        if self.cluster:
            node = self.redis.get_node_from_key(self.incarnation_key(shard))
            return self.redis.info("server", target_nodes=node)["run_id"]
        return self.redis.info("server")["run_id"]

    def incarnation(self, shard: int = 0) -> dict:
        """What the shard's check recorded: `run` (the run_id it was made for), `since` (the position in the
        shard's firehose where this incarnation's feeds begin; positions before it were handed out by an older one)
        and `shards` (CHAT_SHARDS then)."""
        return self.redis.hgetall(self.incarnation_key(shard))

    def mark_verified(self, run: str, since: EventId, shard: int = 0) -> None:
        self.redis.hset(self.incarnation_key(shard), mapping={"run": run, "since": str(since), "shards": self.shards})

    def mark_epoch(self, shard: int = 0) -> EventId:
        """A marker entry in the shard's firehose: positions before it belong to an older incarnation."""
        return EventId.parse(self.redis.xadd(self.firehose_key(shard), {"type": "epoch"},
                                             maxlen=self.firehose_maxlen, approximate=True))

    def claim(self, job: str, seconds: float) -> bool:
        """True for one caller across all processes per `seconds` (a lease for periodic jobs)."""
        return bool(self.redis.set(f"{self.prefix}:lease:{job}", "1", nx=True, px=int(seconds * 1000)))

    def release(self, job: str) -> None:
        self.redis.delete(f"{self.prefix}:lease:{job}")

    def read_after(self, slug: str | None, after: EventId, count: int, shard: int = 0) -> tuple[Window, list[Entry]]:
        """Durable events after `after`, oldest first, from a room's stream (or if slug is None the shard's firehose)."""
        shard = shard_of(slug, self.shards) if slug else shard
        key = self.room_stream_key(slug) if slug else self.firehose_key(shard)
        keys = [key, self.incarnation_key(shard), *([self.tombstones_key(slug)] if slug else [])]
        last, first, rows, length, checked = self._read_after(keys=keys, args=[str(after), count, self.shard_tag(shard)])
        entries = []
        for raw_id, kind, data, deleted, room, room_id in rows:
            entries.append(Entry(EventId.parse(raw_id), kind, _tombstoned(json.loads(data), deleted, kind),
                                 room or slug, EventId.parse(room_id)))
        return Window(_parse_id(last), _parse_id(first), int(length), bool(checked)), entries

    def reader(self) -> redis.Redis | RedisCluster:
        """A client with one connection of its own (per node, on a cluster), for the hub's blocking reads."""
        if self._connect_reader is not None:
            return self._connect_reader()
        assert not self.cluster, "a cluster's Streams needs connect_reader"
        kwargs = dict(self.redis.connection_pool.connection_kwargs)
        kwargs.update(socket_timeout=30)  # above the blocking read's 5 s
        pool = redis.ConnectionPool(connection_class=self.redis.connection_pool.connection_class,
                                    max_connections=1, **kwargs)
        return redis.Redis(connection_pool=pool)

    def positions(self, shard: int = 0) -> tuple[EventId, EventId, EventId]:
        """Where the shard's firehose, the control stream (shard 0's; ZERO for the others) and the shard's presence
        changes end now: a hub's reader of the shard starts reading after them (one slot: the shard's tag)."""
        pipe = self.redis.pipeline(transaction=False)
        keys = [self.firehose_key(shard), self.presence_changes_key(shard), *([self.control_key()] if shard == 0 else [])]
        for key in keys:
            pipe.xrevrange(key, count=1)
        ends = [EventId.parse(found[0][0]) if found else ZERO for found in pipe.execute()]
        return ends[0], ends[2] if shard == 0 else ZERO, ends[1]

    READ_COUNT = 1000  # entries per stream per read; below PRESENCE_CHANGES_MAXLEN (see read_new)

    def read_new(self, reader: redis.Redis, shard: int, firehose_after: EventId, control_after: EventId,
                 presence_after: EventId, block_ms: int) -> NewEntries:
        """Block until the shard's firehose or presence changes, or for shard 0 the control stream, have entries
        after the given positions (one slot: the shard's tag)."""
        firehose_key, changes_key = self.firehose_key(shard), self.presence_changes_key(shard)
        wanted = {firehose_key: str(firehose_after), changes_key: str(presence_after)}
        if shard == 0:
            wanted[self.control_key()] = str(control_after)
        reply = reader.xread(wanted, count=self.READ_COUNT, block=block_ms) or []
        found = NewEntries([], [], set(), presence_after, False)
        for key, rows in reply:
            if key == changes_key:
                found.rooms_changed.update(fields["room"] for _, fields in rows)
                found.presence_at = EventId.parse(rows[-1][0]) if rows else presence_after
                # Trimming (approximate: it keeps at least MAXLEN >= READ_COUNT entries) can pass a reader only by
                # more than READ_COUNT newer entries, so a read that is not full missed nothing.
                found.presence_overflowed = len(rows) >= self.READ_COUNT
                continue
            for raw_id, fields in rows:
                if key == firehose_key:
                    if fields["type"] == "epoch":
                        continue
                    room_event_id = EventId.parse(fields["id"]) if "id" in fields else None  # none: no room
                    found.firehose.append(Entry(EventId.parse(raw_id), fields["type"], json.loads(fields["data"]),
                                                fields["room"], room_event_id))
                else:
                    found.control.append((EventId.parse(raw_id), fields))
        return found

    def window(self, slug: str | None, shard: int = 0) -> Window:
        """Where a room's stream (or if slug is None the shard's firehose) stands now."""
        return self.read_after(slug, ZERO, 0, shard)[0]

    # Presence: a sorted set per room of `username|connection` scored by when it was last seen, one sorted set of
    # the rooms scored by when any of their members was last written (for feeds of every room), and a stream per
    # shard where each change of a room's membership is announced (what hubs follow instead of polling lists).
    PRESENCE_CHANGES_MAXLEN = 5000

    def presence_key(self, slug: str) -> str:
        return f"{self._room(slug)}:online"

    def presence_rooms_key(self, shard: int = 0) -> str:
        return f"{self.shard_tag(shard)}:presence:rooms"

    def presence_changes_key(self, shard: int = 0) -> str:
        return f"{self.shard_tag(shard)}:presence:changes"

    PRESENCE_ROOMS_PER_CALL = 200  # Redis runs nothing else while a script runs: keep each to about a millisecond

    def touch_presence(self, rooms: dict[str, list[str] | dict[str, float]], ttl: int) -> set[str]:
        """Mark each room's members as seen now (or, given as a mapping, at their own wall-clock times), dropping the
        rooms' expired ones, in one script call per shard and PRESENCE_ROOMS_PER_CALL rooms. The rooms where who is
        online changed (each announced)."""
        now = time.time()
        by_shard, changed = {}, set()
        for slug in rooms:
            by_shard.setdefault(shard_of(slug, self.shards), []).append(slug)
        for shard, slugs in by_shard.items():
            for start in range(0, len(slugs), self.PRESENCE_ROOMS_PER_CALL):
                group = slugs[start:start + self.PRESENCE_ROOMS_PER_CALL]
                args = [now - ttl, ttl * 2, self.PRESENCE_CHANGES_MAXLEN]
                for slug in group:
                    members = rooms[slug]
                    seen = members if isinstance(members, dict) else dict.fromkeys(members, now)
                    args += [slug, max(seen.values(), default=now), len(seen),
                             *(value for member, score in seen.items() for value in (score, member))]
                changed.update(self._touch_presence(
                    keys=[self.presence_rooms_key(shard), self.presence_changes_key(shard),
                          *map(self.presence_key, group)], args=args))
        return changed

    def rooms_with_presence(self, seconds: float) -> list[str]:
        """The rooms whose presence was written within `seconds` (older ones are forgotten): where someone is
        online, or was until lately (long enough for their list to be seen emptying). In every shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zremrangebyscore(self.presence_rooms_key(shard), "-inf", time.time() - seconds)
            pipe.zrange(self.presence_rooms_key(shard), 0, -1)
        return [room for found in pipe.execute()[1::2] for room in found]

    def leave_presence(self, slug: str, member: str) -> None:
        """Remove a member, announcing the room's change if it was there."""
        self._leave_presence(keys=[self.presence_key(slug), self.presence_changes_key(shard_of(slug, self.shards))],
                             args=[member, slug, self.PRESENCE_CHANGES_MAXLEN])

    def online(self, slugs: list[str], ttl: int) -> dict[str, list[str]]:
        """Usernames seen within `ttl` seconds, per room, sorted ignoring case (a read: expired members stay)."""
        pipe = self.redis.pipeline(transaction=False)
        for slug in slugs:
            pipe.zrangebyscore(self.presence_key(slug), time.time() - ttl, "+inf")
        return {slug: _usernames(members) for slug, members in zip(slugs, pipe.execute())}

    def sweep_presence(self, slugs, ttl: int) -> dict[str, tuple[list[str], float | None]]:
        """online(), dropping expired members from Redis as it reads, and announcing each room that had any: the
        rooms' lists stay exact for every process without any of them polling. Each room's list comes with when
        its first member expires unless written again (wall clock; None: nobody is there). One call per shard."""
        by_shard, found, cutoff = {}, {}, time.time() - ttl
        for slug in slugs:
            by_shard.setdefault(shard_of(slug, self.shards), []).append(slug)
        for shard, group in by_shard.items():
            answer = self._sweep_presence(keys=[self.presence_changes_key(shard), *map(self.presence_key, group)],
                                          args=[cutoff, self.PRESENCE_CHANGES_MAXLEN, *group])
            for slug, members, oldest in zip(group, answer[0::2], answer[1::2]):
                found[slug] = (_usernames(members), float(oldest) + ttl if oldest else None)
        return found

    # Open streams and waiting polls per user, across processes: a hash per user, a field per process.
    def user_streams_key(self, username: str) -> str:
        return f"{self.prefix}:streams:user:{username}"

    def publish_user_streams(self, process: str, counts: dict[str, str | int], ttl: int) -> None:
        """This process's count for each of these users (0 removes it); each hash lives `ttl` seconds
        past its last write."""
        pipe = self.redis.pipeline(transaction=False)
        for username, count in counts.items():
            key = self.user_streams_key(username)
            if count:
                pipe.hset(key, process, count)
                pipe.expire(key, ttl)
            else:
                pipe.hdel(key, process)
        pipe.execute()

    def user_streams(self, usernames) -> dict[str, dict[str, str]]:
        """Each user's counts per process, as published."""
        usernames = list(usernames)
        pipe = self.redis.pipeline(transaction=False)
        for username in usernames:
            pipe.hgetall(self.user_streams_key(username))
        return dict(zip(usernames, pipe.execute()))

    def announce_end(self, *, reason: str, session_id: int | None = None, user_id: int | None = None) -> None:
        """Tell every process to end the streams and polls of a session or a user.

        A stream, not pub/sub: a process that is reconnecting reads what it missed.
        """
        self.redis.xadd(self.control_key(), {"reason": reason, "session_id": session_id or "", "user_id": user_id or ""},
                        maxlen=10000, approximate=True)

    def rate_limited(self, scope: str, limit: int, seconds: int) -> int:
        """Count one attempt in `scope`'s window; 0 if allowed, else seconds until it is."""
        return int(self._rate_limit(keys=[self.rate_key(scope)], args=[limit, seconds]))

    def rate_give_back(self, scope: str) -> None:
        """Uncount one attempt that `rate_limited` allowed in `scope`'s window (it turned out not to be one)."""
        self._rate_give_back(keys=[self.rate_key(scope)])

    def post_allowed(self, user_id: int, room_id: int, nbytes: int, per_room, per_user, bytes_per_user) -> int:
        """Count a post in its three windows (each `(limit, seconds)`): 0 if all allow it, else the seconds
        until the first that refuses frees up (and nothing is counted)."""
        keys = self._post_keys(user_id, room_id)
        args = [*per_room, 1, *per_user, 1, *bytes_per_user, nbytes]
        return int(self._post_allowance(keys=keys, args=args))

    def posts_allowed(self, posts: list[tuple[int, int, int]], per_room, per_user, bytes_per_user) -> list[int]:
        """post_allowed for each post `(user_id, room_id, nbytes)`, in order, in one round trip."""
        calls = [{"keys": self._post_keys(user_id, room_id), "args": [*per_room, 1, *per_user, 1, *bytes_per_user, nbytes]}
                 for user_id, room_id, nbytes in posts]
        return [int(answer) for answer in self._each(self._post_allowance, calls)]

    def post_give_back(self, user_id: int, room_id: int, nbytes: int) -> None:
        """Uncount a post that `post_allowed` counted but that turned out not to be one (slow mode refused it)."""
        self._post_give_back(keys=self._post_keys(user_id, room_id), args=[1, 1, nbytes])

    def _post_keys(self, user_id: int, room_id: int) -> list[str]:
        """The three windows of a post, in one script: they share a hash tag of their user's."""
        user = f"{{{self.prefix}:u{user_id}}}"
        return [f"{user}:rate:post:{room_id}", f"{user}:rate:post", f"{user}:rate:post-bytes"]

    def slow_mode_wait(self, slug: str, user_id: int, seconds: int, post: str) -> int:
        """Slow mode, atomically across processes: 0, and the post named `post` becomes the user's last in
        the room (at Redis's clock), unless their last one, named otherwise, was under `seconds` ago: then
        the seconds left (at least 1). A retry of the same post is never refused. The key outlives the
        longest slow mode (an hour), so a changed setting applies to posts already made."""
        return int(self._slow_mode(keys=[self.slow_mode_key(slug, user_id)], args=[post, seconds]))

    def ping(self) -> bool:
        return self.redis.ping()

    def eviction_policy(self) -> str:
        """Redis's maxmemory-policy (from INFO: managed Redis services often refuse CONFIG); on a cluster, the
        first master's that is not `noeviction`, if any."""
        if not self.cluster:
            return self.redis.info("memory").get("maxmemory_policy", "unknown")
        found = self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
        policies = [info.get("maxmemory_policy", "unknown") for info in found.values()]
        return next((policy for policy in policies if policy != "noeviction"), "noeviction")


def _usernames(members) -> list[str]:
    """A room's online list from its presence members (`username|connection`): each user once, sorted ignoring case."""
    return sorted({member.rsplit("|", 1)[0] for member in members}, key=str.lower)


def _tombstoned(data: dict, deleted, kind: str = "message") -> dict:
    """Never replay a deleted message's text (a message, or the one a report's event holds)."""
    return tombstoned_event(kind, data) if deleted else data


def current() -> Streams:
    """The app's Streams, created with its Redis client on first use."""
    from flask import current_app  # noqa: PLC0415

    from .extensions import redis_client  # noqa: PLC0415

    app = current_app._get_current_object()
    found = app.extensions.get("chat_streams")
    if found is None:
        found = app.extensions["chat_streams"] = Streams(
            redis_client.get(app), app.config["CHAT_REDIS_PREFIX"], app.config["CHAT_STREAM_MAXLEN"],
            app.config["CHAT_STREAM_MAX_AGE_SECONDS"], app.config["CHAT_SHARDS"],
            connect_reader=lambda: redis_client.reader(app))
    return found
