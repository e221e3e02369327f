"""A room's history and its cursor, read from the record.

The cursor is the room's last event id, read first; the messages are those at or below it. Commits
happen in id order (models.allocate_event_id), so what a read sees is a prefix of the room's log, and
subscribing from the cursor yields exactly what came after it: the history/cursor race of
DESIGN.md cannot happen, whatever Redis holds or has yet to publish.
"""
from sqlalchemy import and_, or_

from .ids import EventId
from .models import Message, Room, last_event_id


def _before(bound: EventId, inclusive: bool):
    bound = bound.clamped()
    at_bound = Message.event_seq <= bound.seq if inclusive else Message.event_seq < bound.seq
    return or_(Message.event_ms < bound.ms, and_(Message.event_ms == bound.ms, at_bound))


def _after(bound: EventId):
    bound = bound.clamped()
    return or_(Message.event_ms > bound.ms, and_(Message.event_ms == bound.ms, Message.event_seq > bound.seq))


def read_history(room: Room, before: EventId | None, limit: int,
                 after: EventId | None = None) -> tuple[list[dict], bool, EventId]:
    """The newest `limit` messages before `before` (or the newest of all), oldest first, whether older
    ones exist, and the cursor. With `after`: the oldest `limit` after it (and before `before`), oldest
    first, and whether newer ones exist up to the cursor (what follows a message: a report's context)."""
    cursor = last_event_id(room.id)
    query = Message.query.filter(Message.room_id == room.id, Message.event_ms.isnot(None), _before(cursor, True))
    if before is not None:
        query = query.filter(_before(before, False))
    if after is not None:
        oldest = query.filter(_after(after)).order_by(Message.event_ms, Message.event_seq).limit(limit + 1).all()
        return [message.to_api() for message in oldest[:limit]], len(oldest) > limit, cursor
    newest = query.order_by(Message.event_ms.desc(), Message.event_seq.desc()).limit(limit + 1).all()
    return [message.to_api() for message in reversed(newest[:limit])], len(newest) > limit, cursor
