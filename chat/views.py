"""What the blueprints share about a request: its JSON body, event ids, rooms and limits (API.md's checks).

Below every blueprint (api, live, moderation), so that none imports another.
"""
import json

from flask import current_app, request
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from . import hub, streams
from .caches import CachedRoom
from .errors import ApiError
from .ids import EventId, FeedPosition
from .models import Message, Room, find_message, find_room, room_ids
from .schemas import SLUG


def json_body(schema) -> dict:
    """Read and validate the JSON body: 413, 415, 400, then 422, as API.md orders them."""
    limit = current_app.config["CHAT_MAX_REQUEST_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send JSON with Content-Type: application/json")
    try:
        data = request.get_json(silent=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes") from None
    except RecursionError:  # the parser's own bound on nesting (the size is bounded above)
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    if _has_lone_surrogate(data):
        raise ApiError(400, "invalid_json", "the body must be UTF-8 text: it holds an unpaired surrogate escape")
    try:
        return schema.load(data)
    except ValidationError as error:
        raise ApiError(422, "validation_error", "some fields are not valid", fields=error.messages) from None


def _has_lone_surrogate(data: dict) -> bool:
    """JSON may escape a lone surrogate (`"\\ud800"`), which no UTF-8 text, database or hash can take."""
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def parse_event_id(text: str | None) -> EventId | None:
    return _parsed(text, EventId.parse, "not an event id")


def parse_feed_position(text: str | None) -> FeedPosition | None:
    """A position of the feeds over several rooms (ids.FeedPosition), as they hand them out."""
    return _parsed(text, FeedPosition.parse, "not a position of this feed")


def _parsed(text: str | None, parse, refusal: str):
    """`parse(text)`, None for no text, `400 invalid_cursor` for what it refuses."""
    if text is None or text == "":
        return None
    try:
        return parse(text)
    except ValueError:
        raise ApiError(400, "invalid_cursor", refusal) from None


def room_or_404(slug: str) -> Room:
    room = find_room(slug) if SLUG.match(slug) else None  # no query for what cannot be a slug (NUL: PostgreSQL)
    if room is None:
        raise ApiError(404, "not_found", f"no room '{slug}'")
    return room


def message_or_404(room: Room, message_id: str) -> Message:
    """The room's message with this event id, else 404 (a malformed id names no message either)."""
    try:
        message = find_message(room.id, EventId.parse(message_id))
    except ValueError:
        message = None
    if message is None:
        raise ApiError(404, "not_found", "no such message in this room")
    return message


def online_in(slugs: list[str]) -> dict[str, list[str]]:
    return streams.current().online(slugs, current_app.config["CHAT_PRESENCE_TTL_SECONDS"])


def optional_reason() -> str | None:
    """The `reason` of a request whose JSON body is optional (a deletion, a lock): None without a body."""
    if not request.content_length:
        return None
    from .schemas import ReasonSchema  # noqa: PLC0415

    return json_body(ReasonSchema())["reason"]


def known_room(slug: str) -> CachedRoom:
    """The room's identity from this process's memory of rooms (they are never renamed or deleted), else
    from the database, else 404: what the hot paths (posting, live events) need without a query."""
    room = hub.current().known_rooms.get(slug)
    if room is None:
        found = room_or_404(slug)
        remember_rooms({found.slug: found.id})
        room = hub.current().known_rooms[slug]
    return room


def remember_rooms(ids: dict[str, int]) -> None:
    known = hub.current().known_rooms
    if len(known) > 100_000:
        known.clear()  # a miss only costs a query
    known.update((slug, CachedRoom(room_id, slug)) for slug, room_id in ids.items())


def known_rooms(slugs) -> dict[str, CachedRoom]:
    """Those of these slugs that name rooms (one query for the ones this process does not know yet)."""
    known = hub.current().known_rooms
    unknown = [slug for slug in slugs if slug not in known]
    if unknown:
        remember_rooms(room_ids(slug for slug in unknown if SLUG.match(slug)))
    return {slug: known[slug] for slug in slugs if slug in known}


def query_limit(default: int = 50, most: int = 200) -> int:
    """A `limit` query parameter: 1 to `most` (`limit=`, empty, means not given); else 422."""
    try:
        limit = int(request.args.get("limit") or default)
    except ValueError:
        limit = 0
    if not 1 <= limit <= most:
        raise ApiError(422, "validation_error", f"limit must be 1–{most}", fields={"limit": [f"must be 1–{most}"]})
    return limit
