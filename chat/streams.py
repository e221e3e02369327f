"""Redis: the only module that knows a key name or calls an X* command.

Each room has a stream (its ordered log) and a set of deleted message ids (tombstones applied when
entries are read back). One firehose stream carries every room's durable events, appended in the
same script as the room's entry: the moderators' feed, and what each process's hub reads.
"""
import json
import time
from dataclasses import dataclass

import redis

from .ids import ZERO, EventId

_FIELDS_APPEND = """
-- KEYS: room stream, firehose, tombstones, write key (or '')
-- ARGV: type, data, room slug, maxlen, firehose maxlen, write key ttl, floor id (or ''), tombstone id (or '')
if KEYS[4] ~= '' then
  local done = redis.call('GET', KEYS[4])
  if done then return done end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- New room, or Redis lost the stream: ids must continue after what the database holds.
  if ARGV[7] == '' then return redis.error_reply('NOSTREAM need the floor id') end
  if ARGV[7] ~= '0-0' then redis.call('XADD', KEYS[1], 'MAXLEN', '0', ARGV[7], 'type', 'floor') end
end
if ARGV[8] ~= '' then redis.call('SADD', KEYS[3], ARGV[8]) end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'type', ARGV[1], 'data', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'room', ARGV[3], 'id', id, 'type', ARGV[1], 'data', ARGV[2])
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], id, 'EX', ARGV[6]) end
return id
"""

_STREAM_INFO = """
local function info(key)
  if redis.call('EXISTS', key) == 0 then return {false, false, 0} end
  local raw = redis.call('XINFO', 'STREAM', key)
  local last, first, length = false, false, 0
  for i = 1, #raw, 2 do
    if raw[i] == 'last-generated-id' then last = raw[i + 1] end
    if raw[i] == 'first-entry' and raw[i + 1] then first = raw[i + 1][1] end
    if raw[i] == 'length' then length = raw[i + 1] end
  end
  return {last, first, length}
end
local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return false
end
"""

_HISTORY = _STREAM_INFO + """
-- KEYS: room stream, tombstones. ARGV: start ('+' or '(id'), how many messages, batch size
-- Returns {last-generated id, first retained id, {{id, data, deleted}...} newest first, exhausted}
local bounds = info(KEYS[1])
if not bounds[1] then return {false, false, {}, 1} end
local found, start, want, batch = {}, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local exhausted = 0
while #found < want do
  local entries = redis.call('XREVRANGE', KEYS[1], start, '-', 'COUNT', batch)
  for _, entry in ipairs(entries) do
    if field(entry, 'type') == 'message' then
      found[#found + 1] = {entry[1], field(entry, 'data'), redis.call('SISMEMBER', KEYS[2], entry[1])}
      if #found >= want then break end
    end
  end
  if #entries < batch then exhausted = 1; break end
  start = '(' .. entries[#entries][1]
end
return {bounds[1], bounds[2], found, exhausted}
"""

_READ_AFTER = _STREAM_INFO + """
-- KEYS: stream, tombstones ('' for the firehose: each entry's room names its set). ARGV: after id, count, prefix
-- Returns {last-generated id, first retained id, {{id, type, data, deleted, room, room id}...} oldest first, length}
local bounds = info(KEYS[1])
if not bounds[1] then return {false, false, {}, 0} end
local out = {}
if tonumber(ARGV[2]) == 0 then return {bounds[1], bounds[2], out, bounds[3]} end
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])) do
  local kind = field(entry, 'type')
  if kind ~= 'floor' then
    local room, room_id = field(entry, 'room') or '', field(entry, 'id') or entry[1]
    local tombstones = KEYS[2]
    if tombstones == '' then tombstones = ARGV[3] .. ':{room:' .. room .. '}:deleted' end
    out[#out + 1] = {entry[1], kind, field(entry, 'data'), redis.call('SISMEMBER', tombstones, room_id), room, room_id}
  end
end
return {bounds[1], bounds[2], out, bounds[3]}
"""

_RATE_LIMIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return math.max(redis.call('TTL', KEYS[1]), 1) end
return 0
"""

_RATE_GIVE_BACK = """
-- Only within the window that counted it: DECR keeps the TTL, and no key is made without one.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
"""


class StreamMissing(Exception):
    """The room's stream does not exist (new room, or Redis lost it): call again with the floor id."""


@dataclass(frozen=True)
class Entry:
    """A durable event read back from a stream, tombstones applied."""

    id: EventId  # position in the stream it was read from (the firehose has its own)
    type: str
    data: dict
    room: str = ""
    room_event_id: EventId | None = None


@dataclass(frozen=True)
class Window:
    """What a stream holds: `last` is where it continues after, `first` its oldest retained entry."""

    last: EventId | None
    first: EventId | None
    length: int = 0  # entries held; below the stream's MAXLEN, nothing was ever trimmed from it


def _parse_id(raw) -> EventId | None:
    return EventId.parse(raw) if raw else None


class Streams:
    """Named operations on the service's Redis keys, for one key prefix."""

    WRITE_KEY_TTL = 7 * 24 * 3600  # a retried write this late still finds its first id

    def __init__(self, client: redis.Redis, prefix: str, maxlen: int):
        self.redis = client
        self.prefix = prefix
        self.maxlen = maxlen
        self.firehose_maxlen = max(maxlen * 10, 100000)
        self._append = client.register_script(_FIELDS_APPEND)
        self._history = client.register_script(_HISTORY)
        self._read_after = client.register_script(_READ_AFTER)
        self._rate_limit = client.register_script(_RATE_LIMIT)
        self._rate_give_back = client.register_script(_RATE_GIVE_BACK)

    # Key builders. The room's keys share a hash tag so its script runs on one Cluster slot.
    def room_stream_key(self, slug: str) -> str:
        return f"{self.prefix}:{{room:{slug}}}:log"

    def tombstones_key(self, slug: str) -> str:
        return f"{self.prefix}:{{room:{slug}}}:deleted"

    def write_key(self, slug: str, write_key: str) -> str:
        return f"{self.prefix}:{{room:{slug}}}:write:{write_key}"

    def firehose_key(self) -> str:
        return f"{self.prefix}:firehose"

    def control_key(self) -> str:
        return f"{self.prefix}:control"

    def rate_key(self, scope: str) -> str:
        return f"{self.prefix}:rate:{scope}"

    def append(self, slug: str, event_type: str, data: dict, *, write_key: str | None = None,
               floor: EventId | None = None, tombstone: str | None = None) -> EventId:
        """Append a durable event to the room's stream and the firehose, atomically.

        With `write_key`, a repeat returns the first append's id instead of appending again.
        Raises StreamMissing when the stream does not exist and no `floor` was given; the caller
        passes the highest id the database holds (or ZERO), so ids never go backwards.
        """
        keys = [self.room_stream_key(slug), self.firehose_key(), self.tombstones_key(slug),
                self.write_key(slug, write_key) if write_key else ""]
        args = [event_type, json.dumps(data, separators=(",", ":"), ensure_ascii=False), slug, self.maxlen,
                self.firehose_maxlen, self.WRITE_KEY_TTL, str(floor) if floor else "", tombstone or ""]
        try:
            return EventId.parse(self._append(keys=keys, args=args))
        except redis.ResponseError as error:
            if "NOSTREAM" in str(error):
                raise StreamMissing(slug) from None
            raise

    def appended_id(self, slug: str, write_key: str) -> EventId | None:
        """The id an append under `write_key` got, if it happened (and Redis still remembers)."""
        found = self.redis.get(self.write_key(slug, write_key))
        return EventId.parse(found) if found else None

    def claim(self, job: str, seconds: int) -> bool:
        """True for one caller across all processes per `seconds` (a lease for periodic jobs)."""
        return bool(self.redis.set(f"{self.prefix}:lease:{job}", "1", nx=True, ex=seconds))

    def history(self, slug: str, before: EventId | None, count: int) -> tuple[Window, list[Entry], bool]:
        """Up to `count` messages before `before` (newest first), read in one atomic step with the
        stream's position, so nothing can fall between the history and its cursor.
        Returns the window, the messages and whether the stream was read to its oldest entry."""
        start = f"({before}" if before else "+"
        last, first, rows, exhausted = self._history(
            keys=[self.room_stream_key(slug), self.tombstones_key(slug)], args=[start, count, max(count, 100)])
        messages = [Entry(EventId.parse(i), "message", _tombstoned(json.loads(d), deleted)) for i, d, deleted in rows]
        return Window(_parse_id(last), _parse_id(first)), messages, bool(exhausted)

    def read_after(self, slug: str | None, after: EventId, count: int) -> tuple[Window, list[Entry]]:
        """Durable events after `after`, oldest first, from a room's stream (or the firehose if slug is None)."""
        key = self.room_stream_key(slug) if slug else self.firehose_key()
        tombstones = self.tombstones_key(slug) if slug else ""
        last, first, rows, length = self._read_after(keys=[key, tombstones], args=[str(after), count, self.prefix])
        entries = []
        for raw_id, kind, data, deleted, room, room_id in rows:
            entries.append(Entry(EventId.parse(raw_id), kind, _tombstoned(json.loads(data), deleted, kind),
                                 room or slug, EventId.parse(room_id)))
        return Window(_parse_id(last), _parse_id(first), int(length)), entries

    def reader(self) -> redis.Redis:
        """A client with one connection of its own, for the hub's blocking reads."""
        kwargs = dict(self.redis.connection_pool.connection_kwargs)
        kwargs.update(socket_timeout=30)  # above the blocking read's 5 s
        pool = redis.ConnectionPool(connection_class=self.redis.connection_pool.connection_class,
                                    max_connections=1, **kwargs)
        return redis.Redis(connection_pool=pool)

    def positions(self) -> tuple[EventId, EventId]:
        """Where the firehose and the control stream end now: a hub starts reading after them."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrevrange(self.firehose_key(), count=1)
        pipe.xrevrange(self.control_key(), count=1)
        firehose, control = pipe.execute()
        return (EventId.parse(firehose[0][0]) if firehose else ZERO,
                EventId.parse(control[0][0]) if control else ZERO)

    def read_new(self, reader: redis.Redis, firehose_after: EventId, control_after: EventId,
                 block_ms: int) -> tuple[list[Entry], list[tuple[EventId, dict]]]:
        """Block until the firehose or the control stream has entries after the given positions."""
        reply = reader.xread({self.firehose_key(): str(firehose_after), self.control_key(): str(control_after)},
                             count=1000, block=block_ms) or []
        firehose, control = [], []
        for key, rows in reply:
            for raw_id, fields in rows:
                if key == self.firehose_key():
                    firehose.append(Entry(EventId.parse(raw_id), fields["type"], json.loads(fields["data"]),
                                          fields["room"], EventId.parse(fields["id"])))
                else:
                    control.append((EventId.parse(raw_id), fields))
        return firehose, control

    def window(self, slug: str | None) -> Window:
        """Where a room's stream (or the firehose) stands now."""
        return self.read_after(slug, ZERO, 0)[0]

    # Presence: a sorted set per room of `username|connection` scored by when it was last seen.
    def presence_key(self, slug: str) -> str:
        return f"{self.prefix}:{{room:{slug}}}:online"

    def touch_presence(self, slug: str, members: list[str] | dict[str, float], ttl: int) -> None:
        """Mark members as seen now (or, given as a mapping, at their own wall-clock times)."""
        now = time.time()
        seen = members if isinstance(members, dict) else dict.fromkeys(members, now)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.presence_key(slug), seen)
        pipe.zremrangebyscore(self.presence_key(slug), "-inf", now - ttl)
        pipe.expire(self.presence_key(slug), ttl * 2)
        pipe.execute()

    def leave_presence(self, slug: str, member: str) -> None:
        self.redis.zrem(self.presence_key(slug), member)

    def online(self, slugs: list[str], ttl: int) -> dict[str, list[str]]:
        """Usernames seen within `ttl` seconds, per room, sorted ignoring case."""
        pipe = self.redis.pipeline(transaction=False)
        for slug in slugs:
            pipe.zrangebyscore(self.presence_key(slug), time.time() - ttl, "+inf")
        result = {}
        for slug, members in zip(slugs, pipe.execute()):
            result[slug] = sorted({member.rsplit("|", 1)[0] for member in members}, key=str.lower)
        return result

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

    def slow_mode_wait(self, slug: str, user_id: int, seconds: int, post: str) -> int:
        """Slow mode, atomically across processes: 0, and the post named `post` becomes the user's last in
        the room (at Redis's clock), unless their last one, named otherwise, was under `seconds` ago: then
        the seconds left (at least 1). A retry of the same post is never refused. The key outlives the
        longest slow mode (an hour), so a changed setting applies to posts already made."""
        script = """
        local at, now = redis.call('HMGET', KEYS[1], 'post', 'at'), redis.call('TIME')
        local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        if at[1] and at[1] ~= ARGV[1] then
          local left = tonumber(at[2]) + tonumber(ARGV[2]) * 1000 - now_ms
          if left > 0 then return math.ceil(left / 1000) end
        end
        redis.call('HSET', KEYS[1], 'post', ARGV[1], 'at', now_ms)
        redis.call('EXPIRE', KEYS[1], 3600)
        return 0
        """
        return int(self.redis.eval(script, 1, f"{self.prefix}:{{room:{slug}}}:slow:{user_id}", post, seconds))

    def ping(self) -> bool:
        return self.redis.ping()

    def eviction_policy(self) -> str:
        """Redis's maxmemory-policy (from INFO: managed Redis services often refuse CONFIG)."""
        return self.redis.info("memory").get("maxmemory_policy", "unknown")


def _tombstoned(data: dict, deleted, kind: str = "message") -> dict:
    """Never replay a deleted message's text."""
    if kind == "message" and deleted:
        return {**data, "body": "", "deleted": True}
    return data


def current() -> Streams:
    """The app's Streams, created with its Redis client on first use."""
    from flask import current_app  # noqa: PLC0415

    from .extensions import redis_client  # noqa: PLC0415

    app = current_app._get_current_object()
    found = app.extensions.get("chat_streams")
    if found is None:
        found = app.extensions["chat_streams"] = Streams(
            redis_client.get(app), app.config["CHAT_REDIS_PREFIX"], app.config["CHAT_STREAM_MAXLEN"])
    return found
