"""The shapes of the API's answers and of ephemeral events' data, for the OpenAPI document (openapi.py).
The durable events' data, and the message, room, report and ban objects they carry, are schemas.py's."""
from marshmallow import Schema, fields, validate

from .schemas import EVENT_ID, TIME, Ban, Message, Report, Room

# The document states answers exactly (no field it does not name), so the schemathesis run in
# tests/test_openapi.py notices a field added or changed on either side.


def _text(description=None, pattern=None, **options):
    """A required string; `description` and `pattern` go to the document."""
    metadata = {key: value for key, value in (("description", description), ("pattern", pattern)) if value}
    return fields.String(required=True, metadata=metadata, **options)


def _time(**options):
    return fields.String(required=True, metadata={"format": "date-time", "pattern": TIME}, **options)


def _event_id(description=None, **options):
    return _text(description, EVENT_ID, **options)


def _nullable_text():
    return fields.String(required=True, allow_none=True)


def _usernames():
    return fields.List(fields.String(), required=True)


class User(Schema):
    id = fields.Integer(required=True)
    username = _text()
    role = _text(validate=validate.OneOf(["user", "moderator"]))


class SignedIn(Schema):
    user = fields.Nested(User, required=True)
    csrf_token = _text("send it as the X-CSRF-Token header of every POST and DELETE")


class RoomList(Schema):
    rooms = fields.List(fields.Nested(Room), required=True)


class OneRoom(Schema):
    room = fields.Nested(Room, required=True)


class RoomWithOnline(OneRoom):
    online = _usernames()


class OneMessage(Schema):
    message = fields.Nested(Message, required=True)


class MessagePage(Schema):
    messages = fields.List(fields.Nested(Message), required=True, metadata={"description": "oldest first"})
    has_more = fields.Boolean(required=True)
    cursor = _event_id("the room's position at this read: subscribe from it")


class Mute(Schema):
    room = _text()
    username = _text()
    until = _time()
    by = _text()
    reason = _nullable_text()


class MuteList(Schema):
    mutes = fields.List(fields.Nested(Mute), required=True)


class BanList(Schema):
    bans = fields.List(fields.Nested(Ban), required=True)


class ModerationAction(Schema):
    id = fields.Integer(required=True)
    moderator = _text()
    action = _text("`delete_message`, `mute`, `unmute`, `ban`, `unban`, `lock`, `unlock`, `slow_mode`, `purge`, "
                   "`resolve_report` (its target the report's id, its reason `dismiss` or `delete`), and any added "
                   "later")
    room = _nullable_text()
    target = _nullable_text()
    reason = _nullable_text()
    created_at = _time()


class ActionList(Schema):
    actions = fields.List(fields.Nested(ModerationAction), required=True)


class Purged(Schema):
    deleted = fields.List(fields.String(metadata={"pattern": EVENT_ID}), required=True)


class ReportList(Schema):
    reports = fields.List(fields.Nested(Report), required=True, metadata={"description": "newest first"})


# The data of each ephemeral event (SSE `data:` lines, poll `events[].data`); the durable ones' are schemas.py's.

class PresenceEvent(Schema):
    room = _text()
    online = _usernames()


class ReadyEvent(Schema):
    cursor = _event_id()
    time = _time()
    heartbeat = fields.Integer(required=True)
    rooms = fields.List(fields.String(), metadata={"description": "on the several-rooms feed only"})


class PingEvent(Schema):
    time = _time()


class ResetEvent(Schema):
    reason = _text()


POLL_EVENT_DATA = ["Message", "MessageDeletedEvent", "MuteEvent", "RoomUpdatedEvent", "ResetEvent"]


class PollEvent(Schema):
    id = _event_id("null for `reset`", allow_none=True)
    event = _text(validate=validate.OneOf(["message", "message_deleted", "user_muted", "user_unmuted",
                                           "room_updated", "reset"]))
    data = fields.Dict(required=True, metadata={
        "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in POLL_EVENT_DATA]})


class ModerationPollEvent(PollEvent):
    event = _text(validate=validate.OneOf(["message", "message_deleted", "user_muted", "user_unmuted",
                                           "room_updated", "report_created", "report_resolved", "user_banned",
                                           "user_unbanned", "reset"]))
    data = fields.Dict(required=True, metadata={
        "oneOf": [{"$ref": f"#/components/schemas/{name}"}
                  for name in [*POLL_EVENT_DATA, "ReportEvent", "UserBannedEvent", "UserUnbannedEvent"]]})


class RoomPoll(Schema):
    events = fields.List(fields.Nested(PollEvent), required=True)
    cursor = _event_id()
    online = _usernames()


class FeedPoll(RoomPoll):
    online = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True,
                         metadata={"description": "who is online, by room slug"})


class ModerationPoll(RoomPoll):
    events = fields.List(fields.Nested(ModerationPollEvent), required=True)
    online = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True, metadata={
        "description": "who is online, by room slug: the listed rooms, or (no `rooms`) every room where anyone "
                       "is or lately was (the project's addition)"})


class Health(Schema):
    status = _text(validate=validate.OneOf(["ok"]))


class Readiness(Schema):
    redis = _text("`ok`, or `failed: ` and why")
    database = _text("`ok`, or `failed: ` and why")


class ErrorDetail(Schema):
    code = _text(pattern="^[a-z][a-z0-9_]*$")
    message = _text()
    fields = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "validation errors only: the problems of each field"})


class Error(Schema):
    error = fields.Nested(ErrorDetail, required=True)


# Every schema above (and those it takes from schemas.py), named in the document by its class name.
ANSWERS = [schema for schema in list(globals().values())
           if isinstance(schema, type) and issubclass(schema, Schema) and schema is not Schema]
