"""Live events: Server-Sent Events and long-polling over the same events and cursors (API.md)."""
import time
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, request

from . import events, hub, metrics, streams
from .api import parse_event_id, room_or_404
from .auth import check_request
from .errors import ApiError
from .extensions import db
from .ids import ZERO, EventId
from .models import events_between, latest_event_id

bp = Blueprint("live", __name__, url_prefix="/api")

CATCH_UP_BATCH = 500
DATABASE_REPLAY_LIMIT = 1000  # a client further behind than this reloads history instead
POLL_MAX_EVENTS = 100


@dataclass
class Plan:
    """Where a subscriber starts: events rebuilt from the database, then Redis from `after`."""

    after: EventId  # the position the Redis catch-up reads after
    replay: list  # LiveEvents from the database, before `after`
    reset: str | None = None  # why the client must reload history instead
    cursor: EventId | None = None  # where the client stands: the start position, or the tail

    def __post_init__(self):
        if self.cursor is None:
            self.cursor = self.after


def _start_position() -> EventId | None:
    raw = (request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
           or request.args.get("lastEventId"))
    return parse_event_id(raw)


def _just_before(event_id: EventId) -> EventId:
    return EventId(event_id.ms, event_id.seq - 1) if event_id.seq else EventId(event_id.ms - 1, 2**64 - 1)


def plan_room(room, start: EventId | None) -> Plan:
    """Decide how to resume a room exactly: from Redis where it still holds the events, from the
    database for what Redis no longer holds, or a reset where neither can rebuild the gap."""
    window = streams.current().window(room.slug)
    if start is None:  # the tail: only what happens after connecting
        return Plan(window.last or latest_event_id(room) or ZERO, [])
    if window.last is None:  # no stream: Redis lost it, or the room is new
        known = latest_event_id(room) or ZERO
        if start > known:
            return Plan(known, [], reset="position unknown to this server")
        upto = known
    elif start > window.last:
        return Plan(window.last, [], reset="position unknown to this server")
    elif window.first is not None and start >= window.first:
        return Plan(start, [])
    else:  # older than what Redis retains
        upto = _just_before(window.first) if window.first else window.last
    rebuilt = events_between(room, start, upto, DATABASE_REPLAY_LIMIT)
    if rebuilt is None:
        return Plan(window.last or upto, [], reset="too far behind; reload history")
    replay = [events.LiveEvent(event_id, kind, data) for event_id, kind, data in rebuilt]
    return Plan(replay[-1].id if replay else start, replay, cursor=start)


def plan_firehose(start: EventId | None) -> Plan:
    """The moderators' feed resumes from the firehose alone; past its retention, a reset."""
    window = streams.current().window(None)
    if start is None:
        return Plan(window.last or ZERO, [])
    if window.last is None or start > window.last or (window.first is not None and start < _just_before(window.first)):
        return Plan(window.last or ZERO, [], reset="position no longer retained")
    return Plan(start, [])


def catch_up(room_streams, slug, after: EventId, limit: int | None = None, rooms: set | None = None) -> list:
    """Events Redis holds after `after`, oldest first (tombstones applied); the firehose's if slug is None."""
    found = []
    while limit is None or len(found) < limit:
        _, entries = room_streams.read_after(slug, after, CATCH_UP_BATCH)
        found.extend(events.from_entry(entry) for entry in entries if rooms is None or entry.room in rooms)
        if len(entries) < CATCH_UP_BATCH:
            break
        after = entries[-1].id
    return found if limit is None else found[:limit]


def _subscribe(session, room_slug, rooms, is_stream):
    return hub.current().subscribe(room=room_slug, rooms=rooms, session_id=session.id, user_id=session.user_id,
                                   username=session.user.username, is_stream=is_stream)


def _rooms_filter() -> set | None:
    raw = request.args.get("rooms", "").strip()
    return {slug.strip() for slug in raw.split(",") if slug.strip()} or None


# SSE

def _stream_response(subscription, plan: Plan, slug: str | None, online: list[str] | None, rooms=None):
    config = current_app.config
    retry_ms, heartbeat = config["CHAT_RETRY_MS"], config["CHAT_HEARTBEAT_SECONDS"]
    max_age, room_streams, local_hub = config["CHAT_STREAM_MAX_SECONDS"], streams.current(), hub.current()

    def generate():
        metrics.STREAMS_OPEN.inc()
        try:
            yield events.first_chunk(retry_ms, plan.cursor, heartbeat)
            if plan.reset:
                yield events.reset(plan.reset)
            if online is not None:
                yield events.presence(slug, online)
            position = plan.after
            backlog = plan.replay + ([] if plan.reset else catch_up(room_streams, slug, plan.after, rooms=rooms))
            if backlog:
                position = backlog[-1].id
                metrics.EVENTS_DELIVERED.inc(len(backlog))
                yield b"".join(event.sse for event in backlog)
            deadline = time.monotonic() + max_age
            while not subscription.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                items = subscription.take(min(heartbeat, remaining))
                if subscription.ended and subscription.ended != "shutdown":
                    break  # logout, ban or overflow: stop now; the client resumes from its last id
                fresh = [item for item in items if not isinstance(item, events.LiveEvent) or item.id > position]
                if fresh:
                    durable = [item for item in fresh if isinstance(item, events.LiveEvent)]
                    if durable:
                        position = durable[-1].id
                        metrics.EVENTS_DELIVERED.inc(len(durable))
                    yield b"".join(item.sse for item in fresh)
                elif not subscription.ended:
                    yield events.ping()
        finally:
            metrics.STREAMS_OPEN.dec()
            local_hub.unsubscribe(subscription)

    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
    return Response(generate(), status=200, mimetype="text/event-stream", headers=headers)


@bp.get("/rooms/<slug>/events")
def room_events(slug):
    session = check_request()
    room = room_or_404(slug)
    start = _start_position()
    subscription = _subscribe(session, slug, None, is_stream=True)
    try:
        plan = plan_room(room, start)
        online = hub.current().online(slug)
    except BaseException:
        hub.current().unsubscribe(subscription)
        raise
    db.session.remove()  # a stream holds no database connection
    return _stream_response(subscription, plan, slug, online)


@bp.get("/moderation/events")
def moderation_events():
    session = check_request(moderator=True)
    start, rooms = _start_position(), _rooms_filter()
    subscription = _subscribe(session, None, rooms, is_stream=True)
    try:
        plan = plan_firehose(start)
    except BaseException:
        hub.current().unsubscribe(subscription)
        raise
    db.session.remove()
    return _stream_response(subscription, plan, None, None, rooms)


# Long-polling

def _poll(session, slug, rooms, plan: Plan, timeout: float):
    """Answer at once with what exists after the cursor, else wait for the first durable event."""
    local_hub = hub.current()
    subscription = _subscribe(session, slug, rooms, is_stream=False)
    try:
        if plan.reset:
            found = [{"id": None, "event": "reset", "data": {"reason": plan.reset}}]
            return found, plan.after
        found = (plan.replay + catch_up(streams.current(), slug, plan.after, POLL_MAX_EVENTS, rooms))[:POLL_MAX_EVENTS]
        if not found:
            db.session.remove()  # a waiting poll holds no database connection
            metrics.POLLS_WAITING.inc()
            try:
                deadline = time.monotonic() + timeout
                while not found and not subscription.ended and time.monotonic() < deadline:
                    items = subscription.take(deadline - time.monotonic())
                    found = [item for item in items if isinstance(item, events.LiveEvent) and item.id > plan.after]
            finally:
                metrics.POLLS_WAITING.dec()
        if subscription.ended == "logout":
            raise ApiError(401, "not_authenticated", "signed out")
        if subscription.ended == "banned":
            raise ApiError(403, "banned", "this account is banned")
        found = found[:POLL_MAX_EVENTS]
        metrics.EVENTS_DELIVERED.inc(len(found))
        return [event.to_poll() for event in found], (found[-1].id if found else plan.after)
    finally:
        local_hub.unsubscribe(subscription)


def _poll_timeout() -> float:
    limit = current_app.config["CHAT_POLL_TIMEOUT_SECONDS"]
    try:
        wanted = float(request.args.get("timeout", limit))
    except ValueError:
        raise ApiError(422, "validation_error", "timeout must be a number of seconds",
                       fields={"timeout": ["must be 0–25"]}) from None
    return max(0.0, min(wanted, limit, 25.0))


def _poll_response(payload: dict):
    response = current_app.response_class(response=current_app.json.dumps(payload), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/rooms/<slug>/poll")
def room_poll(slug):
    session = check_request()
    room = room_or_404(slug)
    start = parse_event_id(request.args.get("cursor"))
    timeout = _poll_timeout()
    plan = plan_room(room, start)
    room_streams = streams.current()
    member = f"{session.user.username}|poll-{session.id}"
    room_streams.touch_presence(slug, [member], current_app.config["CHAT_PRESENCE_TTL_SECONDS"])
    found, cursor = _poll(session, slug, None, plan, timeout)
    return _poll_response({"events": found, "cursor": str(cursor), "online": hub.current().online(slug)})


@bp.get("/moderation/poll")
def moderation_poll():
    session = check_request(moderator=True)
    start = parse_event_id(request.args.get("cursor"))
    timeout = _poll_timeout()
    plan = plan_firehose(start)
    found, cursor = _poll(session, None, _rooms_filter(), plan, timeout)
    return _poll_response({"events": found, "cursor": str(cursor), "online": []})
