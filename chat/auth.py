"""Who is asking: cookie sessions checked on the server, CSRF, and the role checks every route uses."""
import functools
import hashlib
import hmac
import re
import secrets
import time
from datetime import datetime, timedelta, timezone

from flask import current_app, g, request
from flask.sessions import SessionInterface
from sqlalchemy import delete, update
from sqlalchemy.orm.attributes import set_committed_value

from . import hub, streams
from .caches import CachedSession, CachedUser, PostCache
from .errors import ApiError
from .extensions import db
from .ids import utcnow
from .models import Ban, Session, User, bump_post_rules, post_rules_version
from .passwords import hash_password

COOKIE = "chat_session"
# Over HTTPS: a browser takes a `__Host-` cookie only with Secure, Path=/ and no Domain, so no other
# host (a sibling subdomain) and no plain-HTTP page can plant or overwrite it (session fixation).
SECURE_COOKIE = "__Host-" + COOKIE
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Activity is written at most this often per session (and at most every tenth of the idle timeout).
ACTIVITY_WRITE_SECONDS = 300


class ServerSessionsOnly(SessionInterface):
    """Sessions live in the database (below), so Flask's signed-cookie session is never used: skip
    building its signer on every request (a measurable share of a poll's CPU)."""

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response):
        pass


def init_app(app) -> None:
    app.session_interface = ServerSessionsOnly()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User) -> tuple[str, Session]:
    """Create a server-side session; the caller sets the returned token as the cookie."""
    token = secrets.token_urlsafe(32)
    session = Session(token_hash=token_hash(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32))
    db.session.add(session)
    db.session.commit()
    return token, session


def end_all_sessions(user_id: int) -> None:
    """Sign a user out everywhere: every session ends, this request's included, and every process ends
    their streams and waiting polls (which answer 401) as it reads the control stream."""
    db.session.execute(delete(Session).where(Session.user_id == user_id).execution_options(synchronize_session=False))
    bump_post_rules()
    db.session.commit()
    streams.current().announce_end(user_id=user_id, reason="logout")
    hub.current().sessions.forget(user_id=user_id)  # this process at once; the others as they read it


def change_password(session: Session, new_password: str) -> int:
    """Set the user's new password and end every *other* session of theirs, with their streams and
    polls; `session` stays signed in, with its CSRF token. Returns how many sessions ended.

    The other sessions are ended one by one on the control stream (not by user), so that this
    session's own streams stay open."""
    user = session.user
    user.password_hash = hash_password(new_password)
    db.session.commit()  # from here a sign-in needs the new password
    others = [session_id for (session_id,) in db.session.query(Session.id).filter(
        Session.user_id == user.id, Session.id != session.id)]
    if others:
        db.session.execute(delete(Session).where(Session.id.in_(others)).execution_options(
            synchronize_session=False))
        bump_post_rules()
    db.session.commit()
    sessions = hub.current().sessions
    for session_id in others:
        streams.current().announce_end(session_id=session_id, reason="logout")
        sessions.forget(session_id=session_id)
    return len(others)


def cookie_name(https: bool) -> str:
    """The session cookie's name for a request over HTTPS (as the trusted proxy says) or plain HTTP.

    Only the name that matches the request's scheme is read: over HTTPS a plain `chat_session` could
    have been planted by anyone who can answer the site's plain-HTTP requests. A deployment that moves
    to HTTPS therefore asks everyone to sign in once more (and expires the old cookie as it goes)."""
    return SECURE_COOKIE if https else COOKIE


_COOKIE_IN_HEADER = {https: re.compile(rf"(?:^|;)[ \t]*{re.escape(cookie_name(https))}=([^;]*)") for https in (False, True)}


def session_token_from(cookie_header: str, https: bool) -> str | None:
    """The session cookie's value from a raw `Cookie` header (the first, as Flask's request.cookies has it):
    the poll fast lane's way, without parsing every other cookie a corporate intranet sets on the host."""
    found = _COOKIE_IN_HEADER[https].search(cookie_header)
    return found[1].strip() if found else None


def set_cookie(response, token: str) -> None:
    secure = request.is_secure
    response.set_cookie(cookie_name(secure), token, httponly=True, samesite="Lax", secure=secure, path="/")
    _expire_plain_cookie(response)


def clear_cookie(response) -> None:
    """Tell the browser to drop the session cookie (the ended session's token is refused anyway)."""
    secure = request.is_secure
    response.delete_cookie(cookie_name(secure), path="/", secure=secure, httponly=True, samesite="Lax")
    _expire_plain_cookie(response)


def _expire_plain_cookie(response) -> None:
    """Over HTTPS, drop a plain-HTTP cookie the browser still holds (from before the site moved to HTTPS)."""
    if request.is_secure and COOKIE in request.cookies:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax")


def current_session(cached: bool = False) -> Session | CachedSession | None:
    """The request's session, if its cookie names one that still exists and has not expired (kept for
    the request). A session read from the database is checked against CHAT_SESSION_IDLE_MINUTES and
    CHAT_SESSION_MAX_DAYS: an expired one is deleted and the request is anonymous; a live one has its
    activity noted (a write at most every few minutes).

    `cached`: the live endpoints may take it from this process's session cache, which the control
    stream keeps honest (caches.py); they get a CachedSession, with no database row behind it, which
    the cache never serves past the session's end."""
    if "chat_session" not in g:
        token = request.cookies.get(cookie_name(request.is_secure))
        g.chat_session = None
        g.chat_banned = False
        if token:
            hashed = token_hash(token)
            cache = hub.current().cached_sessions() if cached else None
            g.chat_session = cache.get(hashed) if cache else None
            if g.chat_session is None:
                loaded_at = time.monotonic()
                row = db.session.query(Session, Ban.id).outerjoin(Ban, Ban.user_id == Session.user_id).filter(
                    Session.token_hash == hashed).one_or_none()
                if row and _still_valid(row[0]):
                    g.chat_session, g.chat_banned = row[0], row[1] is not None
                    if cache and not g.chat_banned:
                        cache.put(hashed, _snapshot(row[0]), loaded_at)
            if g.chat_session is not None:
                request.environ["chat.user_id"] = g.chat_session.user_id  # for the request's log line
    return g.chat_session


def _lifetimes() -> tuple[timedelta, timedelta]:
    config = current_app.config
    return timedelta(minutes=config["CHAT_SESSION_IDLE_MINUTES"]), timedelta(days=config["CHAT_SESSION_MAX_DAYS"])


def _still_valid(session: Session) -> bool:
    """False (and the row deleted) when the session has expired; else note its activity, writing
    `last_seen_at` only when it is older than ACTIVITY_WRITE_SECONDS (or a tenth of the idle timeout):
    a busy session costs one write every few minutes, not one per request."""
    idle, lifetime = _lifetimes()
    now = utcnow()
    if session.expires_at(idle, lifetime) <= now:
        db.session.execute(delete(Session).where(Session.id == session.id).execution_options(
            synchronize_session=False))
        db.session.commit()
        db.session.expunge(session)
        return False
    if now - session.last_seen_at >= min(timedelta(seconds=ACTIVITY_WRITE_SECONDS), idle / 10):
        # A plain UPDATE: a logout racing in deletes the row, and then this updates nothing (no error).
        db.session.execute(update(Session).where(Session.id == session.id).values(last_seen_at=now)
                           .execution_options(synchronize_session=False))
        db.session.commit()
        set_committed_value(session, "last_seen_at", now)
    return True


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=timezone.utc).timestamp()


def expires_at(session: Session | CachedSession) -> float:
    """When the session ends (epoch seconds), as of its read: activity since only moves it later."""
    if isinstance(session, CachedSession):
        return session.expires_at
    return _epoch(session.expires_at(*_lifetimes()))


def _snapshot(session: Session) -> CachedSession:
    user = session.user
    return CachedSession(session.id, session.user_id, session.csrf_token, CachedUser(user.id, user.username, user.role),
                         expires_at(session))


def current_user() -> User | None:
    session = current_session()
    return session.user if session else None


def check_request(*, moderator: bool = False, cached: bool = False) -> Session | CachedSession:
    """Apply API.md's checks in order: 401, 403 csrf_failed, 403 banned, 403 forbidden.
    `cached`: see current_session (GET live endpoints only: they write nothing)."""
    session = current_session(cached)
    if session is None:
        raise ApiError(401, "not_authenticated", "sign in first")
    if request.method in _UNSAFE:
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise ApiError(403, "csrf_failed", "missing or wrong X-CSRF-Token header")
    if g.chat_banned:
        raise ApiError(403, "banned", "this account is banned")
    if moderator and not session.user.is_moderator:
        raise ApiError(403, "forbidden", "moderators only")
    return session


def post_cache() -> PostCache:
    """This app's memory of what posts' checks read, in this process."""
    extensions = current_app.extensions
    cache = extensions.get("chat_post_cache")
    if cache is None:
        cache = extensions.setdefault("chat_post_cache", PostCache())
    return cache


def check_post(cache: PostCache) -> tuple[Session | CachedSession, int | None]:
    """check_request for a post, with the session from `cache` when it holds it: the session, and the post
    rules' version it was read at, which the writer checks again as it records the post (caches.PostCache).
    A session read here from the database (no entry, or one past its TTL: its activity is noted) is kept."""
    token = request.cookies.get(cookie_name(request.is_secure))
    hashed = token_hash(token) if token else None
    found = cache.session(hashed) if hashed else None
    if found is not None:
        g.chat_session, g.chat_banned = found[0], False
        request.environ["chat.user_id"] = found[0].user_id
        return check_request(), found[1]
    loaded_at = time.monotonic()
    version = post_rules_version() if hashed else None  # first: what is read after is at least as new
    session = current_session()
    if session is not None and not g.chat_banned:
        cache.put_session(hashed, _snapshot(session), version, loaded_at)
    return check_request(), version


def login_required(view=None, *, moderator=False):
    """Decorate an API view: it runs only for a valid, unbanned session (and a moderator, if asked)."""
    if view is None:
        return functools.partial(login_required, moderator=moderator)

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        check_request(moderator=moderator)
        return view(*args, **kwargs)

    return wrapped
