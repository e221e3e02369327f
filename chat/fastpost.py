"""The posting fast lane: a WSGI middleware that records a post before Flask's request handling when this
process's memory lets it through by itself (caches.PostCache), as fastpoll.py answers polls. Posts are the
write path's hot request, and Flask's routing, contexts and hooks cost about a sixth of a post's CPU.

It takes only a post that the view would answer the same way: a session and room rules memory holds, the
right CSRF token, a JSON body the schema takes, a room this process knows. Anything else, and any answer
but a recorded message (a refusal, rules that changed meanwhile), goes on to the view untouched, with
the body as it came: the view decides it from the database (api.post_message).
"""
import hmac
import io
import json
import logging
import re
import time

from flask import current_app
from marshmallow import ValidationError
from sqlalchemy.exc import DBAPIError

from . import actions, api, auth, hub, metrics, writer
from .errors import ApiError, Unavailable, error_response
from .extensions import REDIS_ERRORS
from .http import send_lane_answer

log = logging.getLogger(__name__)

_MESSAGES = re.compile(r"/api/rooms/([a-z0-9-]{1,64})/messages\Z")
_STATUS = {201: "201 CREATED", 200: "200 OK"}


class PostFastLane:
    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            room_messages = _MESSAGES.match(environ.get("PATH_INFO", ""))
            if room_messages:
                started = time.perf_counter()
                with self.app.app_context():
                    answer = post_from_memory(environ, room_messages[1])
                if answer is not None:
                    metrics.observe_request("api.post_message", started)
                    if isinstance(answer, tuple):
                        status, answer = answer
                        return send_lane_answer(answer, environ, start_response, _STATUS[status])
                    return send_lane_answer(answer, environ, start_response)
        return self.wsgi_app(environ, start_response)


def post_from_memory(environ, slug: str):
    """`(status, JSON bytes)` of a post recorded from memory, a 503 response, or None: the view takes it."""
    cache = auth.post_cache()
    token = auth.session_token_from(environ.get("HTTP_COOKIE", ""), environ.get("wsgi.url_scheme") == "https")
    found = cache.session(auth.token_hash(token)) if token else None
    room = hub.current().known_rooms.get(slug)
    if found is None or room is None:
        return None
    session, version = found
    sent = environ.get("HTTP_X_CSRF_TOKEN", "")
    rules = cache.rules(room.id, session.user_id)
    if rules is None or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        return None
    fields = _fields(environ)
    if fields is None:
        return None
    environ["chat.user_id"] = session.user_id  # for the request's log line
    try:
        answer = actions.post_from_memory(session.user, room, fields["body"], fields["client_id"], rules, version)
    except writer.Stale as stale:
        cache.seen(stale.version)
        return None
    except ApiError:
        return None
    except (*REDIS_ERRORS, DBAPIError) as error:  # as errors.py answers it: nothing was acknowledged
        log.warning("dependency failure on POST %r: %s", environ.get("PATH_INFO"), error)
        metrics.DEPENDENCY_ERRORS.labels(dependency="redis" if isinstance(error, REDIS_ERRORS) else "database").inc()
        return error_response(Unavailable())
    if answer is None:
        return None
    message, created = answer
    if created:
        metrics.MESSAGES_ACCEPTED.inc()
    # As Flask answers a dict: its JSON provider's compact text and a newline.
    text = current_app.json.dumps({"message": message}, separators=(",", ":"))
    return (201 if created else 200), f"{text}\n".encode()


def _fields(environ) -> dict | None:
    """The body's fields as the view's json_body would load them, or None for anything it would not take
    as it is (the view then answers it). The body stays readable for the view."""
    if environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    if not 0 < length <= current_app.config["CHAT_MAX_REQUEST_BYTES"]:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode()  # no lone surrogate escape (views.json_body)
        return api.message_schema().load(data) if isinstance(data, dict) else None
    except (ValueError, RecursionError, UnicodeEncodeError, ValidationError):
        return None
