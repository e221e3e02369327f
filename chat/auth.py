"""Who is asking: cookie sessions checked on the server, CSRF, and the role checks every route uses."""
import functools
import hashlib
import hmac
import secrets

from flask import current_app, g, request
from werkzeug.security import check_password_hash, generate_password_hash

from .errors import ApiError
from .extensions import db
from .models import Ban, Session, User

COOKIE = "chat_session"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _offload(function, *args):
    """Run CPU-heavy password hashing off the gevent hub, so a login storm cannot starve the streams.

    hashlib's scrypt releases the GIL, so the hub's threadpool really runs it beside the greenlets.
    """
    try:
        from gevent import monkey  # noqa: PLC0415

        if monkey.is_module_patched("threading"):
            import gevent  # noqa: PLC0415

            return gevent.get_hub().threadpool.apply(function, args)
    except ImportError:
        pass
    return function(*args)


def hash_password(password: str) -> str:
    return _offload(generate_password_hash, password, current_app.config["CHAT_PASSWORD_METHOD"])


# A real hash to check against for unknown users, so both failures take the same time.
_DUMMY_HASH = generate_password_hash("not a real password", "pbkdf2:sha256:1000")


def check_password(user: User | None, password: str) -> bool:
    return _offload(check_password_hash, user.password_hash if user else _DUMMY_HASH, password) and user is not None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User) -> tuple[str, Session]:
    """Create a server-side session; the caller sets the returned token as the cookie."""
    token = secrets.token_urlsafe(32)
    session = Session(token_hash=_token_hash(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32))
    db.session.add(session)
    db.session.commit()
    return token, session


def set_cookie(response, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure, path="/")


def current_session() -> Session | None:
    """The request's session, if its cookie names one that still exists (cached per request)."""
    if "chat_session" not in g:
        token = request.cookies.get(COOKIE)
        g.chat_session = None
        g.chat_banned = False
        if token:
            row = db.session.query(Session, Ban.id).outerjoin(Ban, Ban.user_id == Session.user_id).filter(
                Session.token_hash == _token_hash(token)).one_or_none()
            if row:
                g.chat_session, g.chat_banned = row[0], row[1] is not None
    return g.chat_session


def current_user() -> User | None:
    session = current_session()
    return session.user if session else None


def check_request(*, moderator: bool = False) -> Session:
    """Apply API.md's checks in order: 401, 403 csrf_failed, 403 banned, 403 forbidden."""
    session = current_session()
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


def login_required(view=None, *, moderator=False):
    """Decorate an API view: it runs only for a valid, unbanned session (and a moderator, if asked)."""
    if view is None:
        return functools.partial(login_required, moderator=moderator)

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        check_request(moderator=moderator)
        return view(*args, **kwargs)

    return wrapped
