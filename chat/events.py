"""The wire format of live events: one event model, encoded for SSE or for a poll's JSON."""
import json
from dataclasses import dataclass, field

from .ids import EventId, FeedPosition, iso, utcnow

PADDING = b":" + b" " * 2048 + b"\n"  # 2 KiB for proxies and browsers that hold back the first bytes


def _json(data) -> str:
    # UTF-8 as is, but U+2028 and U+2029 escaped: line breaks to some SSE and JavaScript parsers.
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def encode(event_type: str, data: dict, event_id=None) -> bytes:
    """One SSE event. Durable events carry `id:`; ephemeral ones carry none."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {_json(data)}\n\n".encode()


@dataclass
class LiveEvent:
    """A durable event as clients see it, with its position in the feed it is read from: a room's event id, or
    for the feeds a FeedPosition, with the shard whose firehose it came from and its own position there."""

    id: EventId | FeedPosition
    type: str
    data: dict
    shard: int = 0
    local: EventId | None = None
    _sse: bytes | None = field(default=None, repr=False, compare=False)
    _chunk: bytes | None = field(default=None, repr=False, compare=False)
    _poll_json: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def sse(self) -> bytes:
        # Encoded once, then the same bytes go to every subscriber in this process.
        if self._sse is None:
            self._sse = encode(self.type, self.data, self.id)
        return self._sse

    @property
    def chunk(self) -> bytes:
        """The event as one HTTP/1.1 chunk, for writing straight to a stream's socket."""
        if self._chunk is None:
            self._chunk = b"%X\r\n%s\r\n" % (len(self.sse), self.sse)
        return self._chunk

    def to_poll(self) -> dict:
        return {"id": str(self.id), "event": self.type, "data": self.data}

    @property
    def poll_json(self) -> bytes:
        """The event as an item of a poll answer's `events`, encoded once per process like `sse`."""
        if self._poll_json is None:
            self._poll_json = _json(self.to_poll()).encode()
        return self._poll_json


def encode_json(value) -> bytes:
    return _json(value).encode()


def poll_answer(found: list, cursor, online: bytes) -> bytes:
    """A poll's JSON answer, from each event's bytes encoded once (polls are answered by the thousand)
    and the online part already encoded."""
    return b'{"events":[%s],"cursor":"%s","online":%s}' % (
        b",".join(item if isinstance(item, bytes) else item.poll_json for item in found), str(cursor).encode(),
        online)


# Events that only the moderators' feed delivers: room streams, room polls and the several-rooms feed
# never do. Their positions stay where they are; a client that does not see them just never gets one
# (the one place this rule is decided: the hub's deliveries, its memory and every catch-up ask it).
MODERATORS_ONLY = frozenset({"report_created", "report_resolved", "user_banned", "user_unbanned"})
# Of those, the events of no room: a ban holds in every room, so it is in the firehose alone (no room's
# stream or record holds it) and reaches a moderators' feed whatever rooms that feed lists.
ROOMLESS = frozenset({"user_banned", "user_unbanned"})


def reaches(event_type: str, sees_reports: bool) -> bool:
    """Whether a durable event of this type goes to a subscriber (`sees_reports`: the moderators' feed)."""
    return sees_reports or event_type not in MODERATORS_ONLY


def in_rooms(event_type: str, room: str, rooms: frozenset | None) -> bool:
    """Whether an event of `room` belongs to a feed of `rooms` (None: every room). An event of no room
    (ROOMLESS) belongs to every feed; `reaches` then says which may see it."""
    return rooms is None or room in rooms or event_type in ROOMLESS


REPORT_EVENTS = frozenset({"report_created", "report_resolved"})  # each holds the reported message


def tombstoned(message: dict) -> dict:
    """A deleted message as everyone sees it from then on: its text gone (the one place this is decided)."""
    return {**message, "body": "", "deleted": True}


def tombstoned_event(event_type: str, data: dict) -> dict:
    """An event's data once the message it shows was deleted: a message, or a report's event holding one."""
    if event_type == "message":
        return tombstoned(data)
    if event_type in REPORT_EVENTS:
        return {**data, "report": {**data["report"], "message": tombstoned(data["report"]["message"])}}
    return data


def shows_message(event: "LiveEvent", message_id: str) -> bool:
    """Whether an event's data shows this message (the message itself, or a report of it)."""
    if event.type == "message":
        return event.data.get("id") == message_id
    return event.type in REPORT_EVENTS and event.data["report"]["message"]["id"] == message_id


def from_entry(entry, position: EventId | None = None) -> LiveEvent:
    """A stream entry as an event. A message's data holds its room event id (entries appended before it
    did get it from the entry's id)."""
    data = entry.data
    if entry.type == "message" and "id" not in data:
        data = {**data, "id": str(entry.room_event_id or entry.id)}
    if entry.type == "room_updated" and "slow_mode_seconds" not in data["room"]:
        # Appended before rooms had slow mode, which was off then (the record's copies are migrated alike).
        data = {**data, "room": {**data["room"], "slow_mode_seconds": 0}}
    return LiveEvent(position or entry.id, entry.type, data)


def feed_event(entry, position: FeedPosition, shard: int) -> LiveEvent:
    """A firehose entry of `shard` as a feed's event, at `position` (every shard's, this entry's included)."""
    event = from_entry(entry, position)
    event.shard, event.local = shard, entry.id
    return event


def first_chunk(retry_ms: int, cursor: EventId, heartbeat: int, rooms: list[str] | None = None) -> bytes:
    ready = {"cursor": str(cursor), "time": now(), "heartbeat": heartbeat}
    if rooms is not None:
        ready["rooms"] = rooms
    return f"retry: {retry_ms}\n".encode() + PADDING + b"\n" + encode("ready", ready)


def reset_poll_item(reason: str) -> bytes:
    return _json({"id": None, "event": "reset", "data": {"reason": reason}}).encode()


def ping() -> bytes:
    return encode("ping", {"time": now()})


def reset(reason: str) -> bytes:
    return encode("reset", {"reason": reason})


def presence(room: str, online: list[str]) -> bytes:
    return encode("presence", {"room": room, "online": online})


def now() -> str:
    return iso(utcnow())
