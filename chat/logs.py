"""Structured logs: one JSON object per line on stderr, for every request (and every stream's end) and
every warning. What goes in is chosen field by field: never a message body, a password, a token or
an SQL parameter (the engine hides those: config.py); a path is JSON-escaped, so it cannot forge a line.
"""
import json
import logging
import sys
import time

log = logging.getLogger("chat")


_second = [-1, ""]  # the last whole second formatted: every request writes a line, most in the same second


def _stamp(moment: float) -> str:
    whole = int(moment)
    if _second[0] != whole:
        _second[:] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int(moment * 1000) % 1000:03d}Z"


def _line(moment: float, level: str, logger: str, message: str, fields: dict) -> str:
    return json.dumps({"time": _stamp(moment), "level": level, "logger": logger, "message": message, **fields},
                      ensure_ascii=False, default=str)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return _line(record.created, record.levelname, record.name, record.getMessage(), fields)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure(level: str) -> None:
    """The root logger writes JSON lines at `level` (CHAT_LOG_LEVEL); once per process, whatever the apps."""
    root = logging.getLogger()
    if not any(isinstance(handler.formatter, JsonLines) for handler in root.handlers):
        handler = _Stderr()
        handler.setFormatter(JsonLines())
        root.addHandler(handler)
    root.setLevel(level.upper())


class Outage:
    """What a loop that runs every second says while a dependency is down: once that `what` paused (with the
    error), once that it resumed; not a line every round that buries everything else."""

    def __init__(self, what: str):
        self.what, self.failing = what, False

    def failed(self, error: Exception) -> None:
        if not self.failing:
            log.warning("%s paused: %s (%s); retrying every round", self.what, type(error).__name__, error)
        self.failing = True

    def passed(self) -> None:
        if self.failing:
            log.warning("%s resumed", self.what)
        self.failing = False


def _info(message: str, fields: dict) -> None:
    """The lines written per request: straight to stderr in the same format, without the logging
    module's per-record work (it was a tenth of a poll's CPU); the level still decides."""
    if log.isEnabledFor(logging.INFO):
        sys.stderr.write(_line(time.time(), "INFO", "chat", message, fields) + "\n")


def request_line(environ, status: str, seconds: float) -> None:
    """A request answered (for a stream: its first byte; `stream_ended` follows)."""
    _info("request", {"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                      "status": int(status[:3]), "duration_ms": round(seconds * 1000, 2),
                      "user_id": environ.get("chat.user_id"), "request_id": environ.get("chat.request_id"),
                      **environ.get("chat.live", {})})


def stream_ended(environ, rooms, events: int, seconds: float, reason: str) -> None:
    _info("stream ended", {"path": environ.get("PATH_INFO"), "rooms": rooms, "events": events,
                           "duration_s": round(seconds, 3), "reason": reason, "user_id": environ.get("chat.user_id"),
                           "request_id": environ.get("chat.request_id")})
