"""Request bodies read with a deadline (issue 11): a client that announces a body and then dribbles it, or
stops, must not hold a connection and its greenlet for ever.

gunicorn's gevent worker has no read timeout of its own for a request body (its `timeout` watches the
worker, not a request), so this middleware reads the whole body, at most CHAT_MAX_REQUEST_BYTES + 1
bytes, before the app sees the request, under a gevent timeout. A body not in by the deadline gets
`408 request_timeout` and the connection is closed: nothing was handed to a view, so nothing is saved.
"""
import io
import json
import socket

from .http import SECURITY_HEADERS

_TOO_SLOW = json.dumps({"error": {"code": "request_timeout",
                                  "message": "the request body did not arrive in time; send it again"}}).encode()


def _cooperative() -> bool:
    """Only under gevent's patched sockets can a timeout interrupt a read (the test client's bodies are
    in memory, and a plain thread would block regardless)."""
    try:
        from gevent import monkey  # noqa: PLC0415
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


class BodyDeadline:
    """WSGI middleware: `wsgi.input` becomes the body already read, or the request ends in `408`."""

    def __init__(self, wsgi_app, seconds: float, max_bytes: int):
        self.wsgi_app = wsgi_app
        self.seconds = seconds
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        if self.seconds <= 0 or not _has_body(environ) or not _cooperative():
            return self.wsgi_app(environ, start_response)
        length = _content_length(environ)
        if length is not None and length > self.max_bytes:
            return self.wsgi_app(environ, start_response)  # refused as 413 before any of it is read
        import gevent  # noqa: PLC0415

        wanted = self.max_bytes + 1 if length is None else length
        try:
            with gevent.Timeout(self.seconds):
                body = _read(environ["wsgi.input"], wanted)
        except gevent.Timeout:
            start_response("408 Request Timeout", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(_TOO_SLOW))),
                                                   ("Cache-Control", "no-store"), ("Connection", "close"),
                                                   *SECURITY_HEADERS])
            return _ThenHangUp(environ.get("gunicorn.socket"))
        environ["wsgi.input"] = io.BytesIO(body)
        if length is None:
            # Chunked, now read: it has a length like any other body, so past the bound it gets 413 as they do
            # (Werkzeug would cut a chunked body at the bound silently, and the cut JSON answer 400).
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)  # else Werkzeug ignores the length
            environ.pop("wsgi.input_terminated", None)
        return self.wsgi_app(environ, start_response)


class _ThenHangUp:
    """The 408's body, then the connection shut: gunicorn ignores an app's `Connection: close` and would
    wait for the rest of the body before the next request; `close()` runs once the answer is written."""

    def __init__(self, sock):
        self.sock = sock

    def __iter__(self):
        yield _TOO_SLOW

    def close(self):
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client is gone already


def _has_body(environ) -> bool:
    return _content_length(environ) not in (None, 0) or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _content_length(environ) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _read(stream, wanted: int) -> bytes:
    """Up to `wanted` bytes, stopping early at the end of the body (a client that sent less and closed)."""
    parts, left = [], wanted
    while left > 0:
        part = stream.read(min(left, 65536))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
