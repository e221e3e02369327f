"""Everything that changes state. A durable event is recorded with its id in one transaction; the
commit acknowledges it; then outbox.publish carries it to Redis (docs/ARCHITECTURE.md, "The write
path"). Nothing else writes a room's events.
"""
import json
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from . import hub, outbox, ratelimit, streams, writer
from .caches import PostCache, RoomRules
from .errors import ApiError
from .extensions import db
from .ids import EventId, iso, utcnow
from .models import (Ban, FeedEvent, Message, ModerationAction, Mute, Report, Room, Session, User, allocate_event_id,
                     bump_post_rules, find_room, find_user, posting_rules, posting_state, post_rules_version)
from .passwords import hash_password
from .schemas import SLUG, USERNAME, check_event


def _inserted(row) -> bool:
    """Insert a row (flushed, not committed). False, with the transaction rolled back, when a row with the same
    unique key is there already, as when another request inserted it after this one read it missing: the caller
    answers as if it had come second (never a 500 for a race)."""
    db.session.add(row)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


# Accounts and rooms

def register_user(username: str, password: str, role: str = "user") -> User:
    password_hash = hash_password(password)
    user = User(username=username, username_key=username.lower(), password_hash=password_hash, role=role)
    if not _inserted(user):
        raise ApiError(409, "username_taken", "that username is taken")
    db.session.commit()
    return user


def set_password(user: User, password: str) -> int:
    """An operator's reset: the new password, and every session of the user ends (a leaked one with it).
    Returns how many sessions ended."""
    user.password_hash = hash_password(password)
    ended = Session.query.filter_by(user_id=user.id).delete()
    bump_post_rules()
    db.session.commit()
    streams.current().announce_end(user_id=user.id, reason="logout")
    return ended


def set_role(user: User, role: str) -> None:
    """Promote or demote. A demoted moderator's streams end, so none keeps reading the moderators' feed
    (and every process forgets the role it cached); the user reconnects as a user."""
    demoted = user.role == "moderator" and role != "moderator"
    user.role = role
    db.session.flush()
    bump_post_rules()  # a moderator may post where a user may not
    db.session.commit()
    if demoted:
        streams.current().announce_end(user_id=user.id, reason="role_changed")


def lift_ban(user: User) -> bool:
    """An operator's unban (no moderator to log; `user_unbanned` says `"by": null`). Whether there was a ban."""
    lifted = Ban.query.filter_by(user_id=user.id).delete()
    announced = _feed_event("user_unbanned", {"username": user.username, "by": None}) if lifted else None
    db.session.commit()
    if announced:
        outbox.publish_feed_event(announced)
    return lifted > 0


def create_room(name: str, slug: str, creator: User) -> Room:
    room = Room(name=name, slug=slug, created_by_id=creator.id)
    if not _inserted(room):
        raise ApiError(409, "room_exists", f"a room with the address '{slug}' exists")
    db.session.commit()
    return room


# Messages

def is_banned(user: User) -> bool:
    return Ban.query.filter_by(user_id=user.id).count() > 0


def _repeat(message_id: int) -> dict:
    """A message recorded before under the same client_id, published again in case its first request died
    before it was (nothing happens if it was: publishing is idempotent)."""
    message = db.session.get(Message, message_id)
    data = message.to_api()
    outbox.publish(message.room_id, message.room.slug, message.event_id, "message", data)
    return data


class NotLetThrough(Exception):
    """Memory does not let this post through by itself: its checks must be read from the database (the
    session included: memory's may be out of date, and only the write's version check would tell)."""


def post_message(user, room, body: str, client_id: str | None, cache: PostCache | None = None,
                 version: int | None = None) -> tuple[dict, bool]:
    """Record and publish a message from `user` (id, username, is_moderator) in `room` (id, slug): the API's
    message and whether it was created; a repeated client_id returns the original. One commit records it.

    Without `cache`, one statement reads what the checks need, and `user` must have been read from the
    database by this request. With it, `user` was read at the post rules' `version`, the room's rules come
    from memory too, and the write checks that version (raises writer.Stale); raises NotLetThrough when
    memory would not let the post through by itself."""
    if cache is None:
        return _post_read(user, room, body, client_id)
    found = cache.rules(room.id, user.id)
    if found is None:
        read_at = post_rules_version()  # first: what is read after is at least as new
        found = RoomRules(*posting_rules(room.id, user.id)), read_at
        cache.put_rules(room.id, user.id, *found)
    answer = post_from_memory(user, room, body, client_id, found, version)
    if answer is None:
        raise NotLetThrough()
    return answer


def post_from_memory(user, room, body: str, client_id: str | None, rules: tuple[RoomRules, int],
                     version: int) -> tuple[dict, bool] | None:
    """post_message for a user whose session memory holds (as of `version`), with the room's `rules` and the
    version they were read at: None when they do not let the post through by themselves (the caller then
    checks from the database). Raises writer.Stale or a 429 for the caller to decide again likewise."""
    room_rules, rules_version = rules
    if not room_rules.let_through(user, utcnow()):
        return None
    return _post_checked(user, room, body, client_id, min(version, rules_version))


def _post_checked(user, room, body: str, client_id: str | None, version: int) -> tuple[dict, bool]:
    """A post that memory lets through (not muted, no lock or slow mode in its way), as of `version`: the
    writer takes its rate-limit allowance with its group's. A repeated client_id is found by the insert (the
    unique constraint, after the version was checked): it is answered as _post_read answers it, and counts
    in no limit. A refusal by the rate limit is raised for the caller to decide again from the database (a
    repeat, or a mute, would be answered before it)."""
    db.session.close()  # any read of the checks ends here (a miss of memory): the writer takes its own
    try:
        return writer.current().record(
            writer.Post(room.id, room.slug, user.id, user.username, body, client_id, version))
    except writer.RateLimited as refused:
        raise ApiError(429, "rate_limited", f"too many messages; wait {refused.retry_after} s",
                       retry_after=refused.retry_after) from None
    except (writer.Stale, IntegrityError) as error:
        ratelimit.give_back(user.id, room.id, len(body.encode()))  # not a new message: a retry counts it
        if isinstance(error, writer.Stale):
            raise
    repeat_id = posting_state(room.id, user.id, client_id)[3]
    return _repeat(repeat_id), False


def _post_read(user, room, body: str, client_id: str | None) -> tuple[dict, bool]:
    """A post whose checks read the database (one statement), then the rate limits and slow mode."""
    locked, slow_mode, muted, repeat_id = posting_state(room.id, user.id, client_id)
    if repeat_id is not None:
        return _repeat(repeat_id), False
    if muted:
        raise ApiError(403, "muted", "you are muted in this room")
    if locked and not user.is_moderator:
        raise ApiError(403, "room_locked", "this room is locked; only moderators may post")
    config, nbytes = current_app.config, len(body.encode())
    retry_after = streams.current().post_allowed(
        user.id, room.id, nbytes, config["CHAT_RATE_LIMIT_PARSED"], config["CHAT_USER_RATE_LIMIT_PARSED"],
        config["CHAT_USER_BYTES_LIMIT_PARSED"])
    if retry_after:
        raise ApiError(429, "rate_limited", f"too many messages; wait {retry_after} s", retry_after=retry_after)
    if slow_mode and not user.is_moderator:
        # The post is named by its client_id, so a retry after a failure (503) is the same post, not a next one.
        post = f"client:{client_id}" if client_id else f"once:{uuid.uuid4()}"
        retry_after = streams.current().slow_mode_wait(room.slug, user.id, slow_mode, post)
        if retry_after:
            streams.current().post_give_back(user.id, room.id, nbytes)  # a refused post is not a message
            raise ApiError(429, "slow_mode", f"this room is in slow mode; wait {retry_after} s",
                           retry_after=retry_after)

    db.session.close()  # the checks' read ends here: the writer records the message on its own connection
    try:
        return writer.current().record(writer.Post(room.id, room.slug, user.id, user.username, body, client_id))
    except IntegrityError:  # the same client_id raced in from another request, which recorded it
        repeat_id = posting_state(room.id, user.id, client_id)[3]
        return _repeat(repeat_id), False


def delete_message(user: User, message: Message, *, log: bool = True, reason: str | None = None) -> Message:
    """Tombstone a message (author or moderator) and broadcast message_deleted, once however many ask.
    `log=False`: the caller logs the deletion in its own moderation entry (a purge)."""
    if not (user.is_moderator or message.sender_id == user.id):
        raise ApiError(403, "forbidden", "only its author or a moderator may delete a message")
    if message.deleted:
        return message
    event_id = allocate_event_id(message.room_id)  # locks the room: concurrent deletions queue here
    if db.session.execute(select(Message.deleted_at).where(Message.id == message.id)).scalar() is not None:
        db.session.rollback()  # another request deleted it meanwhile, and broadcast that
        db.session.refresh(message)
        return message
    _tombstone(user, message, event_id, log, reason)
    db.session.commit()
    outbox.publish(message.room_id, message.room.slug, event_id, "message_deleted",
                   check_event("message_deleted", message.deletion_api()))
    return message


def _tombstone(user: User, message: Message, event_id: EventId, log: bool, reason: str | None = None) -> None:
    """Record a deletion with the id of its message_deleted (the caller allocated it and commits)."""
    message.deleted_at, message.deleted_by = utcnow(), user
    message.deleted_event_ms, message.deleted_event_seq = event_id
    if log and message.sender_id != user.id:
        db.session.add(ModerationAction(moderator_id=user.id, action="delete_message", room_id=message.room_id,
                                        target=str(message.event_id), reason=reason))


# Moderation

def _log(moderator: User, action: str, room: Room | None, target: str, reason=None) -> ModerationAction:
    entry = ModerationAction(moderator_id=moderator.id, action=action, room_id=room.id if room else None,
                             target=target, reason=reason)
    db.session.add(entry)
    return entry


def _commit_with_event(entry: ModerationAction, room: Room, event_type: str, data: dict) -> None:
    """Commit a moderation action with the event it causes (its id and data on the log entry, so the
    record can rebuild it), then publish that event."""
    check_event(event_type, data)
    # The action's own rows first, then the room's counter: every transaction takes its locks in that
    # order (the mute sweep deletes a mute, then takes the counter), so none waits on another in a cycle.
    db.session.flush()
    event_id = allocate_event_id(room.id)
    entry.event_type, entry.event_data = event_type, json.dumps(data)
    entry.event_ms, entry.event_seq = event_id
    bump_post_rules()  # every such action (mute, unmute, lock, slow mode) is a room's post rules
    db.session.commit()
    outbox.publish(room.id, room.slug, event_id, event_type, data)


def _target_user(username: str) -> User:
    user = find_user(username) if USERNAME.match(username) else None  # no query for an impossible name (NUL)
    if user is None:
        raise ApiError(404, "not_found", f"no user named '{username}'")
    return user


def _sanctionable(moderator: User, username: str) -> User:
    """The user a mute or ban names: 404 if unknown, then 403 for a moderator or oneself (API.md)."""
    user = _target_user(username)
    if user.id == moderator.id or user.is_moderator:
        raise ApiError(403, "forbidden", "moderators cannot mute or ban a moderator or themselves")
    return user


def mute(moderator: User, room: Room, username: str, duration: timedelta, reason: str | None) -> dict:
    user = _sanctionable(moderator, username)
    until = utcnow() + duration
    existing = Mute.query.filter_by(room_id=room.id, user_id=user.id).one_or_none()
    if existing is None and not _inserted(
            Mute(room_id=room.id, user_id=user.id, until=until, by_id=moderator.id, reason=reason)):
        existing = Mute.query.filter_by(room_id=room.id, user_id=user.id).one()  # so this one is a re-mute
    if existing is not None:
        existing.until, existing.by_id, existing.reason = until, moderator.id, reason
    entry = _log(moderator, "mute", room, user.username, reason)
    data = {"room": room.slug, "username": user.username, "until": iso(until), "by": moderator.username}
    _commit_with_event(entry, room, "user_muted", data)
    return {**data, "reason": reason}


def unmute(moderator: User, room: Room, username: str) -> None:
    user = _target_user(username)
    Mute.query.filter_by(room_id=room.id, user_id=user.id).delete()
    entry = _log(moderator, "unmute", room, user.username)
    data = {"room": room.slug, "username": user.username, "until": None, "by": moderator.username}
    _commit_with_event(entry, room, "user_unmuted", data)


def expire_mutes(batch: int = 100) -> int:
    """Broadcast `user_unmuted` (by null) for each mute that ran out, exactly once across all processes.

    Each expired mute is claimed by a conditional delete, in the transaction that logs its event: only
    one process deletes the row, and a mute moved into the future by a re-mute, or deleted by an unmute,
    is not claimed. The log entry holds the event with its id, so the relay publishes it if this run
    cannot (Redis down, a crash). Returns how many mutes it ended."""
    now = utcnow()
    # Plain values: nothing below reloads a row between a claim's statements.
    expired = [(mute.id, mute.room_id, mute.room.slug, mute.user.username)
               for mute in Mute.query.filter(Mute.until <= now).order_by(Mute.until).limit(batch)]
    db.session.commit()
    ended = 0
    for mute_id, room_id, slug, username in expired:
        claimed = db.session.execute(
            delete(Mute).where(Mute.id == mute_id, Mute.until <= now).execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            db.session.rollback()
            continue
        data = check_event("user_unmuted", {"room": slug, "username": username, "until": None, "by": None})
        event_id = allocate_event_id(room_id)
        db.session.add(ModerationAction(moderator_id=None, action="mute_expired", room_id=room_id, target=username,
                                        event_type="user_unmuted", event_data=json.dumps(data),
                                        event_ms=event_id.ms, event_seq=event_id.seq))
        db.session.commit()
        outbox.publish(room_id, slug, event_id, "user_unmuted", data)
        ended += 1
    return ended


def set_locked(moderator: User, room: Room, locked: bool, online_count: int, reason: str | None = None) -> Room:
    room.locked = locked
    entry = _log(moderator, "lock" if locked else "unlock", room, room.slug, reason)
    _commit_with_event(entry, room, "room_updated", {"room": room.to_api(online_count)})
    return room


def purge(moderator: User, username: str, minutes: int, room_slug: str | None, reason: str | None) -> list[str]:
    """Delete a user's messages of the last `minutes`, in one room or all, oldest first, each exactly as a
    single deletion is (a tombstone and its message_deleted); one log entry. Returns their event ids."""
    user = _target_user(username)
    room = find_room(room_slug) if room_slug is not None and SLUG.match(room_slug) else None
    if room_slug is not None and room is None:
        raise ApiError(404, "not_found", f"no room '{room_slug}'")
    query = Message.query.filter(
        Message.sender_id == user.id, Message.created_at >= utcnow() - timedelta(minutes=minutes),
        Message.deleted_at.is_(None))
    if room is not None:
        query = query.filter(Message.room_id == room.id)
    doomed = query.order_by(Message.created_at, Message.id).all()
    _log(moderator, "purge", room, user.username, reason)
    db.session.commit()
    return [str(delete_message(moderator, message, log=False).event_id) for message in doomed]


def set_slow_mode(moderator: User, room: Room, seconds: int, online_count: int, reason: str | None) -> dict:
    """0 turns it off. Returns the room object as published."""
    room.slow_mode_seconds = seconds
    entry = _log(moderator, "slow_mode", room, room.slug, reason)
    data = {"room": room.to_api(online_count)}
    _commit_with_event(entry, room, "room_updated", data)
    return data["room"]


def _feed_event(event_type: str, data: dict) -> FeedEvent:
    """Record an event of no room in the current transaction (the relay publishes it if the caller cannot)."""
    entry = FeedEvent(type=event_type, data=json.dumps(check_event(event_type, data), ensure_ascii=False))
    db.session.add(entry)
    return entry


def ban(moderator: User, username: str, reason: str | None) -> Ban:
    """Ban a user and publish `user_banned` (the ban, on the moderators' feed only). A user banned already
    keeps the ban in force, which is answered, and nothing is published."""
    user = _sanctionable(moderator, username)
    record = Ban.query.filter_by(user_id=user.id).one_or_none()
    created = record is None
    if created:
        record = Ban(user_id=user.id, by_id=moderator.id, reason=reason)  # flushed: its created_at, for its event
        if not _inserted(record):  # so this ban found the user banned, and the other request publishes it
            record, created = Ban.query.filter_by(user_id=user.id).one(), False
    _log(moderator, "ban", None, user.username, reason)
    announced = _feed_event("user_banned", record.to_api()) if created else None
    db.session.flush()
    bump_post_rules()
    db.session.commit()
    streams.current().announce_end(user_id=user.id, reason="banned")
    hub.current().sessions.forget(user_id=user.id)  # this process at once; the others as they read it
    if announced:
        outbox.publish_feed_event(announced)
    return record


def unban(moderator: User, username: str) -> None:
    """Lift a ban and publish `user_unbanned` (moderators' feed only); nothing is published for a user
    who was not banned."""
    user = _target_user(username)
    lifted = Ban.query.filter_by(user_id=user.id).delete()
    _log(moderator, "unban", None, user.username)
    announced = _feed_event("user_unbanned", {"username": user.username, "by": moderator.username}) if lifted else None
    db.session.commit()
    if announced:
        outbox.publish_feed_event(announced)


def logout(session) -> None:
    session_id = session.id
    db.session.delete(session)
    db.session.flush()
    bump_post_rules()
    db.session.commit()
    streams.current().announce_end(session_id=session_id, reason="logout")
    hub.current().sessions.forget(session_id=session_id)  # this process at once; the others as they read it


def delete_expired_sessions() -> int:
    """Delete the sessions past CHAT_SESSION_IDLE_MINUTES or CHAT_SESSION_MAX_DAYS that nobody presented
    again (one that is presented is refused and deleted then, in auth.py); gunicorn.conf.py runs this
    hourly. Nothing to announce: an expired session's streams and polls have ended by themselves.
    Returns how many it deleted."""
    config, now = current_app.config, utcnow()
    deleted = Session.query.filter(or_(
        Session.last_seen_at <= now - timedelta(minutes=config["CHAT_SESSION_IDLE_MINUTES"]),
        Session.created_at <= now - timedelta(days=config["CHAT_SESSION_MAX_DAYS"]))).delete(synchronize_session=False)
    db.session.commit()
    return deleted


# Reports

def report_message(reporter: User, message: Message, reason: str) -> tuple[Report, bool]:
    """Record a report and publish its `report_created` (an event of the message's room, for moderators
    only). The same user reporting the same message again gets the first report, and nothing is published.
    Returns the report and whether it was created."""
    existing = Report.query.filter_by(message_id=message.id, reporter_id=reporter.id).one_or_none()
    if existing is not None:
        return existing, False  # a repeat is not a report: it counts in no limit
    # Per account (CHAT_REPORT_LIMIT): each report lands on every moderator's dashboard.
    scope = f"reports:{reporter.username_key}"  # not the id: ids come back when a database is emptied
    limit, seconds = current_app.config["CHAT_REPORT_LIMIT_PARSED"]
    retry_after = streams.current().rate_limited(scope, limit, seconds)
    if retry_after:
        raise ApiError(429, "rate_limited", f"too many reports; wait {retry_after} s", retry_after=retry_after)
    report = Report(room_id=message.room_id, message_id=message.id, reporter_id=reporter.id, reason=reason,
                    status="open", created_at=utcnow())
    # The report's row first, then the room's counter (the order every writer takes).
    if not _inserted(report):  # the same report raced in from another request, which publishes it
        streams.current().rate_give_back(scope)  # and counted it
        return Report.query.filter_by(message_id=message.id, reporter_id=reporter.id).one(), False
    event_id = allocate_event_id(message.room_id)
    report.created_event_ms, report.created_event_seq = event_id
    data = check_event("report_created", {"report": report.to_api(as_created=True)})
    db.session.commit()
    outbox.publish(message.room_id, message.room.slug, event_id, "report_created", data)
    return report, True


def resolve_report(moderator: User, report: Report, action: str) -> Report:
    """Resolve an open report: `dismiss`, or `delete` its message too. One transaction records the resolution
    (`report_resolved`, logged as `resolve_report`) and, for `delete`, the deletion (a `message_deleted` like any
    other, logged as `delete_message`), so neither is recorded without the other; then both are published, in
    id order. A report resolved already is answered as it is."""
    if report.status != "open":
        return report
    # Claim the report (its row first, then the room's counter: the order every writer takes): of two
    # moderators resolving it at once, one claims it; the other gets it as resolved.
    claimed = db.session.execute(
        update(Report).where(Report.id == report.id, Report.status == "open").values(
            status="resolved", resolution=action, resolved_by_id=moderator.id, resolved_at=utcnow())
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        db.session.rollback()
        db.session.refresh(report)
        return report
    message, published = report.message, []
    if action == "delete" and not message.deleted:
        deleted_id = allocate_event_id(report.room_id)  # locks the room: concurrent deletions queue here
        if db.session.execute(select(Message.deleted_at).where(Message.id == message.id)).scalar() is not None:
            db.session.rollback()  # another request deleted it meanwhile (and broadcast that): resolve again
            db.session.refresh(report)
            return resolve_report(moderator, report, action)
        _tombstone(moderator, message, deleted_id, log=True)
        published.append((deleted_id, "message_deleted", message.deletion_api()))
    # Logged after the deletion it caused, so the log (newest first) reads resolution, then deletion.
    db.session.add(ModerationAction(moderator_id=moderator.id, action="resolve_report", room_id=report.room_id,
                                    target=str(report.id), reason=action))
    db.session.flush()
    event_id = allocate_event_id(report.room_id)
    db.session.execute(update(Report).where(Report.id == report.id).values(
        resolved_event_ms=event_id.ms, resolved_event_seq=event_id.seq).execution_options(synchronize_session=False))
    db.session.flush()
    db.session.refresh(report)
    published.append((event_id, "report_resolved", {"report": report.to_api()}))
    for _, event_type, data in published:
        check_event(event_type, data)
    db.session.commit()
    for published_id, event_type, data in published:
        outbox.publish(report.room_id, report.room.slug, published_id, event_type, data)
    return report
