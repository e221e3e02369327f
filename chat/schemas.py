"""Validation of what clients send, and the schema of every event the service publishes."""
import re
import unicodedata

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate, validates

# \Z, not $: `$` also matches before a trailing newline, which would let "alice\n" through.
USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{3,32}\Z")
CLIENT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")
SLUG = re.compile(r"^[a-z0-9\-]{1,64}\Z")  # what slugify() makes
_ALLOWED_CONTROLS = {"\n", "\t"}


def has_controls(value: str, allowed=frozenset()) -> bool:
    """Whether the text holds control characters (other than `allowed`): never stored, PostgreSQL refuses NUL."""
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value)


def _multiline_text(value: str) -> None:
    if has_controls(value, _ALLOWED_CONTROLS):
        raise ValidationError("must not contain control characters other than newline and tab")


class _Input(Schema):
    class Meta:
        unknown = EXCLUDE  # extra fields are ignored, not an error: clients may be newer than us


class CredentialsSchema(_Input):
    username = fields.String(required=True, validate=validate.Regexp(
        USERNAME, error="3–32 characters of letters, digits, '_', '.' and '-'"))
    password = fields.String(required=True, validate=validate.Length(min=8, max=256))


def slugify(name: str) -> str:
    """`Café Talk!` -> `cafe-talk`: accents folded, runs of anything else become one dash."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:64].strip("-")


class RoomCreateSchema(_Input):
    name = fields.String(required=True, metadata={
        "description": "1–64 characters after trimming, with a letter or digit (the slug is made of those)"})

    @pre_load
    def trim(self, data, **_):
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = {**data, "name": data["name"].strip()}
        return data

    @validates("name")
    def check_name(self, value, **_):
        if not 1 <= len(value) <= 64:
            raise ValidationError("must be 1–64 characters after trimming")
        if not slugify(value):
            raise ValidationError("must contain a letter or digit to make the room's address")
        if has_controls(value):
            raise ValidationError("must not contain control characters")

    @post_load
    def add_slug(self, data, **_):
        return {**data, "slug": slugify(data["name"])}


def normalize_body(body: str) -> str:
    return body.replace("\r\n", "\n").replace("\r", "\n").strip()


class MessageCreateSchema(_Input):
    body = fields.String(required=True, metadata={
        "description": "1 to CHAT_MAX_MESSAGE_CHARS (default 2000) characters once CRLF and CR become LF and "
                       "surrounding whitespace is trimmed; no control characters but newline and tab"})
    client_id = fields.String(load_default=None, allow_none=True,
                              validate=validate.Regexp(CLIENT_ID, error="1–64 of letters, digits, '_' and '-'"))

    def __init__(self, max_chars: int, **kwargs):
        super().__init__(**kwargs)
        self.max_chars = max_chars

    @pre_load
    def normalize(self, data, **_):
        if isinstance(data, dict) and isinstance(data.get("body"), str):
            data = {**data, "body": normalize_body(data["body"])}
        return data

    @validates("body")
    def check_body(self, value, **_):
        if not 1 <= len(value) <= self.max_chars:
            raise ValidationError(f"must be 1–{self.max_chars} characters")
        _multiline_text(value)


class ReasonSchema(_Input):
    """The optional body of a deletion, a lock or an unlock: why, for the moderation log."""

    reason = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=500), _multiline_text])


class MuteSchema(_Input):
    username = fields.String(required=True, validate=validate.Length(min=1, max=32))
    minutes = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10080))
    reason = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=500), _multiline_text])


class SlowModeSchema(_Input):
    seconds = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=3600))
    reason = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=500), _multiline_text])


class PurgeSchema(_Input):
    username = fields.String(required=True, validate=validate.Length(min=1, max=32))
    minutes = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10080))
    room = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))
    reason = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=500), _multiline_text])


class BanSchema(_Input):
    username = fields.String(required=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=500), _multiline_text])


# Events: every durable event's data, checked before it is published (STYLE.md), and named in the OpenAPI
# document (openapi.py) by class name. `metadata` is the document's only: patterns and formats that events
# hold by construction are described there, not checked again on each publish.

TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"  # API.md: ISO-8601 UTC with milliseconds and Z
EVENT_ID = r"^\d{1,20}-\d{1,20}$"  # opaque to clients, but always a Redis Stream id
_TIME = {"format": "date-time", "pattern": TIME}


class Sender(Schema):
    id = fields.Integer(required=True)
    username = fields.String(required=True)


class Message(Schema):
    """The API's message object: `message` events, the answers that carry a message, a report's message."""

    id = fields.String(required=True, metadata={"pattern": EVENT_ID})  # the room event id the database gave it
    room = fields.String(required=True)
    body = fields.String(required=True, metadata={"description": "empty when the message is deleted"})
    sender = fields.Nested(Sender, required=True)
    created_at = fields.String(required=True, metadata=_TIME)
    client_id = fields.String(allow_none=True, required=True)
    deleted = fields.Boolean(required=True)


class MessageDeletedEvent(Schema):
    id = fields.String(required=True, metadata={"pattern": EVENT_ID})
    room = fields.String(required=True)
    deleted_by = fields.String(required=True)


class MuteEvent(Schema):
    room = fields.String(required=True)
    username = fields.String(required=True)
    until = fields.String(allow_none=True, required=True, metadata=_TIME)
    by = fields.String(allow_none=True, required=True)  # null: a mute that ran out


class Room(Schema):
    """The API's room object: `room_updated` events and the answers that carry a room."""

    slug = fields.String(required=True, metadata={"pattern": SLUG.pattern})
    name = fields.String(required=True)
    created_at = fields.String(required=True, metadata=_TIME)
    locked = fields.Boolean(required=True)
    slow_mode_seconds = fields.Integer(required=True, metadata={"description": "0 when slow mode is off"})
    online_count = fields.Integer(required=True)


class RoomUpdatedEvent(Schema):
    room = fields.Nested(Room, required=True)


class ReportSchema(_Input):
    """`POST /api/rooms/<slug>/messages/<id>/reports`."""

    reason = fields.String(required=True, validate=[validate.Length(min=1, max=500), _multiline_text], metadata={
        "description": "1–500 characters once surrounding whitespace is trimmed"})

    @pre_load
    def trim(self, data, **_):
        if isinstance(data, dict) and isinstance(data.get("reason"), str):
            data = {**data, "reason": data["reason"].strip()}
        return data


class ResolveReportSchema(_Input):
    action = fields.String(required=True, validate=validate.OneOf(["dismiss", "delete"]))


class Report(Schema):
    """The API's report object: report events and the moderators' report answers."""

    id = fields.Integer(required=True)
    room = fields.String(required=True)
    message = fields.Nested(Message, required=True, metadata={"description": "as it is now (a tombstone once deleted)"})
    reporter = fields.String(required=True)
    reason = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["open", "resolved"]))
    resolution = fields.String(allow_none=True, required=True, validate=validate.OneOf(["dismiss", "delete"]))
    resolved_by = fields.String(allow_none=True, required=True)
    created_at = fields.String(required=True, metadata=_TIME)


class ReportEvent(Schema):
    """`report_created` and `report_resolved`: the moderators' feed only."""

    report = fields.Nested(Report, required=True)


class Ban(Schema):
    """The API's ban object, as GET /api/bans lists it."""

    username = fields.String(required=True)
    by = fields.String(required=True)
    reason = fields.String(allow_none=True, required=True)
    created_at = fields.String(required=True, metadata=_TIME)


class UserBannedEvent(Ban):
    """`user_banned`: the ban (the moderators' feed only)."""


class UserUnbannedEvent(Schema):
    """`user_unbanned` (the moderators' feed only)."""

    username = fields.String(required=True)
    by = fields.String(allow_none=True, required=True, metadata={
        "description": "null: an operator's unban from the command line"})  # flask users unban


DURABLE_EVENTS = {
    "message": Message(),
    "message_deleted": MessageDeletedEvent(),
    "user_muted": MuteEvent(),
    "user_unmuted": MuteEvent(),
    "room_updated": RoomUpdatedEvent(),
    "report_created": ReportEvent(),
    "report_resolved": ReportEvent(),
    "user_banned": UserBannedEvent(),
    "user_unbanned": UserUnbannedEvent(),
}


def check_event(event_type: str, data: dict) -> dict:
    """Raise ValidationError unless `data` is what clients are promised for `event_type`."""
    errors = DURABLE_EVENTS[event_type].validate(data)
    if errors:
        raise ValidationError(errors)
    return data


# Sessions (added by the sessions work; kept at the end of the file)

class PasswordChangeSchema(_Input):
    """`POST /api/auth/password`: the new password follows registration's rule. The current one is only
    bounded (a longer one was never a password here); whether it is right is checked after validation."""

    current_password = fields.String(required=True, validate=validate.Length(min=1, max=256))
    new_password = fields.String(required=True, validate=validate.Length(min=8, max=256))
