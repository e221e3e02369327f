"""The OpenAPI document of the JSON API (API.md): the request and event schemas of schemas.py, the answers of
answers.py."""
import hashlib
import json
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

from . import schemas
from .answers import ANSWERS
from .events import reaches
from .schemas import (EVENT_ID, BanSchema, CredentialsSchema, MessageCreateSchema, MuteSchema, PasswordChangeSchema,
                      PurgeSchema, ReasonSchema, ReportSchema, ResolveReportSchema, RoomCreateSchema, SlowModeSchema)

# Parts that many operations share.

_ERRORS = {
    400: ("BadRequest", "`invalid_json` (the body is not a JSON object) or `invalid_cursor` (not an event id)"),
    401: ("NotAuthenticated", "`not_authenticated`: no session, or it ended (`invalid_credentials` for a login)"),
    403: ("Forbidden", "`csrf_failed`, `banned`, `forbidden` (not allowed to you), `muted`, `room_locked`"),
    404: ("NotFound", "`not_found`: the room, message or user named does not exist"),
    409: ("Conflict", "`username_taken` or `room_exists`"),
    413: ("PayloadTooLarge", "`payload_too_large`: the body is over CHAT_MAX_REQUEST_BYTES (default 64 KiB)"),
    415: ("UnsupportedMediaType", "`unsupported_media_type`: send `Content-Type: application/json`"),
    422: ("ValidationError", "`validation_error`: `fields` names each field's problems"),
    429: ("TooManyRequests", "`rate_limited`, `slow_mode` or `too_many_streams`: "
                             "try again after `Retry-After` seconds"),
    503: ("Unavailable", "`unavailable`: Redis or the database cannot take the request; nothing was done. "
                         "Try again after `Retry-After` seconds"),
}
# gunicorn's own answer, before the app: the request line is over `limit_request_line` (gunicorn.conf.py).
_URI_TOO_LONG = {"description": "the request line is over 8190 bytes (refused in front of the app, in HTML)",
                 "content": {"text/html": {"schema": {"type": "string"}}}}
_RESPONSE_NAMES = {**{status: name for status, (name, _) in _ERRORS.items()}, 414: "UriTooLong"}
_RETRY_AFTER = {"description": "seconds to wait", "required": True, "schema": {"type": "integer", "minimum": 0}}

SLUG = r"^[a-z0-9\-]{1,64}$"
BODY = (400, 413, 415, 422)  # a JSON body's refusals, in the order they are checked
SIGNED_IN = (401, 403, 503)
SESSION = [{"session": []}]
SESSION_AND_CSRF = [{"session": [], "csrf": []}]

_SSE_HEADERS = {"Cache-Control": {"schema": {"type": "string", "enum": ["no-cache, no-transform"]}, "required": True},
                "X-Accel-Buffering": {"schema": {"type": "string", "enum": ["no"]}, "required": True}}
_POLL_HEADERS = {"Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}, "required": True}}

_STREAM = """An event stream (Server-Sent Events). The first chunk carries `retry:`, 2 KiB of comment padding
and a `ready` event; then durable events, each with an `id:` line, and ephemeral ones without (`presence`;
`ping` every CHAT_HEARTBEAT_SECONDS while nothing else is sent; `reset`: reload history). Each event's
`data` is JSON. Resume from `Last-Event-ID` (or `last_event_id` / `lastEventId` in the query): every durable
event after it, in order."""

# Each event of a stream and the schema of its data: the durable ones as schemas.py checks them before they are
# published, the ephemeral ones as answers.py describes them.
_EVENT_DATA = {event_type: type(schema).__name__ for event_type, schema in schemas.DURABLE_EVENTS.items()}
DURABLE_EVENTS = {event_type: name for event_type, name in _EVENT_DATA.items() if reaches(event_type, False)}
MODERATORS_ONLY_EVENTS = {event_type: name for event_type, name in _EVENT_DATA.items()
                          if event_type not in DURABLE_EVENTS}
EPHEMERAL_EVENTS = {"ready": "ReadyEvent", "presence": "PresenceEvent", "ping": "PingEvent", "reset": "ResetEvent"}


def _stream_event(name: str, schema: str, durable: bool) -> dict:
    """One event as OpenAPI 3.2 describes an item of `text/event-stream`: `event`, `data`, `id`, `retry`.
    (A parser gives an event without `id:` the last id seen, so only durable events require one.)"""
    data = {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{schema}"}}
    return {"type": "object", "required": ["event", "data", "id"] if durable else ["event", "data"],
            "properties": {"event": {"const": name}, "data": data, "id": {"type": "string", "pattern": EVENT_ID},
                           "retry": {"type": "integer"}}}


def _stream_events(presence: bool, reports: bool = False) -> dict:
    """A room's or the several-rooms feed's events; the moderators' adds the reports and bans."""
    ephemeral = {name: schema for name, schema in EPHEMERAL_EVENTS.items() if presence or name != "presence"}
    durable = {**DURABLE_EVENTS, **(MODERATORS_ONLY_EVENTS if reports else {})}
    return {"oneOf": [_stream_event(name, schema, True) for name, schema in durable.items()]
            + [_stream_event(name, schema, False) for name, schema in ephemeral.items()]}


def _param(name: str, where: str, schema: dict, description: str, **extra) -> dict:
    return {"name": name, "in": where, "schema": schema, "description": description,
            "required": where == "path", **extra}


def _slugs(name: str, description: str, max_rooms: int, required: bool) -> dict:
    items = {"type": "array", "items": {"type": "string", "pattern": SLUG}, "minItems": 1, "maxItems": max_rooms}
    return _param(name, "query", items, description, required=required, style="form", explode=False)


def _parameters(max_rooms: int) -> dict:
    event_id = {"type": "string", "pattern": EVENT_ID}
    return {
        "slug": _param("slug", "path", {"type": "string", "pattern": SLUG}, "the room's slug"),
        "message_id": _param("message_id", "path", event_id, "the message's id (an event id)"),
        "username": _param("username", "path", {"type": "string"}, "the user's name"),
        "report_id": _param("report_id", "path", {"type": "integer", "minimum": 1}, "the report's id"),
        "status": _param("status", "query", {"type": "string", "enum": ["open", "resolved"]},
                         "only reports in this state (default: all)"),
        "limit": _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                        "how many, newest first"),
        "before": _param("before", "query", event_id, "page back: what came before this event id"),
        "after": _param("after", "query", event_id, "the project's addition: the oldest messages after this "
                        "event id (then `has_more` says whether newer ones exist)"),
        "cursor": _param("cursor", "query", event_id, "the last position this client has; none: the tail"),
        "timeout": _param("timeout", "query", {"type": "number", "minimum": 0, "maximum": 25},
                          "seconds to wait for an event (at most CHAT_POLL_TIMEOUT_SECONDS, default 25)"),
        "rooms": _slugs("rooms", "room slugs, comma-separated", max_rooms, True),
        "rooms_filter": _slugs("rooms", "only these rooms (default: every room)", max_rooms, False),
        "away": _slugs("away", "listed rooms where this connection does not count as online", max_rooms, False),
        "last_event_id": _param("Last-Event-ID", "header", event_id, "resume after this position"),
        "last_event_id_query": _param("last_event_id", "query", event_id, "resume after this position "
                                      "(when the header is not sent)"),
        "last_event_id_polyfill": _param("lastEventId", "query", event_id, "the same, as EventSource polyfills "
                                         "send it"),
    }


def _op(summary: str, answers: dict, *, errors=(), body=None, parameters=(), public=False,
        description=None, body_required=True) -> dict:
    """An operation: its answers, the shared error answers it may give, its JSON body and parameters;
    `public`: no sign-in (else build() adds the session, and the CSRF header to a POST or DELETE)."""
    operation = {"summary": summary,
                 "responses": {**answers, **{str(status): _RESPONSE_NAMES[status] for status in sorted(errors)}}}
    if public:
        operation["security"] = []
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    if parameters:
        operation["parameters"] = list(parameters)
    return operation


def _json(schema: str, description: str = "success", headers=None) -> dict:
    answer = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _sse(events: str) -> dict:
    item = {"$ref": f"#/components/schemas/{events}"}
    return {"200": {"description": _STREAM, "headers": _SSE_HEADERS,
                    "content": {"text/event-stream": {"itemSchema": item}}}}


def _poll(schema: str) -> dict:
    return {"200": _json(schema, "durable events after `cursor` (at most 100), or none when `timeout` passed",
                         _POLL_HEADERS)}


_STREAM_PARAMS = ("last_event_id", "last_event_id_query", "last_event_id_polyfill")
_LIVE_ERRORS = (*SIGNED_IN, 400, 429)
_FEED_ERRORS = (*_LIVE_ERRORS, 414)  # lists of rooms make long URLs
_NO_CONTENT = {"204": {"description": "done"}}


def _operations(config) -> dict[str, dict[str, tuple[str, dict]]]:
    """Every JSON endpoint by section (the document's tags), by the name of the view that serves it:
    its method and operation."""
    message_body = MessageCreateSchema(config["CHAT_MAX_MESSAGE_CHARS"])
    return {"Users and sessions": {
        "api.register": ("post", _op(
            "Create an account, signed in", {"201": _json("SignedIn", "signed in: the session cookie is set")},
            errors=(*BODY, 409, 429, 503), body=CredentialsSchema, public=True,
            description="Usernames are unique ignoring case. Requests per address are capped by "
                        "CHAT_REGISTER_LIMIT (429).")),
        "api.login": ("post", _op(
            "Sign in", {"200": _json("SignedIn", "signed in: the session cookie is set")},
            errors=(400, 401, 403, 413, 415, 429, 503), body=CredentialsSchema, public=True,
            description="`401 invalid_credentials` for an unknown user and a wrong password alike; `403 banned`; "
                        "`429` after CHAT_LOGIN_FAILURE_LIMIT failures for the account.")),
        "api.logout": ("post", _op(
            "Sign out this session", _NO_CONTENT, errors=SIGNED_IN,
            description="Its live streams end and its waiting polls answer 401 within 2 s; other sessions stay.")),
        "api.logout_all": ("post", _op(
            "Sign out everywhere", _NO_CONTENT, errors=SIGNED_IN,
            description="Every session of the user ends, this one included; their streams end and their waiting "
                        "polls answer 401 within 2 s.")),
        "api.change_password": ("post", _op(
            "Change the password", _NO_CONTENT, errors=(*SIGNED_IN, *BODY, 429),
            body=PasswordChangeSchema,
            description="The user's other sessions end (their streams within 2 s); this one stays. A wrong "
                        "current password is `403 invalid_credentials`; guesses count in the account's "
                        "CHAT_LOGIN_FAILURE_LIMIT (429).")),
        "api.me": ("get", _op("Who is signed in", {"200": _json("SignedIn")}, errors=SIGNED_IN)),
    }, "Rooms": {
        "api.list_rooms": ("get", _op("Every room, by name ignoring case", {"200": _json("RoomList")},
                                      errors=SIGNED_IN)),
        "api.create_room": ("post", _op(
            "Create a room", {"201": _json("OneRoom", "created")}, errors=(*SIGNED_IN, *BODY, 409, 429),
            body=RoomCreateSchema,
            description="The slug is derived from the name. A user (not a moderator) may create "
                        "CHAT_ROOM_CREATE_LIMIT rooms (429).")),
        "api.show_room": ("get", _op("A room and who is online in it", {"200": _json("RoomWithOnline")},
                                     errors=(*SIGNED_IN, 404), parameters=["slug"])),
    }, "Messages": {
        "api.list_messages": ("get", _op(
            "A page of a room's history", {"200": _json("MessagePage")}, errors=(*SIGNED_IN, 400, 404, 422),
            parameters=["slug", "limit", "before", "after"],
            description="Subscribing from `cursor` yields exactly what happened after this read.")),
        "api.post_message": ("post", _op(
            "Post a message", {"201": _json("OneMessage", "posted"),
                               "200": _json("OneMessage", "a repeat of this `client_id`: the first message")},
            errors=(*SIGNED_IN, *BODY, 404, 429), body=message_body, parameters=["slug"],
            description="`403 muted`, `room_locked`; `429 rate_limited` (CHAT_RATE_LIMIT) or `slow_mode`. "
                        "After a 503, retry with the same `client_id`: there will be one message.")),
        "api.delete_message": ("delete", _op(
            "Delete a message (its author or a moderator)", {"200": _json("OneMessage", "the tombstone")},
            errors=(*SIGNED_IN, 404, *BODY), parameters=["slug", "message_id"], body=ReasonSchema,
            body_required=False, description="An optional body gives a moderator's reason, kept in the log.")),
    }, "Live events": {
        "live.room_events": ("get", _op("A room's live events", _sse("StreamEvent"), errors=(*_LIVE_ERRORS, 404),
                                        parameters=["slug", *_STREAM_PARAMS])),
        "live.room_poll": ("get", _op("A room's live events, long-polled", _poll("RoomPoll"),
                                      errors=(*_LIVE_ERRORS, 404, 422), parameters=["slug", "cursor", "timeout"])),
        "live.feed_events": ("get", _op(
            "Several rooms' live events on one stream", _sse("StreamEvent"), errors=(*_FEED_ERRORS, 404, 422),
            parameters=["rooms", "away", *_STREAM_PARAMS],
            description="Ids are this feed's own positions; a `message` keeps its room event id in `data.id`. "
                        "`ready` adds `rooms`.")),
        "live.feed_poll": ("get", _op("Several rooms' live events, long-polled", _poll("FeedPoll"),
                                      errors=(*_FEED_ERRORS, 404, 422),
                                      parameters=["rooms", "away", "cursor", "timeout"])),
    }, "Moderation": {  # a user who is not a moderator gets 403 forbidden
        "live.moderation_events": ("get", _op(
            "Every room's durable events (moderators)", _sse("ModerationStreamEvent"), errors=_FEED_ERRORS,
            parameters=["rooms_filter", *_STREAM_PARAMS],
            description="Also `report_created` / `report_resolved`, `user_banned` / `user_unbanned` (durable) and "
                        "`presence` of the listed rooms, or without `rooms` of every room where anyone is or "
                        "lately was online (the project's additions).")),
        "live.moderation_poll": ("get", _op(
            "Every room's durable events, long-polled (moderators)", _poll("ModerationPoll"),
            errors=(*_FEED_ERRORS, 422), parameters=["rooms_filter", "cursor", "timeout"])),
        "moderation.mute": ("post", _op(
            "Mute a user in a room", {"201": _json("Mute", "muted")}, errors=(*SIGNED_IN, *BODY, 404),
            body=MuteSchema, parameters=["slug"],
            description="`403 forbidden` for a moderator or oneself. Broadcasts `user_muted`.")),
        "moderation.list_mutes": ("get", _op("The mutes in force in a room", {"200": _json("MuteList")},
                                             errors=(*SIGNED_IN, 404), parameters=["slug"])),
        "moderation.unmute": ("delete", _op("Unmute a user in a room", _NO_CONTENT, errors=(*SIGNED_IN, 404),
                                            parameters=["slug", "username"])),
        "moderation.ban": ("post", _op(
            "Ban a user", {"201": _json("Ban", "banned")}, errors=(*SIGNED_IN, *BODY, 404), body=BanSchema,
            description="Their streams end and their polls answer 403 within 2 s; their sessions are kept. "
                        "Publishes `user_banned` on the moderators' feed only (a user banned already: the ban in "
                        "force, and nothing published).")),
        "moderation.list_bans": ("get", _op("Every ban, newest first", {"200": _json("BanList")}, errors=SIGNED_IN)),
        "moderation.unban": ("delete", _op("Lift a ban", _NO_CONTENT, errors=(*SIGNED_IN, 404),
                                           parameters=["username"],
                                           description="Publishes `user_unbanned` on the moderators' feed only "
                                                       "(nothing when the user was not banned).")),
        "moderation.lock": ("post", _op("Lock a room: only moderators may post", {"200": _json("OneRoom")},
                                        errors=(*SIGNED_IN, 404, *BODY), parameters=["slug"], body=ReasonSchema,
                                        body_required=False)),
        "moderation.unlock": ("post", _op("Unlock a room", {"200": _json("OneRoom")}, errors=(*SIGNED_IN, 404, *BODY),
                                          parameters=["slug"], body=ReasonSchema, body_required=False)),
        "moderation.slow_mode": ("post", _op(
            "Set a room's slow mode (0 turns it off)", {"200": _json("OneRoom")}, errors=(*SIGNED_IN, *BODY, 404),
            body=SlowModeSchema, parameters=["slug"])),
        "moderation.purge": ("post", _op(
            "Delete a user's recent messages", {"200": _json("Purged", "the ids of the deleted messages")},
            errors=(*SIGNED_IN, *BODY, 404), body=PurgeSchema)),
        "moderation.report_message": ("post", _op(
            "Report a message to the moderators (any signed-in user)",
            {"201": _json("Report", "reported"),
             "200": _json("Report", "this user reported this message before: the first report, unchanged")},
            errors=(*SIGNED_IN, *BODY, 404, 429), body=ReportSchema, parameters=["slug", "message_id"],
            description="Publishes `report_created` on the moderators' feed only; a repeat publishes nothing. "
                        "`429 rate_limited` past CHAT_REPORT_LIMIT reports of the account (a repeat does not "
                        "count).")),
        "moderation.list_reports": ("get", _op(
            "Reports, newest first", {"200": _json("ReportList")}, errors=(*SIGNED_IN, 422), parameters=["status"])),
        "moderation.resolve_report": ("post", _op(
            "Resolve a report: dismiss it, or delete its message", {"200": _json("Report", "resolved (a report "
                                                                                 "resolved before: as it is)")},
            errors=(*SIGNED_IN, *BODY, 404), body=ResolveReportSchema, parameters=["report_id"],
            description="`delete` deletes the message (broadcasting `message_deleted`). Publishes "
                        "`report_resolved` on the moderators' feed and logs `resolve_report`.")),
        "moderation.list_actions": ("get", _op("The moderation log, newest first", {"200": _json("ActionList")},
                                               errors=(*SIGNED_IN, 422), parameters=["limit"])),
    }, "Operations": {
        "ops.healthz": ("get", _op("Liveness: touches no dependency", {"200": _json("Health")}, public=True)),
        "ops.readyz": ("get", _op("Readiness: Redis and the database", {
            "200": _json("Readiness", "ready"), "503": _json("Readiness", "not ready: the failing part says why")},
            public=True)),
        "ops.openapi_document": ("get", _op("This document", {"200": _json({"type": "object"})}, public=True)),
    }}


_ABOUT = """The HTTP API of the chat service. docs/API.md is the contract; this document is built from the
schemas the server validates with.

- Sign in with `register` or `login`: the answer sets the `chat_session` cookie (HttpOnly) and carries a
  `csrf_token`, to send as the `X-CSRF-Token` header of every POST and DELETE but those two.
- Every error is `{"error": {"code", "message", "fields"?}}`; `fields` only for `422 validation_error`. Checks run
  in this order: 401, 403 csrf_failed, 403 banned / forbidden, 404, 413 / 415 / 400, 422, 403 muted /
  room_locked, 429, 503.
- Times are ISO-8601 UTC with milliseconds and `Z`. Event ids are opaque strings (compare two of one room
  only, as pairs of integers split at `-`); `0-0` is the position before a room's first event.
- An empty query parameter means it was not given. Every answer carries `X-Request-ID`."""

_SECURITY_SCHEMES = {
    "session": {"type": "apiKey", "in": "cookie", "name": "chat_session",
                "description": "set by register and login; checked on the server, so it ends at logout"},
    "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
             "description": "the `csrf_token` of register, login or me; else `403 csrf_failed`"},
}


def _ecma_pattern(self, field, ret, **_):
    """OpenAPI patterns are ECMA-262 regular expressions, where Python's end of text `\\Z` (used in
    schemas.py because `$` also matches before a final newline there) is spelt `$`."""
    pattern = ret.get("pattern")
    if pattern and pattern.endswith("\\Z"):
        return {"pattern": pattern[:-2] + "$"}
    return {}


def _schema_name(schema) -> str:
    """Request schemas are named for what they carry: `MuteSchema` -> `MuteRequest` (the answer is `Mute`)."""
    name = resolve_schema_cls(schema).__name__
    return name.removesuffix("Schema") + "Request" if name.endswith("Schema") else name


def _openapi_path(rule: str) -> str:
    """`/api/rooms/<slug>` -> `/api/rooms/{slug}`"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build(app) -> dict:
    """The document for this app: its routes, with the limits its configuration sets."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(title="Chat", version="1", openapi_version="3.2.0", plugins=[plugin],
                   info={"description": _ABOUT})
    plugin.converter.add_attribute_function(_ecma_pattern)
    for schema in [*ANSWERS, *(type(checked) for checked in schemas.DURABLE_EVENTS.values())]:
        if schema.__name__ not in spec.components.schemas:  # else added already, by a schema that nests it
            spec.components.schema(schema.__name__, schema=schema)
    spec.components.schema("StreamEvent", _stream_events(presence=True))
    spec.components.schema("ModerationStreamEvent", _stream_events(presence=True, reports=True))
    for name, parameter in _parameters(app.config["CHAT_MAX_ROOMS_PER_STREAM"]).items():
        spec.components.parameter(name, parameter["in"], parameter)
    for status, (name, description) in _ERRORS.items():
        response = _json("Error", description, {"Retry-After": _RETRY_AFTER} if status in (429, 503) else None)
        spec.components.response(name, response)
    spec.components.response("UriTooLong", _URI_TOO_LONG)
    for name, scheme in _SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    rules = {rule.endpoint: rule.rule for rule in app.url_map.iter_rules()}
    for tag, operations in _operations(app.config).items():
        spec.tag({"name": tag})
        for endpoint, (method, operation) in operations.items():
            signed_in = SESSION if method == "get" else SESSION_AND_CSRF  # as auth.check_request asks
            operation = {"security": signed_in, **operation, "operationId": endpoint.split(".")[-1], "tags": [tag]}
            spec.path(_openapi_path(rules[endpoint]), operations={method: operation})
    return spec.to_dict()


def document(app) -> tuple[bytes, str]:
    """The document as JSON and its ETag, built once per process (the routes and settings never change)."""
    cached = app.extensions.get("chat_openapi")
    if cached is None:
        body = json.dumps(build(app), separators=(",", ":")).encode()
        cached = app.extensions["chat_openapi"] = (body, hashlib.sha256(body).hexdigest()[:32])
    return cached
