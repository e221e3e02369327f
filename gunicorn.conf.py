"""gunicorn settings for long-lived streams on gevent workers (Procfile: `gunicorn -c gunicorn.conf.py wsgi:app`)."""
# Patch before anything imports ssl or sockets (redis-py does), in the master as in the workers.
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from gunicorn.glogging import Logger  # noqa: E402

ROOT = Path(__file__).resolve().parent
INSTANCE = ROOT / "instance"

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# The C parser (gunicorn-h1c, requirements.txt): parsing a poll's request in Python was a sixth of its CPU.
# "fast" rather than "auto", so an install without it fails at start instead of running slower unnoticed.
http_parser = "fast"
# gunicorn's default of 1,000 connections per gevent worker is a cliff for SSE: once streams fill it,
# nothing else (posts included) is answered. Size it well above the app's own cap on streams per
# process (CHAT_MAX_STREAMS_PER_PROCESS, default 8,000), which answers 503 + Retry-After past it.
worker_connections = int(os.environ.get("CHAT_WORKER_CONNECTIONS", "12000"))
# The longest request line gunicorn takes (its default, 4094, is its own 414 in HTML): the several-rooms feeds
# list up to CHAT_MAX_ROOMS_PER_STREAM slugs of up to 64 characters, in `rooms` and again in `away`.
limit_request_line = 8190
# SIGTERM: the app ends every stream within 5 s (staggered), then the worker exits.
graceful_timeout = 8
timeout = 30
# Longer than the idle timeout of the proxy or router in front (nginx 60 s, most load balancers 60 s),
# so the proxy, not gunicorn, closes an idle connection: a request sent just as the server closes it
# fails ("connection aborted"), and a POST is not retried. An idle connection costs a greenlet.
keepalive = 75
accesslog = os.environ.get("CHAT_ACCESS_LOG") or None
errorlog = "-"


class _JsonLines(logging.Formatter):
    """gunicorn's own lines (starting, workers booting and exiting, errors) in the app's JSON format
    (chat/logs.py), so that every line of a server's output parses alike. Here rather than imported: the
    master configures logging before the app (and its metrics directory) can be imported."""

    def format(self, record):
        moment = record.created
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _JsonLogger(Logger):
    """gunicorn's logger with its handlers in JSON. Not `logconfig_dict`: with it, gunicorn writes an access
    line per request (the app writes its own), which cost a sixth of a poll's CPU."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(_JsonLines())


logger_class = _JsonLogger
# Several instances share a machine in tests and scale-out; the control socket would clash on one path.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")  # the platform's router sets X-Forwarded-*


def on_starting(server):
    """In the master, before workers fork: the one owner of the embedded Redis and the metrics directory."""
    _raise_open_files_limit(worker_connections + 1000)
    # One directory per master: several instances on one machine (scale-out, tests) must not wipe each other's files.
    metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(INSTANCE / "metrics" / str(os.getpid())))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)
    if not os.environ.get("REDIS_URL"):
        from chat import config, embedded_redis  # noqa: PLC0415

        maxmemory = config.load(str(INSTANCE))["CHAT_EMBEDDED_REDIS_MAXMEMORY"]
        os.environ["REDIS_URL"] = embedded_redis.ensure_running(str(INSTANCE), maxmemory)
        server.log.info("embedded Redis at %s", os.environ["REDIS_URL"])


def post_worker_init(worker):
    """Watch for SIGTERM (gunicorn only flips `alive`) and end this process's streams promptly."""
    import gc  # noqa: PLC0415

    import gevent  # noqa: PLC0415

    # Move what the app loaded out of the collector's reach: full collections over it stopped a worker
    # (every stream in it) for 55-124 ms in the benchmark; frozen, about 10 ms.
    gc.collect()
    gc.freeze()
    # Collect the young generation after 20,000 net new objects rather than 700: a burst of woken polls or
    # streams holds that many for a moment, and at 700 the collector ran 3,000 times in 30 s over objects that
    # were about to be freed anyway (a tenth of the CPU at 1,000 pollers). The older generations keep their
    # ratios; cyclic garbage still goes, in collections a few times rarer.
    gc.set_threshold(20_000, 10, 10)
    _cache_date_header()
    _one_send_per_answer()
    _settings_as_attributes(worker.cfg)

    from chat import hub  # noqa: PLC0415

    def watch():
        while worker.alive:
            gevent.sleep(0.2)
        hub.shutdown_all()

    gevent.spawn(watch)
    gevent.spawn(_relay, worker.wsgi)
    gevent.spawn(_expire_mutes, worker.wsgi)
    gevent.spawn(_delete_expired_sessions, worker.wsgi)


def _every(app, seconds: float, lease_seconds: float, job_name: str, job, description: str):
    """Run `job()` every `seconds`, in the one process across the deployment that takes the job's lease
    in Redis for `lease_seconds`; a failure (a dependency down) is logged and the next round tries again."""
    import gevent  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from chat import logs, streams  # noqa: PLC0415
    from chat.extensions import REDIS_ERRORS  # noqa: PLC0415

    outage = logs.Outage(description)  # a dependency down: said once, not a traceback every second
    while True:
        gevent.sleep(seconds)
        try:
            with app.app_context():
                if streams.current().claim(job_name, lease_seconds):
                    job()
        except (*REDIS_ERRORS, SQLAlchemyError) as error:
            outage.failed(error)
            continue
        except Exception:  # noqa: BLE001 - a bug: its traceback every time
            app.logger.exception("%s failed", description)
            continue
        outage.passed()


def _relay(app):
    """Every second: publish what a crash or a Redis failure left committed but unpublished, in the rooms
    active lately; every minute, in every room (chat/outbox.py)."""
    from chat import outbox  # noqa: PLC0415

    rounds = 0

    def once():
        nonlocal rounds
        rounds += 1
        outbox.relay(everything=rounds % 60 == 1)

    _every(app, 1, 0.9, "relay", once, "publishing what requests left unpublished")


def _expire_mutes(app):
    """Every second: broadcast the end of mutes that ran out (API.md: within 5 s of `until`). Each mute is
    ended once even if two runs overlap (actions.expire_mutes claims it in the database); the lease only
    spares the other processes the query."""
    from chat import actions  # noqa: PLC0415

    _every(app, 1, 1, "expire_mutes", actions.expire_mutes, "ending mutes that ran out")


def _delete_expired_sessions(app):
    """Hourly: delete sessions that expired and were never presented again (presented ones go at once)."""
    from chat import actions  # noqa: PLC0415

    _every(app, 3600, 3500, "delete_expired_sessions", actions.delete_expired_sessions, "deleting expired sessions")


def on_exit(server):
    if os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(INSTANCE / "metrics" / str(os.getpid())):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)


def _raise_open_files_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _cache_date_header():
    """gunicorn formats the `Date` header afresh for every response (email.utils.formatdate, 2 % of a
    poll's CPU); its value changes once a second, so it is formatted once a second, as nginx does."""
    from gunicorn import util  # noqa: PLC0415

    format_date, cached = util.http_date, [0, ""]

    def http_date(timestamp=None):
        if timestamp is not None:
            return format_date(timestamp)
        now = int(time.time())
        if cached[0] != now:
            cached[:] = now, format_date(now)
        return cached[1]

    util.http_date = http_date


def _one_send_per_answer():
    """gunicorn sends a response's headers, then its body, in two `send` calls; an answer whose whole
    body comes in one piece (a poll's JSON, with its Content-Length) goes out in one, which halves the
    system calls of the most frequent request. Streams (chunked), HEAD and files take gunicorn's way."""
    from gunicorn import util  # noqa: PLC0415
    from gunicorn.http import wsgi  # noqa: PLC0415

    write = wsgi.Response.write

    def write_whole(self, data):
        if self.headers_sent or self.chunked or self._omits_body or type(data) is not bytes \
                or self.response_length != len(data):
            return write(self, data)
        head = self.default_headers()
        head.extend(["%s: %s\r\n" % (name, value) for name, value in self.headers])
        self.headers_sent, self.sent = True, len(data)
        whole = ("%s\r\n" % "".join(head)).encode("latin-1") + data
        # send, not sendall: gevent's sendall asks the socket's buffer size first (a system call per answer).
        sent = self.sock.send(whole)
        if sent < len(whole):
            util.write(self.sock, memoryview(whole)[sent:])

    wsgi.Response.write = write_whole


def _settings_as_attributes(cfg):
    """gunicorn's Config answers every setting through `__getattr__` and the setting's validator, several
    times per request; a worker's settings no longer change, so each becomes a plain attribute."""
    for name, setting in cfg.settings.items():
        if not hasattr(type(cfg), name):  # properties keep computing theirs
            object.__setattr__(cfg, name, setting.get())
