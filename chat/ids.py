"""Event ids (Redis Stream ids) and the API's timestamps."""
import re
from datetime import datetime, timezone
from typing import NamedTuple

# ASCII digits only: Python's \d also takes other scripts' digits ("١-١", "１-１"), which int() reads as 1-1,
# so malformed ids were taken as positions (found by tests/test_cursor_fuzz.py).
_EVENT_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")
MAX_PART = 2**64 - 1  # Redis Stream ids are two unsigned 64-bit integers
MAX_STORED_PART = 2**63 - 1  # the database stores each as a signed 64-bit integer


class EventId(NamedTuple):
    """A stream position; tuples compare in stream order."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> "EventId":
        """Parse `<ms>-<seq>`; ValueError for anything else."""
        match = _EVENT_ID.match(text or "")
        if not match:
            raise ValueError(f"not an event id: {text!r}")
        ms, seq = int(match[1]), int(match[2])
        if ms > MAX_PART or seq > MAX_PART:
            raise ValueError(f"not an event id: {text!r}")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @property
    def storable(self) -> bool:
        """Whether the database can hold this id (none it holds is larger)."""
        return self.ms <= MAX_STORED_PART and self.seq <= MAX_STORED_PART

    def just_before(self) -> "EventId":
        """The greatest id below this one: a bound for "everything before it"."""
        return EventId(self.ms, self.seq - 1) if self.seq else EventId(self.ms - 1, MAX_STORED_PART)

    def clamped(self) -> "EventId":
        """The same bound for a range query on stored ids, within what the database can compare
        (a larger part would overflow SQLite and PostgreSQL alike)."""
        if self.ms > MAX_STORED_PART:
            return EventId(MAX_STORED_PART, MAX_STORED_PART)
        return EventId(self.ms, min(self.seq, MAX_STORED_PART))

    # A room's position, as a feed's (FeedPosition) is: what a subscriber at it was sent, and where it is after an event.
    def has_seen(self, event) -> bool:
        return event.id <= self

    def past(self, event) -> "EventId":
        return event.id


ZERO = EventId(0, 0)


class FeedPosition(tuple):
    """A position of the feeds over several rooms: one firehose position per shard (streams.shard_of), where
    a subscriber was sent every event of that shard's firehose up to it. Written as the shards' ids joined by
    dots, so with one shard it is a plain event id (docs/ARCHITECTURE.md, "Feeds over several rooms")."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> "FeedPosition":
        """ValueError unless every part is an event id (their number is checked against the shards by the plan)."""
        if not text or text.count(".") > 63:
            raise ValueError(f"not a feed position: {text!r}")
        return cls(EventId.parse(part) for part in text.split("."))

    def __str__(self) -> str:
        return ".".join(map(str, self))

    def __repr__(self) -> str:
        return f"FeedPosition({self})"

    def has_seen(self, event) -> bool:
        """Whether a subscriber here was sent `event` (a feed's: events.LiveEvent with `shard` and `local`)."""
        return event.local <= self[event.shard]

    def past(self, event) -> "FeedPosition":
        """Where a subscriber here stands once sent `event`: what the event's own position covers, and all this did
        (a catch-up may have read a shard further than the hub had when it dispatched the event)."""
        return FeedPosition(map(max, self, event.id))

    def covered_by(self, other: "FeedPosition") -> bool:
        """Whether `other` is at or past this on every shard."""
        return all(mine <= theirs for mine, theirs in zip(self, other))

    def moved(self, shard: int, position: EventId) -> "FeedPosition":
        return FeedPosition(position if index == shard else mine for index, mine in enumerate(self))


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (what the database stores)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds and Z."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
