"""HTTP details that the Flask views and the poll fast lane (fastpoll.py) share."""
import itertools
import os
import re
import time

from flask import request

from . import logs

# No inline scripts: message text can never become code (API.md, issue 4).
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),  # frame-ancestors 'none' for browsers without CSP level 2
)


# Over HTTPS, browsers are told to use nothing else for a year (never over plain HTTP: it would lock out a
# deployment that has no certificate yet).
HSTS = ("Strict-Transport-Security", "max-age=31536000")


# What the views' API answers carry besides their own: the headers the after_request hooks below add.
_API_HEADERS = [("Cache-Control", "no-store"), *SECURITY_HEADERS]


def send_lane_answer(answer, environ, start_response, status: str = "200 OK"):
    """A fast lane's answer (fastpoll.py, fastpost.py), with the headers the view's would carry (HSTS when
    the trusted proxy says HTTPS: ProxyFix runs before the lanes): JSON bytes as they are, without a
    Response object, or an error Response."""
    headers = [*_API_HEADERS, *([HSTS] if environ.get("wsgi.url_scheme") == "https" else [])]
    if isinstance(answer, bytes):
        start_response(status, [("Content-Type", "application/json"), *headers, ("Content-Length", str(len(answer)))])
        return [answer]
    for name, value in headers:
        answer.headers.setdefault(name, value)
    return answer(environ, start_response)


def add_security_headers(response):
    for name, value in SECURITY_HEADERS:
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault(*HSTS)
    return response


def init_app(app) -> None:
    app.after_request(add_security_headers)

    @app.after_request
    def _no_store_for_api(response):
        # API answers are about someone: no shared or browser cache may keep them.
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")
# A made request id is this process's random prefix and a count: unique across processes and restarts
# without a system call per request (ids correlate log lines; nothing relies on them being unguessable).
_process_prefix = [os.urandom(8).hex()]
os.register_at_fork(after_in_child=lambda: _process_prefix.__setitem__(0, os.urandom(8).hex()))


class RequestIds:
    """WSGI middleware, outermost: every response carries `X-Request-ID`, the request's own when it is
    well-formed (API.md, "Conventions"), else a new one; and every request is logged (logs.py)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        self.made_ids = itertools.count(1)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID.match(given) else f"{_process_prefix[0]}-{next(self.made_ids):x}"
        environ["chat.request_id"] = request_id

        def start_with_id(status, headers, exc_info=None):
            headers.append(("X-Request-ID", request_id))
            logs.request_line(environ, status, time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_with_id)
