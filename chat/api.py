"""The JSON API for users, sessions, rooms and messages (API.md)."""
from flask import Blueprint, current_app, g, jsonify, request

from . import actions, auth, history, metrics, streams, writer
from .auth import check_request, current_session, login_required, set_cookie, start_session
from .errors import ApiError
from .views import (json_body, known_room, message_or_404, online_in, optional_reason, parse_event_id, query_limit,
                    room_or_404)
from .models import Room, User, find_user
from .passwords import check_password
from .schemas import CredentialsSchema, MessageCreateSchema, PasswordChangeSchema, RoomCreateSchema

bp = Blueprint("api", __name__, url_prefix="/api")


def _refuse_if_limited(retry_after: int) -> None:
    if retry_after:
        raise ApiError(429, "rate_limited", f"too many attempts; wait {retry_after} s", retry_after=retry_after)


def _limit_registrations() -> None:
    """Cap registration requests per client address: `remote_addr` is what the trusted proxy hops
    (CHAT_TRUSTED_PROXIES, applied by ProxyFix in create_app) say, never what the client wrote."""
    limit, seconds = current_app.config["CHAT_REGISTER_LIMIT_PARSED"]
    _refuse_if_limited(streams.current().rate_limited(f"register:{request.remote_addr}", limit, seconds))


def _user_with_password(username: str, password: str) -> User | None:
    """The user whose password this is, else None; guesses are limited per account (429), from any address
    (offices share one), and unknown names alike, so the answer does not tell which exist. A signed-in
    user's guesses at their current password (`POST /api/auth/password`) count in the same limit.

    Each attempt counts as a failure *before* the password is hashed: a blocked account costs no
    hashing, and concurrent guesses cannot overshoot the limit. A right password takes its count back,
    so successful sign-ins never count. The window is fixed (it starts when the count leaves zero, and
    attempts while blocked do not extend it), so a guesser can lock an account for one window at a time.
    """
    scope = f"login-failures:{username.lower()}"  # usernames are unique ignoring case
    limit, seconds = current_app.config["CHAT_LOGIN_FAILURE_LIMIT_PARSED"]
    limits = streams.current()
    _refuse_if_limited(limits.rate_limited(scope, limit, seconds))
    failed = False
    try:
        user = find_user(username)
        failed = not check_password(user, password)
    finally:
        if not failed:  # a right password, or the database failing: neither is a guess
            limits.rate_give_back(scope)
    return None if failed else user


def _signed_in(user, status: int):
    token, session = start_session(user)
    response = jsonify({"user": user.to_api(), "csrf_token": session.csrf_token})
    response.status_code = status
    set_cookie(response, token)
    return response


def _signed_out():
    """The answer of a sign-out (this session or every one): 204, and the browser drops the session cookie."""
    response = current_app.response_class(status=204)
    auth.clear_cookie(response)
    return response


# Users and sessions

@bp.post("/auth/register")
def register():
    credentials = json_body(CredentialsSchema())
    _limit_registrations()
    user = actions.register_user(credentials["username"], credentials["password"])
    return _signed_in(user, 201)


@bp.post("/auth/login")
def login():
    try:
        credentials = json_body(CredentialsSchema())
    except ApiError as error:
        if error.code != "validation_error":
            raise
        # A name or password that could never register cannot match: same answer as a wrong one.
        raise ApiError(401, "invalid_credentials", "wrong username or password") from None
    user = _user_with_password(credentials["username"], credentials["password"])
    if user is None:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    if actions.is_banned(user):
        raise ApiError(403, "banned", "this account is banned")
    return _signed_in(user, 200)


@bp.post("/auth/logout")
@login_required
def logout():
    actions.logout(current_session())
    return _signed_out()


@bp.post("/auth/logout_all")
@login_required
def logout_all():
    """Every session of the user ends, this one included, with every stream and poll (within 2 s)."""
    auth.end_all_sessions(current_session().user_id)
    return _signed_out()


@bp.post("/auth/password")
@login_required
def change_password():
    """The current password and a new one: the user's other sessions end; this one stays (204).

    A wrong current password is `403 invalid_credentials`, not `401`: the session is valid (a 401 tells
    a client it is signed out), it just may not do this. The guesses count in the account's
    login-failure limit, checked first (`429`), so a stolen session cannot guess faster than a login."""
    fields = json_body(PasswordChangeSchema())
    session = current_session()
    if _user_with_password(session.user.username, fields["current_password"]) is None:
        raise ApiError(403, "invalid_credentials", "the current password is wrong")
    auth.change_password(session, fields["new_password"])
    return current_app.response_class(status=204)


@bp.get("/auth/me")
@login_required
def me():
    session = current_session()
    return {"user": session.user.to_api(), "csrf_token": session.csrf_token}


# Rooms

@bp.get("/rooms")
@login_required
def list_rooms():
    rooms = sorted(Room.query.all(), key=lambda room: room.name.lower())
    online = online_in([room.slug for room in rooms])
    return {"rooms": [room.to_api(len(online[room.slug])) for room in rooms]}


@bp.post("/rooms")
@login_required
def create_room():
    fields = json_body(RoomCreateSchema())
    user = current_session().user
    scope = f"rooms:{user.username_key}"
    if not user.is_moderator:  # each room costs Redis memory for good: a user may create few (API.md)
        limit, seconds = current_app.config["CHAT_ROOM_CREATE_LIMIT_PARSED"]
        retry_after = streams.current().rate_limited(scope, limit, seconds)
        if retry_after:
            raise ApiError(429, "rate_limited", f"too many rooms created; wait {retry_after} s",
                           retry_after=retry_after)
    try:
        room = actions.create_room(fields["name"], fields["slug"], user)
    except ApiError:
        if not user.is_moderator:
            streams.current().rate_give_back(scope)  # a refused creation (409) created nothing
        raise
    return {"room": room.to_api()}, 201


@bp.get("/rooms/<slug>")
@login_required
def show_room(slug):
    room = room_or_404(slug)
    online = online_in([slug])[slug]
    return {"room": room.to_api(len(online)), "online": online}


# Messages

@bp.get("/rooms/<slug>/messages")
@login_required
def list_messages(slug):
    room = room_or_404(slug)
    before = parse_event_id(request.args.get("before"))
    after = parse_event_id(request.args.get("after"))
    limit = query_limit()
    messages, has_more, cursor = history.read_history(room, before, limit, after)
    return {"messages": messages, "has_more": has_more, "cursor": str(cursor)}


def message_schema() -> MessageCreateSchema:
    """Built once per app: a schema's construction costs more than most of a post's checks."""
    schema = current_app.extensions.get("chat_message_schema")
    if schema is None:
        schema = current_app.extensions["chat_message_schema"] = MessageCreateSchema(
            current_app.config["CHAT_MAX_MESSAGE_CHARS"])
    return schema


@bp.post("/rooms/<slug>/messages")
def post_message(slug):
    # The hot path: the session and the room's rules from this process's memory, checked by the write itself
    # (caches.PostCache). Memory only lets posts through: any other answer is decided again from the
    # database. If the rules changed since memory read them, nothing was recorded: once more with memory
    # brought up to date, then (should they change yet again) without it.
    cache = auth.post_cache()
    try:
        return _post_message(slug, cache)
    except writer.Stale as stale:
        cache.seen(stale.version)
        g.pop("chat_session", None)
        try:
            return _post_message(slug, cache)
        except (writer.Stale, ApiError, actions.NotLetThrough):
            pass
    except (ApiError, actions.NotLetThrough):
        pass
    g.pop("chat_session", None)
    return _post_message(slug, None)


def _post_message(slug, cache):
    session, version = auth.check_post(cache) if cache is not None else (check_request(), None)
    room = known_room(slug)
    fields = json_body(message_schema())
    message, created = actions.post_message(session.user, room, fields["body"], fields["client_id"], cache, version)
    if created:
        metrics.MESSAGES_ACCEPTED.inc()
    return {"message": message}, 201 if created else 200


@bp.delete("/rooms/<slug>/messages/<message_id>")
@login_required
def delete_message(slug, message_id):
    message = message_or_404(room_or_404(slug), message_id)
    reason = optional_reason()
    return {"message": actions.delete_message(current_session().user, message, reason=reason).to_api()}
