"""Event ids (Redis Stream ids) and the API's timestamps."""
import re
from datetime import datetime, timezone
from typing import NamedTuple

_EVENT_ID = re.compile(r"^(\d{1,20})-(\d{1,20})\Z")
MAX_PART = 2**64 - 1


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
