"""Live events: Server-Sent Events and long-polling over the same events and cursors (API.md)."""
import time
from contextlib import contextmanager
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from . import events, hub, logs, metrics
from .auth import check_request, expires_at, session_token_from, token_hash
from .errors import ApiError, Unavailable, error_response
from .extensions import REDIS_ERRORS, db
from .ids import EventId, FeedPosition
from .resume import CatchUp, FeedCatchUp, plan_firehose, plan_room
from .subscription import direct_fd, hung_up, stream_events
from .views import known_room, known_rooms, parse_event_id, parse_feed_position

bp = Blueprint("live", __name__, url_prefix="/api")

POLL_MAX_EVENTS = 100
POLL_HANGUP_CHECK_SECONDS = 2  # how often a waiting poll checks that its client is still there


def _start_position(feed: bool = False) -> EventId | FeedPosition | None:
    raw = (request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
           or request.args.get("lastEventId"))
    return parse_feed_position(raw) if feed else parse_event_id(raw)


def _catch_up(plan_for, start, slug: str | None, rooms, sees_reports: bool) -> CatchUp:
    """A room's catch-up (`slug`), or with slug None a feed's over `rooms` (None: every room; its plan is
    always plan_firehose)."""
    return CatchUp(plan_for, start, slug) if slug else FeedCatchUp(start, rooms, sees_reports)


@contextmanager
def _admitted():
    try:
        yield
    except hub.TooManyStreams as refused:
        raise ApiError(429, "too_many_streams", "too many open streams and polls for this account; close one",
                       retry_after=refused.retry_after) from None
    except hub.Refused as refused:
        raise Unavailable(str(refused), retry_after=refused.retry_after) from None


def _subscribe(session, *, rooms, feed=False, present=frozenset(), presence=False, is_stream, sees_reports=False):
    with _admitted():
        return hub.current().subscribe(rooms=rooms, feed=feed, present=present, presence=presence,
                                       sees_reports=sees_reports,
                                       session_id=session.id, user_id=session.user_id, username=session.user.username,
                                       is_stream=is_stream)


def _slugs(args, name: str) -> list[str]:
    """A comma-separated list of room slugs from the query, in order, without repeats."""
    raw = args.get(name) or ""
    return list(dict.fromkeys(slug.strip() for slug in raw.split(",") if slug.strip()))


def _rooms_filter() -> frozenset | None:
    """The moderators' optional room filter (None: every room)."""
    return frozenset(_slugs(request.args, "rooms")) or None


def _online(rooms: frozenset | None, recent_enough: bool = False) -> dict[str, list[str]]:
    """Who is online in the rooms a feed follows; None (a moderators' feed of every room): in every room
    where anyone is or lately was."""
    local_hub = hub.current()
    return local_hub.online(rooms, recent_enough=recent_enough) if rooms is not None else local_hub.online_everywhere()


def _listed_rooms(args, known_only: bool = False) -> tuple[list[str], frozenset]:
    """The several-rooms feed's `rooms` (1 to CHAT_MAX_ROOMS_PER_STREAM existing rooms) and the subset
    where this client counts as online: all but those named in `away` (rooms a browser follows only
    for its sidebar's unread counts, shown in no tab). `known_only`: raise LookupError rather than
    ask the database about a room this process does not know yet."""
    limit = current_app.config["CHAT_MAX_ROOMS_PER_STREAM"]
    rooms = _slugs(args, "rooms")
    if not 1 <= len(rooms) <= limit:
        raise ApiError(422, "validation_error", f"rooms must list 1–{limit} room slugs, comma-separated",
                       fields={"rooms": [f"must list 1–{limit} room slugs"]})
    if known_only:
        unknown = [slug for slug in rooms if slug not in hub.current().known_rooms]
        if unknown:
            raise LookupError(unknown[0])
    found = known_rooms(rooms)
    missing = [slug for slug in rooms if slug not in found]
    if missing:
        raise ApiError(404, "not_found", f"no room '{missing[0]}'")
    away = set(_slugs(args, "away"))
    if not away <= set(rooms):
        raise ApiError(422, "validation_error", "away must name rooms that rooms lists",
                       fields={"away": ["must name only rooms that rooms lists"]})
    return rooms, frozenset(rooms) - away


# SSE

def _stream_lifetime(session) -> tuple[float, str]:
    """How long a stream may stay open, and why it ends then: CHAT_STREAM_MAX_SECONDS, at most half the
    idle timeout (its reconnect is the request that keeps an open page's session alive), or sooner
    when the session reaches its absolute end."""
    config = current_app.config
    lifetime = min(config["CHAT_STREAM_MAX_SECONDS"], config["CHAT_SESSION_IDLE_MINUTES"] * 30)
    session_left = expires_at(session) - time.time()
    return (lifetime, "CHAT_STREAM_MAX_SECONDS") if lifetime <= session_left else (max(0.0, session_left),
                                                                                  "session_expired")


def _stream_response(subscription, catch: CatchUp, first_page: list, online: dict[str, list[str]],
                     ready_rooms: list[str] | None, lifetime: tuple[float, str]):
    app, config, environ, local_hub = current_app._get_current_object(), current_app.config, request.environ, \
        hub.current()
    started = time.monotonic()

    def next_page() -> list | None:
        """The catch-up's next page, read while the response streams (its own app context, and a
        database connection only for the read); None if Redis or the database failed meanwhile."""
        with app.app_context():
            try:
                return catch.page()
            except (*REDIS_ERRORS, SQLAlchemyError, ApiError):
                current_app.logger.warning("a stream's catch-up failed", exc_info=True)
                return None
            finally:
                db.session.remove()

    def ended(reason: str, delivered: int) -> None:
        local_hub.unsubscribe(subscription)
        logs.stream_ended(environ, sorted(subscription.rooms) if subscription.rooms else "all", delivered,
                          time.monotonic() - started, reason)

    body = stream_events(subscription, catch, first_page, next_page, online, ready_rooms,
                         client=environ.get("gunicorn.socket"),
                         direct_fd=direct_fd(environ), retry_ms=config["CHAT_RETRY_MS"],
                         heartbeat=config["CHAT_HEARTBEAT_SECONDS"], lifetime=lifetime,
                         send_timeout=config["CHAT_SEND_TIMEOUT_SECONDS"], on_end=ended)
    # direct_passthrough: the generator is the WSGI iterable itself, with no wrapping iterators: a
    # shallower stack for each of the thousands of greenlets waiting in it.
    return Response(body, status=200, mimetype="text/event-stream", headers=_STREAM_HEADERS, direct_passthrough=True)


def _open_stream(session, rooms: frozenset | None, plan_for, start: EventId | FeedPosition | None, *, feed: bool,
                 present=frozenset(), presence=True, ready_rooms=None, sees_reports=False):
    """Subscribe, then plan the catch-up and read its first page (so nothing published meanwhile is
    missed, and a failure is still an error status), then stream the rest a page at a time.
    `sees_reports`: the moderators' feed, the one delivered report events (events.reaches)."""
    slug = None if feed else next(iter(rooms))
    subscription = _subscribe(session, rooms=rooms, feed=feed, present=present, presence=presence, is_stream=True,
                              sees_reports=sees_reports)
    try:
        catch = _catch_up(plan_for, start, slug, rooms, sees_reports)
        first_page = catch.page()
        online = _online(rooms) if presence else {}
    except BaseException:
        hub.current().unsubscribe(subscription)
        raise
    db.session.remove()  # a stream holds no database connection
    return _stream_response(subscription, catch, first_page, online, ready_rooms, _stream_lifetime(session))


_STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def _head(session, mimetype: str, headers: dict, is_stream: bool = True):
    """A HEAD request's answer: every check a GET gets, admission included (503, 429), and nothing
    opened (Werkzeug never starts a HEAD's body, so a subscription made for it would never be released)."""
    with _admitted():
        hub.current().check_admission(session.user.username, is_stream)
    return Response(status=200, mimetype=mimetype, headers=headers)


@bp.get("/rooms/<slug>/events")
def room_events(slug):
    session = check_request(cached=True)
    room = known_room(slug)
    start = _start_position()
    if request.method == "HEAD":
        return _head(session, "text/event-stream", _STREAM_HEADERS)
    return _open_stream(session, frozenset([slug]), lambda position: plan_room(room, position, bounded=True), start,
                        feed=False, present=frozenset([slug]))


@bp.get("/events")
def feed_events():
    """The several-rooms feed: one connection for a browser's many rooms."""
    session = check_request(cached=True)
    rooms, present = _listed_rooms(request.args)
    start = _start_position(feed=True)
    if request.method == "HEAD":
        return _head(session, "text/event-stream", _STREAM_HEADERS)
    return _open_stream(session, frozenset(rooms), plan_firehose, start, feed=True, present=present,
                        ready_rooms=rooms)


@bp.get("/moderation/events")
def moderation_events():
    session = check_request(moderator=True, cached=True)
    start, rooms = _start_position(feed=True), _rooms_filter()
    if request.method == "HEAD":
        return _head(session, "text/event-stream", _STREAM_HEADERS)
    # Presence of the rooms it follows (every room where anyone is online, unfiltered), counting no moderator.
    return _open_stream(session, rooms, plan_firehose, start, feed=True, presence=True, sees_reports=True)


# Long-polling

def wait_for_events(session, rooms: frozenset, start: EventId | FeedPosition | None, timeout: float, *, feed: bool,
                    environ, plan_for=None, sees_reports: bool = False) -> tuple[list, EventId | FeedPosition] | None:
    """A poll: what exists after the cursor at once, else the first durable events within `timeout`.
    Near the tail, what exists comes from the hub's memory of recent events (no Redis round trip);
    otherwise from `plan_for(position)` (resume.CatchUp: Redis, then the database). Without `plan_for` (the fast lane), None
    when memory cannot answer. Raises ApiError when logout, a ban or the session's expiry ends the wait
    (it waits no longer than the session lasts). What it answered is noted in `environ` for the
    request's log line. `sees_reports`: the moderators' poll, the one answered report events."""
    local_hub, client = hub.current(), environ.get("gunicorn.socket")
    slug = None if feed else next(iter(rooms))
    session_ends = expires_at(session)
    timeout = min(timeout, max(0.0, session_ends - time.time()))  # a session that expires meanwhile ends the wait
    subscription = _subscribe(session, rooms=rooms, feed=feed, is_stream=False, sees_reports=sees_reports)
    try:
        remembered = local_hub.recent(slug, start, rooms if feed else None, sees_reports)
        from_memory = remembered is not None
        if remembered is None:
            if plan_for is None:
                return None
            catch = _catch_up(plan_for, start, slug, rooms, sees_reports)
            backlog = catch.upto(POLL_MAX_EVENTS)
            if catch.plan.reset:
                metrics.RESETS_SENT.inc()
                return [events.reset_poll_item(catch.plan.reset)], catch.plan.after
            remembered = backlog, catch.cursor
        found, after = remembered
        found = found[:POLL_MAX_EVENTS]
        if not found:
            db.session.remove()  # a waiting poll holds no database connection
            metrics.POLLS_WAITING_HERE.add(1)
            try:
                deadline = time.monotonic() + timeout
                while not found and not subscription.ended and time.monotonic() < deadline:
                    items = subscription.take(min(deadline - time.monotonic(), POLL_HANGUP_CHECK_SECONDS))
                    found = [item for item in items if isinstance(item, events.LiveEvent) and not after.has_seen(item)]
                    if not found and hung_up(client):
                        break  # nobody is waiting for the answer any more: free the place now
            finally:
                metrics.POLLS_WAITING_HERE.add(-1)
        environ["chat.live"] = {"rooms": sorted(rooms) if rooms else "all", "events": len(found),
                                "reason": "events" if found else (subscription.ended or "timeout"),
                                "from": str(start) if start else None, "after": str(after),
                                "answered_from": "memory" if from_memory else "redis"}
        if subscription.ended == "logout":
            raise ApiError(401, "not_authenticated", "signed out")
        if not found and time.time() >= session_ends:
            raise ApiError(401, "not_authenticated", "the session expired; sign in again")
        if subscription.ended == "banned":
            raise ApiError(403, "banned", "this account is banned")
        found = found[:POLL_MAX_EVENTS]
        metrics.EVENTS_DELIVERED_HERE.add(len(found))
        return found, (after.past(found[-1]) if found else after)
    finally:
        local_hub.unsubscribe(subscription)


def _poll_timeout(args, limit: float) -> float:
    """The poll's `timeout`, within `limit` (CHAT_POLL_TIMEOUT_SECONDS) and API.md's 25 s."""
    try:
        wanted = float(args.get("timeout") or limit)  # `timeout=` (empty) means not given
    except ValueError:
        raise ApiError(422, "validation_error", "timeout must be a number of seconds",
                       fields={"timeout": ["must be 0–25"]}) from None
    return max(0.0, min(wanted, limit, 25.0))


def _poll_response(found: list, cursor, online):
    response = current_app.response_class(response=events.poll_answer(found, cursor, online),
                                          mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _touch_poller(session, rooms) -> bool:
    """Count the poller as online; True when it is new here (then its answer reads presence afresh)."""
    local_hub, member = hub.current(), f"{session.user.username}|poll-{session.id}"
    new = False
    for slug in rooms:
        new = local_hub.touch_poller(slug, member) or new
    return new


@bp.get("/rooms/<slug>/poll")
def room_poll(slug):
    session = check_request(cached=True)
    room = known_room(slug)
    start = parse_event_id(request.args.get("cursor"))
    timeout = _poll_timeout(request.args, current_app.config["CHAT_POLL_TIMEOUT_SECONDS"])
    if request.method == "HEAD":
        return _head(session, "application/json", {"Cache-Control": "no-store"}, is_stream=False)
    touched = _touch_poller(session, [slug])
    found, cursor = wait_for_events(session, frozenset([slug]), start, timeout, feed=False,
                                    plan_for=lambda position: plan_room(room, position), environ=request.environ)
    return _poll_response(found, cursor, hub.current().online_json(slug, fresh=touched))


@bp.get("/poll")
def feed_poll():
    session = check_request(cached=True)
    rooms, present = _listed_rooms(request.args)
    start = parse_feed_position(request.args.get("cursor"))
    timeout = _poll_timeout(request.args, current_app.config["CHAT_POLL_TIMEOUT_SECONDS"])
    if request.method == "HEAD":
        return _head(session, "application/json", {"Cache-Control": "no-store"}, is_stream=False)
    touched = _touch_poller(session, present)
    found, cursor = wait_for_events(session, frozenset(rooms), start, timeout, feed=True, plan_for=plan_firehose,
                                    environ=request.environ)
    return _poll_response(found, cursor, events.encode_json(hub.current().online(rooms, recent_enough=not touched)))


@bp.get("/moderation/poll")
def moderation_poll():
    session = check_request(moderator=True, cached=True)
    start = parse_feed_position(request.args.get("cursor"))
    timeout = _poll_timeout(request.args, current_app.config["CHAT_POLL_TIMEOUT_SECONDS"])
    if request.method == "HEAD":
        return _head(session, "application/json", {"Cache-Control": "no-store"}, is_stream=False)
    rooms = _rooms_filter()
    found, cursor = wait_for_events(session, rooms, start, timeout, feed=True, plan_for=plan_firehose,
                                    environ=request.environ, sees_reports=True)
    # Presence rides along as on the several-rooms poll, for the rooms it follows (the moderator is in none).
    return _poll_response(found, cursor, events.encode_json(_online(rooms, recent_enough=True)))


def poll_from_memory(environ, slug: str | None, config):
    """A room's poll (or with slug None the several-rooms feed's) answered by the fast lane (fastpoll.py), in
    an app context (`config`: its app's) but outside Flask's request handling: the answer's JSON, or an
    error response when the session ended while it waited; None hands the request to the view above,
    which applies every rule. It answers only a signed-in session this process remembers, rooms it
    knows, well-formed parameters and a cursor within the recent events."""
    local_hub = hub.current()
    sessions = local_hub.cached_sessions()
    token = session_token_from(environ.get("HTTP_COOKIE", ""), environ.get("wsgi.url_scheme") == "https")
    session = sessions.get(token_hash(token)) if sessions is not None and token else None
    if session is None:
        return None
    environ["chat.user_id"] = session.user_id
    args = {}
    for name, value in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
        args.setdefault(name, value)  # the first of a repeated parameter, as Flask's request.args.get
    try:
        start = parse_feed_position(args.get("cursor")) if slug is None else parse_event_id(args.get("cursor"))
        timeout = _poll_timeout(args, config["CHAT_POLL_TIMEOUT_SECONDS"])
        if slug is None:
            rooms, present = _listed_rooms(args, known_only=True)
        elif slug in local_hub.known_rooms:
            rooms = present = [slug]
        else:
            return None
        touched = _touch_poller(session, present)
        answer = wait_for_events(session, frozenset(rooms), start, timeout, feed=slug is None, environ=environ)
        if answer is None:
            return None
        found, cursor = answer
        # Redis may have gone meanwhile (the online list can need a read): the view then answers, 503 included.
        online = local_hub.online_json(slug, fresh=touched) if slug else \
            events.encode_json(local_hub.online(rooms, recent_enough=not touched))
    except ApiError as error:
        if error.status in (401, 403):  # the session ended while the poll waited
            return error_response(error)
        return None  # a bad parameter: the view answers it
    except (LookupError, *REDIS_ERRORS):
        return None
    return events.poll_answer(found, cursor, online)
