"""Structured logs: one JSON object per line on stderr, for every request (and every stream's end) and
every warning. What goes in is chosen field by field: never a message body, a password, a token or
an SQL parameter (the engine hides those: config.py); a path is JSON-escaped, so it cannot forge a line.
"""
import json
import logging
import sys
import time

log = logging.getLogger("chat")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
                 f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


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


def request_line(environ, status: str, seconds: float) -> None:
    """A request answered (for a stream: its first byte; `stream_ended` follows)."""
    if log.isEnabledFor(logging.INFO):
        log.info("request", extra={"fields": {
            "method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"), "status": int(status[:3]),
            "duration_ms": round(seconds * 1000, 2), "user_id": environ.get("chat.user_id"),
            "request_id": environ.get("chat.request_id"), **environ.get("chat.live", {})}})


def stream_ended(environ, rooms, events: int, seconds: float, reason: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("stream ended", extra={"fields": {
            "path": environ.get("PATH_INFO"), "rooms": rooms, "events": events, "duration_s": round(seconds, 3),
            "reason": reason, "user_id": environ.get("chat.user_id"), "request_id": environ.get("chat.request_id")}})
