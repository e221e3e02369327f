"""`python -m bench [fanout|poll|capacity|ingest|soak|all] [options]`: pick scenarios and sizes; one JSON line each.
`all` is the four measurements; the soak (issue 11's endurance check, `--minutes`) runs only when named."""
import argparse
import os
import signal
import sys
import time

from . import scenarios, soak
from .harness import log
from .measure import machine

SCENARIOS = ("fanout", "poll", "capacity", "ingest", "soak")
ALL = SCENARIOS[:4]
FULL = {"subscribers": [1000, 5000], "pollers": [500, 1000], "streams": [10000], "duration": 30.0}
QUICK = {"subscribers": [200], "pollers": [100], "streams": [500], "duration": 8.0}


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("use KEY=VALUE")
    return key.strip(), value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("scenarios", nargs="*", default=["all"], metavar="SCENARIO",
                   help=f"any of {', '.join(SCENARIOS)}, or all (the default)")
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (development)")
    size = p.add_argument_group("sizes")
    size.add_argument("--subscribers", type=_sizes, help="fanout: SSE subscribers, comma-separated (1000,5000)")
    size.add_argument("--pollers", type=_sizes, help="poll: long-pollers, comma-separated (500,1000)")
    size.add_argument("--streams", type=_sizes, help="capacity: idle SSE streams (10000)")
    size.add_argument("--posters", type=int, default=16, help="ingest: concurrent closed-loop posters")
    size.add_argument("--rooms", type=int, default=100, help="capacity: rooms the streams spread over; "
                                                             "ingest: rooms the posters spread over (at most posters)")
    size.add_argument("--users", type=int, default=0,
                      help="distinct accounts for subscribers/streams (default: one per subscriber for fanout, "
                           "one per 10 streams for capacity)")
    size.add_argument("--duration", type=float, help="seconds of publishing (fanout, poll) or posting (ingest)")
    size.add_argument("--rate", type=float, default=10.0,
                      help="fanout: publisher messages per second; soak: messages per second, all posters together")
    size.add_argument("--minutes", type=float, default=10.0, help="soak: minutes of posting and hostile load")
    size.add_argument("--soak-subscribers", type=int, default=500, help="soak: subscribers, half SSE, half polls")
    size.add_argument("--soak-rooms", type=int, default=10, help="soak: rooms the subscribers spread over")
    size.add_argument("--body-bytes", type=int, default=128, help="message body size")
    server = p.add_argument_group("server")
    server.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY (gunicorn gevent workers)")
    server.add_argument("--worker-connections", type=int, default=0,
                        help="CHAT_WORKER_CONNECTIONS (gunicorn worker_connections; default from gunicorn.conf.py)")
    server.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="extra server environment, e.g. --set CHAT_MAX_STREAMS_PER_PROCESS=8000")
    server.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="use this Redis (own key prefix, removed after) instead of a private redis-server")
    server.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL admin URL: a fresh database is created on it and dropped after "
                             "(default: SQLite in a temporary directory)")
    gen = p.add_argument_group("load generator")
    gen.add_argument("--procs", type=int, default=0, help="generator processes (default: by size)")
    gen.add_argument("--connect-concurrency", type=int, default=100,
                     help="connections each generator process sets up at once")
    gen.add_argument("--coalesce-ms", type=float, default=1.0,
                     help="SSE/poll readers wait this long after a wake-up before reading, to batch reads "
                          "(adds at most this much to measured latency; 0 reads at once)")
    gen.add_argument("--settle", type=float, default=3.0, help="seconds between all connected and measuring")
    gen.add_argument("--drain", type=float, default=2.0, help="seconds after the last post before counting")
    gen.add_argument("--warmup", type=float, default=3.0, help="ingest: seconds of posting before the window")
    gen.add_argument("--idle-window", type=float, default=10.0, help="capacity: seconds of measuring idle CPU")
    gen.add_argument("--no-stages", dest="stages", action="store_false",
                     help="ingest: skip the in-process timing of the write path's stages")
    gen.add_argument("--stage-requests", type=int, default=1000, help="ingest: POSTs timed in-process")
    gen.add_argument("--no-save", dest="save", action="store_false", help="do not append to bench/results/")
    gen.add_argument("--profile", action="store_true",
                     help="fanout, poll, ingest: sample the workers with py-spy during the window (costs CPU)")
    gen.add_argument("--gc-log", action="store_true",
                     help="fanout, poll, capacity: start gunicorn with bench/gunicorn_gc.conf.py, which logs each worker's "
                          "garbage-collector pauses, and report those in the window")
    gen.add_argument("--py-spy", default=None, help="path of the py-spy binary (default: PATH, /tmp/pyspy/bin)")
    return p


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every Run, which stops what it started


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    p = parser()
    options = p.parse_args(argv)
    unknown = [name for name in options.scenarios if name not in (*SCENARIOS, "all")]
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}, all")
    options.settings = dict(options.settings)
    defaults = QUICK if options.quick else FULL
    for key in ("subscribers", "pollers", "streams", "duration"):
        if getattr(options, key) is None:
            setattr(options, key, defaults[key])
    chosen = ALL if "all" in options.scenarios else [s for s in SCENARIOS if s in options.scenarios]
    facts = machine()
    log(f"machine: {facts}")
    started = time.monotonic()
    try:
        failures = _run(options, chosen)
    except KeyboardInterrupt as interrupt:
        log(f"interrupted ({interrupt}); everything started was stopped")
        return 130
    log(f"done in {time.monotonic() - started:.0f} s, {failures} failure(s)")
    return 1 if failures else 0


def _run(options, chosen) -> int:
    failures = 0
    for name in chosen:
        runs = {"fanout": [(scenarios.fanout, (n, "sse")) for n in options.subscribers],
                "poll": [(scenarios.fanout, (n, "poll")) for n in options.pollers],
                "capacity": [(scenarios.capacity, (n,)) for n in options.streams],
                "ingest": [(scenarios.ingest, (url,)) for url in _ingest_databases(options)],
                "soak": [(_soak, ())]}[name]
        for function, args in runs:
            log(f"{name} {args}")
            try:
                function(options, *args)
            except Exception as error:  # noqa: BLE001 - report, then go on with the next scenario
                failures += 1
                log(f"{name} {args} FAILED: {type(error).__name__}: {error}")
    return failures


def _soak(options) -> dict:
    """The soak reports what did not hold instead of raising: a failed check is a failed run."""
    result = soak.soak(options)
    if result["failures"]:
        raise AssertionError("; ".join(result["failures"]))
    return result


def _ingest_databases(options) -> list:
    """SQLite always (""), then the given PostgreSQL if there is one."""
    urls = [""]
    if options.database_url and not options.database_url.startswith("sqlite"):
        urls.append(options.database_url)
    return urls


if __name__ == "__main__":
    sys.exit(main())
