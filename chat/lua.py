"""The Redis scripts (Lua) behind streams.py's operations: each runs atomically on one Redis, and every key it
touches shares one hash tag, so on Redis Cluster each touches one slot. streams.py names the keys and
calls them; nothing else does."""

_IDS = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function below(a, b)  -- stream ids compared as (ms, seq) pairs
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local function last_id(key)  -- the stream's last-generated id (also when it is empty), or false
  if redis.call('EXISTS', key) == 0 then return false end
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #top > 0 then return top[1][1] end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do if info[i] == 'last-generated-id' then return info[i + 1] end end
  return false
end
local function verified(key)  -- whether this Redis's data has been checked against the database
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  return redis.call('HGET', key, 'run') == run
end
"""

PUBLISH = _IDS + """
-- Publish one durable event of a room, with the id the database gave it, after the room's previous one.
-- KEYS: room stream, firehose, tombstones, incarnation
-- ARGV: id, previous id ('': the event whose seq is one less), type, data, slug, maxlen, firehose maxlen,
--       tombstone ('' or the deleted message's id), '1' unless the caller is the check itself,
--       the oldest id either stream keeps ('0-0': no age bound)
-- Returns {'OK'}, {'DUP'} (published already), {'GAP', last id or ''} (publish what is missing first),
-- or {'EPOCH'} (this Redis has not been checked against the database yet).
if ARGV[9] == '1' and not verified(KEYS[4]) then return {'EPOCH'} end
local last = last_id(KEYS[1])
local _, seq = parse(ARGV[1])
if last then
  if not below(last, ARGV[1]) then return {'DUP'} end
  local _, last_seq = parse(last)
  if (ARGV[2] == '' and last_seq ~= seq - 1) or (ARGV[2] ~= '' and last ~= ARGV[2]) then return {'GAP', last} end
elseif not (ARGV[2] == '0-0' or (ARGV[2] == '' and seq == 1)) then
  return {'GAP', ''}
end
if ARGV[8] ~= '' then redis.call('SADD', KEYS[3], ARGV[8]) end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], ARGV[1], 'type', ARGV[3], 'data', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'room', ARGV[5], 'id', ARGV[1], 'type', ARGV[3], 'data', ARGV[4])
if ARGV[10] ~= '0-0' then  -- an emptied stream keeps its last-generated id: continuity is unaffected
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[10])
  redis.call('XTRIM', KEYS[2], 'MINID', ARGV[10])
end
return {'OK'}
"""

PUBLISH_ROOMLESS = _IDS + """
-- Append an event of no room (a ban: events.ROOMLESS) to the firehose alone, once: the event's record
-- (models.FeedEvent) is named by a key that lives a day, so a retry by the relay is a no-op.
-- KEYS: firehose, incarnation, the event's once-key. ARGV: type, data, firehose maxlen.
-- Returns the entry's id, 'DUP' (published already), or false (this Redis has not been checked yet).
if not verified(KEYS[2]) then return false end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', 86400) then return 'DUP' end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'room', '', 'type', ARGV[1], 'data', ARGV[2])
"""

FLOOR = _IDS + """
-- KEYS: room stream. ARGV: the id of the room's last event in the database.
-- A stream that ends below it (Redis lost or rolled back entries) starts over, empty, at that id:
-- everything up to it is read from the database. Returns 1 if it did.
local last = last_id(KEYS[1])
if last and not below(last, ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '0', ARGV[1], 'type', 'floor')
return 1
"""

LAST_IDS = _IDS + """
-- KEYS: room streams. Returns each one's last-generated id, or '' where there is none.
local out = {}
for i, key in ipairs(KEYS) do out[i] = last_id(key) or '' end
return out
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

READ_AFTER = _STREAM_INFO + _IDS + """
-- KEYS: stream, incarnation, tombstones (none for a firehose: each entry's room names its set)
-- ARGV: after id, count, the shard's hash tag (a firehose's rooms are of its shard: their sets share its slot)
-- Returns {last-generated id, first retained id, {{id, type, data, deleted, room, room id}...} oldest first, length,
-- whether this Redis was checked against the database}
local checked = verified(KEYS[2]) and 1 or 0
local bounds = info(KEYS[1])
if not bounds[1] then return {false, false, {}, 0, checked} end
local out = {}
if tonumber(ARGV[2]) == 0 then return {bounds[1], bounds[2], out, bounds[3], checked} end
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])) do
  local kind = field(entry, 'type')
  if kind ~= 'floor' and kind ~= 'epoch' then
    local room, room_id = field(entry, 'room') or '', field(entry, 'id') or entry[1]
    local tombstones = KEYS[3]
    if not tombstones then tombstones = ARGV[3] .. ':room:' .. room .. ':deleted' end  -- same shard: same slot
    local message_id = room_id  -- a message's own id; a report's event holds the reported message's
    if kind == 'report_created' or kind == 'report_resolved' then
      local ok, decoded = pcall(cjson.decode, field(entry, 'data'))
      message_id = ok and type(decoded.report) == 'table' and type(decoded.report.message) == 'table'
        and decoded.report.message.id or ''
    end
    out[#out + 1] = {entry[1], kind, field(entry, 'data'), redis.call('SISMEMBER', tombstones, message_id), room,
                     room_id}
  end
end
return {bounds[1], bounds[2], out, bounds[3], checked}
"""

_ANNOUNCE = """
local function announce(changes, maxlen, slug)  -- a room's membership changed: every process re-reads its list
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'room', slug)
end
"""

TOUCH_PRESENCE = _ANNOUNCE + """
-- Mark members of rooms as seen (each with its score), dropping those not seen since the cutoff, and announce each
-- room where that changed who is online (a member added or dropped), so that no process has to poll. One call for
-- many rooms of a shard: a process's heartbeat of all its rooms is a few calls, not one per room.
-- KEYS: the shard's presence rooms index, the shard's presence changes stream, then the rooms' presence sets
-- ARGV: cutoff (scores below it have expired), the sets' lifetime in seconds, the changes' maxlen, then for each
--       room, in KEYS' order: its slug, its score in the index, its number of members, its (score, member) pairs.
-- Returns the slugs of the rooms where who is online changed.
local changed_rooms, at = {}, 4
for k = 3, #KEYS do
  local slug, last = ARGV[at], at + 2 + 2 * tonumber(ARGV[at + 2])
  local changed = redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', '(' .. ARGV[1])
  local batch = {}
  for i = at + 3, last, 2 do
    batch[#batch + 1] = ARGV[i]
    batch[#batch + 1] = ARGV[i + 1]
    if #batch >= 1000 or i + 2 > last then  -- unpack is bounded by Lua's stack
      changed = changed + redis.call('ZADD', KEYS[k], unpack(batch))
      batch = {}
    end
  end
  redis.call('EXPIRE', KEYS[k], ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[at + 1], slug)
  if changed > 0 then
    announce(KEYS[2], ARGV[3], slug)
    changed_rooms[#changed_rooms + 1] = slug
  end
  at = last + 1
end
return changed_rooms
"""

LEAVE_PRESENCE = _ANNOUNCE + """
-- KEYS: the room's presence set, the shard's presence changes stream. ARGV: member, slug, the changes' maxlen.
-- Remove the member, announcing the room if it was there. Returns 1 if it was.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed > 0 then announce(KEYS[2], ARGV[3], ARGV[2]) end
return removed
"""

SWEEP_PRESENCE = _ANNOUNCE + """
-- Read rooms' presence, dropping (and announcing) members that expired without anyone writing the room since:
-- a member whose process died leaves this way.
-- KEYS: the shard's presence changes stream, then the rooms' presence sets (all of that shard)
-- ARGV: cutoff (scores below it have expired), the changes' maxlen, then the rooms' slugs, as KEYS.
-- Returns each room's members (`username|connection`), in KEYS' order, each list followed by its oldest score
-- (when the first of them expires, less the TTL) or false.
local out = {}
for i = 2, #KEYS do
  if redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[1]) > 0 then announce(KEYS[1], ARGV[2], ARGV[i + 1]) end
  out[#out + 1] = redis.call('ZRANGE', KEYS[i], 0, -1)
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  out[#out + 1] = oldest[2] or false
end
return out
"""

RATE_LIMIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return math.max(redis.call('TTL', KEYS[1]), 1) end
return 0
"""

POST_ALLOWANCE = """
-- A post counts in three fixed windows at once: messages per user and room, messages per user, bytes per user.
-- KEYS: the three window keys. ARGV: for each, limit, seconds, amount (room: 1, user: 1, bytes: the body's).
-- Nothing is counted unless all three have room: returns 0, else the seconds until the first full one frees.
for i = 1, 3 do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[3 * i]) > tonumber(ARGV[3 * i - 2]) then
    return math.max(redis.call('TTL', KEYS[i]), 1)
  end
end
for i = 1, 3 do
  if redis.call('INCRBY', KEYS[i], ARGV[3 * i]) == tonumber(ARGV[3 * i]) then
    redis.call('EXPIRE', KEYS[i], ARGV[3 * i - 1])
  end
end
return 0
"""

POST_GIVE_BACK = """
-- Uncount a post (KEYS and amounts as counted), only within the windows that counted it.
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], ARGV[i]) end
end
"""

RATE_GIVE_BACK = """
-- Only within the window that counted it: DECR keeps the TTL, and no key is made without one.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
"""

SLOW_MODE = """
-- Slow mode: 0, and ARGV[1] (a post's name) becomes the user's last in the room at Redis's clock, unless
-- their last, named otherwise, was under ARGV[2] seconds ago: then the seconds left (at least 1).
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
