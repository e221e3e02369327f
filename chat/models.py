"""The durable record: users, sessions, rooms, messages and moderation, and how each looks in the API."""
import json
import time
from datetime import datetime, timedelta

from sqlalchemy import (BigInteger, Index, UniqueConstraint, and_, bindparam, case, exists, func, insert, or_,
                        select, text, update)
from sqlalchemy.dialects import postgresql, sqlite

from .events import tombstoned
from .extensions import db
from .ids import ZERO, EventId, iso, utcnow


class User(db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(32), nullable=False)
    # Usernames are unique ignoring case: the lowered form carries the constraint.
    username_key = db.Column(db.String(32), nullable=False, unique=True)
    password_hash = db.Column(db.String(256), nullable=False)
    role = db.Column(db.String(16), nullable=False, default="user")
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)

    @property
    def is_moderator(self) -> bool:
        return self.role == "moderator"

    def to_api(self) -> dict:
        return {"id": self.id, "username": self.username, "role": self.role}


class Session(db.Model):
    """A signed-in browser. The cookie holds a random token; only its hash is stored."""

    __tablename__ = "sessions"
    id = db.Column(db.Integer, primary_key=True)
    token_hash = db.Column(db.String(64), nullable=False, unique=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    csrf_token = db.Column(db.String(64), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    # Written at most every few minutes (auth.py), not on every request: precise enough for an idle timeout.
    last_seen_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    user = db.relationship(User, lazy="joined")

    def expires_at(self, idle: timedelta, lifetime: timedelta) -> datetime:
        """When this session ends: `idle` after it was last seen, or `lifetime` after sign-in if sooner."""
        return min(self.last_seen_at + idle, self.created_at + lifetime)


class Room(db.Model):
    __tablename__ = "rooms"
    id = db.Column(db.Integer, primary_key=True)
    slug = db.Column(db.String(64), nullable=False, unique=True)
    name = db.Column(db.String(64), nullable=False)
    locked = db.Column(db.Boolean, nullable=False, default=False)
    slow_mode_seconds = db.Column(db.Integer, nullable=False, default=0, server_default="0")  # 0: off
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    # The id of the room's last event: the database gives each event its id (allocate_event_id), so
    # the order of commits is the room's order, and Redis only publishes it.
    event_ms = db.Column(BigInteger, nullable=False, default=0, server_default="0")
    event_seq = db.Column(BigInteger, nullable=False, default=0, server_default="0")

    def to_api(self, online_count: int = 0) -> dict:
        return {"slug": self.slug, "name": self.name, "created_at": iso(self.created_at),
                "locked": self.locked, "slow_mode_seconds": self.slow_mode_seconds, "online_count": online_count}


class Message(db.Model):
    """A message, with the event id its insert transaction took from the room (docs/ARCHITECTURE.md)."""

    __tablename__ = "messages"
    id = db.Column(db.Integer, primary_key=True)
    room_id = db.Column(db.Integer, db.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False)
    sender_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    client_id = db.Column(db.String(64), nullable=True)
    body = db.Column(db.Text, nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    event_ms = db.Column(BigInteger, nullable=True)
    event_seq = db.Column(BigInteger, nullable=True)
    deleted_at = db.Column(db.DateTime, nullable=True)
    deleted_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    # The message_deleted event's id, so a replay from the database can rebuild it.
    deleted_event_ms = db.Column(BigInteger, nullable=True)
    deleted_event_seq = db.Column(BigInteger, nullable=True)

    room = db.relationship(Room, lazy="joined")
    sender = db.relationship(User, foreign_keys=[sender_id], lazy="joined")
    deleted_by = db.relationship(User, foreign_keys=[deleted_by_id], lazy="joined")

    __table_args__ = (
        UniqueConstraint("room_id", "sender_id", "client_id", name="uq_messages_client"),
        Index("ix_messages_room_event", "room_id", "event_ms", "event_seq"),
    )

    @property
    def event_id(self) -> EventId | None:
        return None if self.event_ms is None else EventId(self.event_ms, self.event_seq)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_api(self) -> dict:
        return message_api(self.event_id, self.room.slug, self.body, self.sender.id, self.sender.username,
                           self.created_at, self.client_id, self.deleted)

    def deletion_api(self) -> dict:
        """The data of its `message_deleted` event."""
        return {"id": str(self.event_id), "room": self.room.slug, "deleted_by": self.deleted_by.username}


def message_api(event_id: EventId, slug: str, body: str, sender_id: int, username: str, created_at: datetime,
                client_id: str | None, deleted: bool = False) -> dict:
    """The API's message object: the one place its shape is built (history, events and answers alike)."""
    data = {"id": str(event_id), "room": slug, "body": body, "sender": {"id": sender_id, "username": username},
            "created_at": iso(created_at), "client_id": client_id, "deleted": False}
    return tombstoned(data) if deleted else data


def find_message(room_id: int, event_id: EventId) -> Message | None:
    """A room's message by its event id (None for an id no message can have)."""
    if not event_id.storable:
        return None
    return Message.query.filter_by(room_id=room_id, event_ms=event_id.ms, event_seq=event_id.seq).one_or_none()


def posting_state(room_id: int, user_id: int, client_id: str | None) -> tuple[bool, int, bool, int | None]:
    """What a post needs to know, in one statement: whether the room is locked, its slow mode, whether the
    user is muted in it, and the id of the message they already sent with this client_id (if any)."""
    locked, slow_mode, is_muted, repeat_id = db.session.connection().execute(_POSTING_STATE, {
        "room_id": room_id, "user_id": user_id, "client_id": client_id, "now": utcnow()}).one()
    return locked, slow_mode, bool(is_muted), repeat_id


def insert_messages(rows: list[tuple]) -> None:
    """Insert messages `(room_id, sender_id, client_id, body, created_at, event_id)` in one statement."""
    db.session.connection().execute(_INSERT_MESSAGE, [
        {"room_id": room_id, "sender_id": sender_id, "client_id": client_id, "body": body, "created_at": created_at,
         "event_ms": event_id.ms, "event_seq": event_id.seq}
        for room_id, sender_id, client_id, body, created_at, event_id in rows])


class PostRules(db.Model):
    """One row: `version` counts the changes that can refuse a post that was allowed before (a session
    ended, a ban, a role changed, a room's lock or slow mode, a mute), each bumped in the transaction of
    its change (bump_post_rules). A process's memory of what a post's checks read (caches.PostCache)
    carries the version it was read at; the statement that gives a post its id returns the version too,
    and a post is recorded only if they are equal (writer.py): nothing changed since its checks."""

    __tablename__ = "post_rules"
    id = db.Column(db.Integer, primary_key=True)
    version = db.Column(BigInteger, nullable=False, default=0, server_default="0")



def post_rules_version() -> int:
    """The version now (read before what a post's checks read from the database, so what they read is at
    least as new as the version: a change between the two only makes the post look stale)."""
    return db.session.connection().execute(_RULES_VERSION).scalar_one()


def bump_post_rules() -> None:
    """Count a change that can refuse posts, in the caller's transaction; call it last before the commit
    (every transaction takes this row's lock after its others, so none waits on another in a cycle).

    Without the row (a database emptied by hand, as the tests do) the version reads 0 and the first bump
    makes it the time in microseconds: above any version it had before, so no memory from before matches."""
    connection = db.session.connection()
    upsert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert(_rules)
    connection.execute(upsert.values(id=1, version=time.time_ns() // 1000).on_conflict_do_update(
        index_elements=[_rules.c.id], set_={"version": _rules.c.version + 1}))


def posting_rules(room_id: int, user_id: int) -> tuple[bool, int, datetime | None]:
    """A room's lock and slow mode, and the end of the user's mute in it (None if none): what a post's
    checks read, to keep in memory (caches.PostCache)."""
    locked, slow_mode, mute_until = db.session.connection().execute(_POSTING_RULES, {
        "room_id": room_id, "user_id": user_id}).one()
    return locked, slow_mode, mute_until


class Mute(db.Model):
    __tablename__ = "mutes"
    id = db.Column(db.Integer, primary_key=True)
    room_id = db.Column(db.Integer, db.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    until = db.Column(db.DateTime, nullable=False, index=True)
    by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    reason = db.Column(db.String(500), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    __table_args__ = (UniqueConstraint("room_id", "user_id", name="uq_mutes_room_user"),)
    room = db.relationship(Room, lazy="joined")
    user = db.relationship(User, foreign_keys=[user_id], lazy="joined")
    by = db.relationship(User, foreign_keys=[by_id], lazy="joined")

    def to_api(self) -> dict:
        return {"room": self.room.slug, "username": self.user.username, "until": iso(self.until),
                "by": self.by.username, "reason": self.reason}


class Ban(db.Model):
    __tablename__ = "bans"
    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True)
    by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    reason = db.Column(db.String(500), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    user = db.relationship(User, foreign_keys=[user_id], lazy="joined")
    by = db.relationship(User, foreign_keys=[by_id], lazy="joined")

    def to_api(self) -> dict:
        return {"username": self.user.username, "by": self.by.username, "reason": self.reason,
                "created_at": iso(self.created_at)}


class ModerationAction(db.Model):
    """The moderation log; `event_*` is the stream event the action caused, if any.

    Entries without a moderator record what happened by itself (`mute_expired`): they carry an event
    for replays, and the log that moderators read leaves them out."""

    __tablename__ = "moderation_actions"
    id = db.Column(db.Integer, primary_key=True)
    moderator_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    action = db.Column(db.String(32), nullable=False)
    room_id = db.Column(db.Integer, db.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=True)
    target = db.Column(db.String(64), nullable=True)
    reason = db.Column(db.String(500), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow, index=True)
    event_ms = db.Column(BigInteger, nullable=True)
    event_seq = db.Column(BigInteger, nullable=True)
    # The event's data as published, so a replay from the database can rebuild it exactly.
    event_type = db.Column(db.String(32), nullable=True)
    event_data = db.Column(db.Text, nullable=True)

    moderator = db.relationship(User, lazy="joined")
    room = db.relationship(Room, lazy="joined")
    __table_args__ = (Index("ix_moderation_actions_room_event", "room_id", "event_ms", "event_seq"),)

    def to_api(self) -> dict:
        return {"id": self.id, "moderator": self.moderator.username if self.moderator else None, "action": self.action,
                "room": self.room.slug if self.room else None, "target": self.target,
                "reason": self.reason, "created_at": iso(self.created_at)}


class FeedEvent(db.Model):
    """An event of no room (a ban, an unban: events.ROOMLESS), recorded in the transaction of the change it
    announces. Its feed position is where Redis puts it; `published_at` says it got there, and the relay
    publishes any that a Redis failure held back (outbox.publish_feed_event)."""
    __tablename__ = "feed_events"
    id = db.Column(db.Integer, primary_key=True)
    type = db.Column(db.String(32), nullable=False)
    data = db.Column(db.Text, nullable=False)  # the event's JSON, as checked against its schema
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    published_at = db.Column(db.DateTime, nullable=True, index=True)


class Report(db.Model):
    """A user's report of a message to the moderators. Its two events (`report_created`, `report_resolved`)
    are events of the message's room, with the ids their transactions took from it, so the record rebuilds
    them like any other; only the moderators' feed delivers them (events.reaches)."""

    __tablename__ = "reports"
    id = db.Column(db.Integer, primary_key=True)
    room_id = db.Column(db.Integer, db.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False)
    message_id = db.Column(db.Integer, db.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False)
    reporter_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    reason = db.Column(db.String(500), nullable=False)
    status = db.Column(db.String(16), nullable=False, default="open")  # open | resolved
    resolution = db.Column(db.String(16), nullable=True)  # dismiss | delete
    resolved_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    resolved_at = db.Column(db.DateTime, nullable=True)
    created_event_ms = db.Column(BigInteger, nullable=True)
    created_event_seq = db.Column(BigInteger, nullable=True)
    resolved_event_ms = db.Column(BigInteger, nullable=True)
    resolved_event_seq = db.Column(BigInteger, nullable=True)

    room = db.relationship(Room, lazy="joined")
    message = db.relationship(Message, lazy="joined")
    reporter = db.relationship(User, foreign_keys=[reporter_id], lazy="joined")
    resolved_by = db.relationship(User, foreign_keys=[resolved_by_id], lazy="joined")
    __table_args__ = (
        UniqueConstraint("message_id", "reporter_id", name="uq_reports_message_reporter"),
        Index("ix_reports_status", "status", "id"),
        Index("ix_reports_room_created_event", "room_id", "created_event_ms", "created_event_seq"),
        Index("ix_reports_room_resolved_event", "room_id", "resolved_event_ms", "resolved_event_seq"),
    )

    def to_api(self, as_created: bool = False) -> dict:
        """The API's report object; `as_created`: as it was when it was made (its report_created event)."""
        resolved = self.status == "resolved" and not as_created
        return {"id": self.id, "room": self.room.slug, "message": self.message.to_api(),
                "reporter": self.reporter.username, "reason": self.reason,
                "status": "resolved" if resolved else "open", "resolution": self.resolution if resolved else None,
                "resolved_by": self.resolved_by.username if resolved and self.resolved_by else None,
                "created_at": iso(self.created_at)}


def find_report(report_id: str) -> Report | None:
    """The report a path names (no query for what cannot be an id)."""
    if not (report_id.isdigit() and len(report_id) < 10):
        return None
    return db.session.get(Report, int(report_id))


def reports_newest_first(status: str | None, limit: int = 200) -> list[Report]:
    query = Report.query
    if status is not None:
        query = query.filter(Report.status == status)
    return query.order_by(Report.id.desc()).limit(limit).all()


def bans_newest_first() -> list[Ban]:
    return Ban.query.order_by(Ban.created_at.desc(), Ban.id.desc()).all()


def mutes_in_force(room: Room) -> list[Mute]:
    """The room's mutes that have not run out, the soonest to end first."""
    return Mute.query.filter(Mute.room_id == room.id, Mute.until > utcnow()).order_by(Mute.until, Mute.id).all()


def moderation_log(limit: int) -> list[ModerationAction]:
    """What moderators did, newest first."""
    return ModerationAction.query.filter(ModerationAction.moderator_id.isnot(None)).order_by(
        ModerationAction.id.desc()).limit(limit).all()


def users_by_name(moderators_only: bool = False) -> list[tuple[User, bool]]:
    """Every user (or moderator) with whether they are banned, by username ignoring case."""
    query = db.session.query(User, Ban.id.isnot(None)).outerjoin(Ban, Ban.user_id == User.id)
    if moderators_only:
        query = query.filter(User.role == "moderator")
    return [(user, banned) for user, banned in query.order_by(User.username_key)]


def find_user(username: str) -> User | None:
    return User.query.filter_by(username_key=username.lower()).one_or_none()


def find_room(slug: str) -> Room | None:
    return Room.query.filter_by(slug=slug).one_or_none()


def room_ids(slugs) -> dict[str, int]:
    """The ids of those of these slugs that name rooms, in one query."""
    return dict(db.session.query(Room.slug, Room.id).filter(Room.slug.in_(list(slugs))))


# The hot path's statements, built once (Core, on the tables): a post costs no statement building and no
# ORM machinery. A client_id of None matches no row (NULL = NULL is not true).
_rooms, _messages, _mutes, _rules = Room.__table__, Message.__table__, Mute.__table__, PostRules.__table__
_POSTING_STATE = select(
    _rooms.c.locked, _rooms.c.slow_mode_seconds,
    exists().where(_mutes.c.room_id == bindparam("room_id"), _mutes.c.user_id == bindparam("user_id"),
                   _mutes.c.until > bindparam("now")),
    select(_messages.c.id).where(_messages.c.room_id == bindparam("room_id"),
                                 _messages.c.sender_id == bindparam("user_id"),
                                 _messages.c.client_id == bindparam("client_id")).scalar_subquery(),
).where(_rooms.c.id == bindparam("room_id"))
_POSTING_RULES = select(
    _rooms.c.locked, _rooms.c.slow_mode_seconds,
    select(func.max(_mutes.c.until)).where(_mutes.c.room_id == bindparam("room_id"),
                                           _mutes.c.user_id == bindparam("user_id")).scalar_subquery(),
).where(_rooms.c.id == bindparam("room_id"))
_RULES_VERSION_NOW = func.coalesce(select(_rules.c.version).where(_rules.c.id == 1).scalar_subquery(), 0)
_RULES_VERSION = select(_RULES_VERSION_NOW)
_INSERT_MESSAGE = insert(_messages)
_ALLOCATE = update(_rooms).where(_rooms.c.id == bindparam("room_id")).values(
    event_ms=case((_rooms.c.event_ms < bindparam("now_ms"), bindparam("now_ms")), else_=_rooms.c.event_ms),
    event_seq=_rooms.c.event_seq + bindparam("count")).returning(_rooms.c.event_ms, _rooms.c.event_seq)
_ALLOCATE_FOR_POSTS = _ALLOCATE.returning(_RULES_VERSION_NOW)


def allocate_event_ids(room_id: int, count: int) -> list[EventId]:
    """The next `count` event ids of a room, in the transaction that records the events: `(ms, seq)` where
    `ms` is now (never less than the last event's) and `seq` counts the room's events one by one. The
    update locks the room's row until the commit, so commits happen in id order and a reader never sees
    an event without every earlier one (a prefix of the room's log)."""
    ms, last_seq = db.session.connection().execute(_ALLOCATE, {"room_id": room_id, "count": count,
                                                               "now_ms": int(time.time() * 1000)}).one()
    return _event_ids(ms, last_seq, count)


def allocate_post_ids(room_id: int, count: int) -> tuple[list[EventId], int]:
    """allocate_event_ids for posts, with the post rules' version as the same statement reads it: a post
    whose checks read an older version is not recorded in this transaction (writer.py)."""
    ms, last_seq, version = db.session.connection().execute(_ALLOCATE_FOR_POSTS, {
        "room_id": room_id, "count": count, "now_ms": int(time.time() * 1000)}).one()
    return _event_ids(ms, last_seq, count), version


def _event_ids(ms: int, last_seq: int, count: int) -> list[EventId]:
    """The ids a room's counter just gave `count` events: its row's `ms` and `seq` after the update."""
    return [EventId(ms, seq) for seq in range(last_seq - count + 1, last_seq + 1)]


# PostgreSQL: a group of posts, of one room or several, recorded in one statement that commits itself: one
# round trip, where a transaction takes four or more (BEGIN, the ids, the insert, COMMIT). For each room, its
# ids are taken from its counter and its messages inserted, unless a post's checks read a version of the post
# rules other than the one now (writer.py): such a room is left as it was (no gap in its counter). Rooms are
# locked in id order, the order every writer locks them in. A failure (a client_id recorded meanwhile) writes
# nothing at all.
_RECORD_POSTS = text("""
WITH rules AS (SELECT coalesce((SELECT version FROM post_rules WHERE id = 1), 0) AS version),
posts AS (
    SELECT * FROM unnest(CAST(:room_ids AS integer[]), CAST(:sender_ids AS integer[]),
                         CAST(:client_ids AS varchar[]), CAST(:bodies AS text[]), CAST(:versions AS bigint[]))
                  WITH ORDINALITY AS post(room_id, sender_id, client_id, body, version, n)),
fresh AS (
    SELECT room_id, count(*) AS count FROM posts GROUP BY room_id
    HAVING bool_and(version IS NULL OR version = (SELECT version FROM rules))),
locked AS MATERIALIZED (
    SELECT rooms.id FROM rooms JOIN fresh ON fresh.room_id = rooms.id ORDER BY rooms.id FOR UPDATE OF rooms),
allocated AS (
    UPDATE rooms SET event_ms = greatest(rooms.event_ms, :now_ms), event_seq = rooms.event_seq + fresh.count
    FROM fresh, locked WHERE rooms.id = fresh.room_id AND locked.id = rooms.id
    RETURNING rooms.id, rooms.event_ms, rooms.event_seq, fresh.count),
inserted AS (
    INSERT INTO messages (room_id, sender_id, client_id, body, created_at, event_ms, event_seq)
    SELECT posts.room_id, posts.sender_id, posts.client_id, posts.body, :created_at, allocated.event_ms,
           allocated.event_seq - allocated.count + row_number() OVER (PARTITION BY posts.room_id ORDER BY posts.n)
    FROM posts JOIN allocated ON allocated.id = posts.room_id)
SELECT rules.version, allocated.id, allocated.event_ms, allocated.event_seq
FROM rules LEFT JOIN allocated ON true
""")


def record_posts_at_once(posts: list[tuple], created_at: datetime) -> tuple[dict[int, list[EventId]], int]:
    """PostgreSQL: record and commit posts `(room_id, sender_id, client_id, body, version)` (a room's in the
    order given) in one statement, outside the session's transaction. Returns the ids of each room's posts,
    and the post rules' version the statement read: a room missing from the ids had a post whose version
    differs (none of its posts was written)."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        rows = connection.execute(_RECORD_POSTS, {
            "room_ids": [post[0] for post in posts], "sender_ids": [post[1] for post in posts],
            "client_ids": [post[2] for post in posts], "bodies": [post[3] for post in posts],
            "versions": [post[4] for post in posts], "now_ms": int(time.time() * 1000),
            "created_at": created_at}).all()
    counts = {}
    for post in posts:
        counts[post[0]] = counts.get(post[0], 0) + 1
    ids = {room_id: _event_ids(ms, last_seq, counts[room_id]) for _, room_id, ms, last_seq in rows
           if room_id is not None}
    return ids, rows[0].version


def allocate_event_id(room_id: int) -> EventId:
    """One event's id (see allocate_event_ids)."""
    return allocate_event_ids(room_id, 1)[0]


def last_event_id(room_id: int) -> EventId:
    """The id of the room's last committed event (ZERO before its first), read now."""
    row = db.session.execute(select(Room.event_ms, Room.event_seq).where(Room.id == room_id)).one_or_none()
    return EventId(*row) if row else ZERO


def _in_range(ms_column, seq_column, after: EventId, upto: EventId):
    """after < (ms, seq) <= upto, portable across SQLite and PostgreSQL."""
    return and_(or_(ms_column > after.ms, and_(ms_column == after.ms, seq_column > after.seq)),
                or_(ms_column < upto.ms, and_(ms_column == upto.ms, seq_column <= upto.seq)))


def _room_events(room_id: int, after: EventId, upto: EventId, limit: int, newest: bool):
    """The first (or with `newest`, the last) `limit` of a room's durable events after `after` up to `upto`,
    rebuilt from the record, in order: messages (tombstoned if deleted since), deletions, moderation events,
    reports made and resolved."""
    after, upto = after.clamped(), upto.clamped()
    found = []
    sources = ((Message, Message.event_ms, Message.event_seq, lambda row: (row.event_id, "message", row.to_api())),
               (Message, Message.deleted_event_ms, Message.deleted_event_seq,
                lambda row: (EventId(row.deleted_event_ms, row.deleted_event_seq), "message_deleted",
                             row.deletion_api())),
               (ModerationAction, ModerationAction.event_ms, ModerationAction.event_seq,
                lambda row: (EventId(row.event_ms, row.event_seq), row.event_type, json.loads(row.event_data))),
               (Report, Report.created_event_ms, Report.created_event_seq,
                lambda row: (EventId(row.created_event_ms, row.created_event_seq), "report_created",
                             {"report": row.to_api(as_created=True)})),
               (Report, Report.resolved_event_ms, Report.resolved_event_seq,
                lambda row: (EventId(row.resolved_event_ms, row.resolved_event_seq), "report_resolved",
                             {"report": row.to_api()})))
    for model, ms, seq, event in sources:
        order = (ms.desc(), seq.desc()) if newest else (ms, seq)
        rows = model.query.filter(model.room_id == room_id, _in_range(ms, seq, after, upto)).order_by(*order)
        found += [event(row) for row in rows.limit(limit)]
    found.sort(key=lambda event: event[0])
    return found[-limit:] if newest else found[:limit]


def events_after(room_id: int, after: EventId, upto: EventId, limit: int) -> list[tuple[EventId, str, dict]]:
    """The first `limit` of a room's durable events after `after` up to `upto`, from the record, in order."""
    return _room_events(room_id, after, upto, limit, newest=False)


def events_before(room_id: int, upto: EventId, limit: int) -> list[tuple[EventId, str, dict]]:
    """The last `limit` of a room's durable events up to `upto`, from the record, in order."""
    return _room_events(room_id, ZERO, upto, limit, newest=True)


def events_between(room_id: int, after: EventId, upto: EventId, limit: int) -> list[tuple[EventId, str, dict]] | None:
    """A room's durable events after `after` up to `upto`, from the record, in order; None when there are
    more than `limit` (the client should reload history instead)."""
    found = events_after(room_id, after, upto, limit + 1)
    return None if len(found) > limit else found
