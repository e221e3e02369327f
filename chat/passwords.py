"""Password hashes: made and checked off the gevent hub, and as slow for unknown names as for real ones.

Below both the request layer (auth.py, sign-in) and the write path (actions.py, accounts), which
each need it.
"""
import secrets

from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash


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


# Real hashes to check against for unknown users, made with the method real ones use, so that an
# unknown name and a wrong password take the same time (a cheaper dummy tells which names exist).
_DUMMY_HASHES = {}


def _dummy_hash() -> str:
    method = current_app.config["CHAT_PASSWORD_METHOD"]
    if method not in _DUMMY_HASHES:
        _DUMMY_HASHES[method] = generate_password_hash(secrets.token_hex(16), method)
    return _DUMMY_HASHES[method]


def check_password(user, password: str) -> bool:
    """Whether `user` (None: no such user, checked against a dummy hash all the same) has this password."""
    return _offload(check_password_hash, user.password_hash if user else _dummy_hash(), password) and user is not None
