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


ZERO = EventId(0, 0)


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
