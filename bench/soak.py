"""The bounded soak of issue 11: `python -m bench soak --minutes N`, reused by tests/test_soak.py.

500 subscribers over 10 rooms, half SSE and half long-polling, hang up at random and resume
(bench/soak_clients.py); posters at a steady rate; a client cycling `HEAD`s on live endpoints, slow
readers, oversized and stalled bodies (bench/hostile.py). At the end: every subscriber's messages equal
its room's history after its start (no loss, no repeat, in order), no answer was a 5xx, the workers' RSS
and open descriptors are back near their baseline, and the private Redis's memory is within the bound
docs/SECURITY.md writes down. The result's `failures` lists what did not hold.
"""
import json
import subprocess
import sys
import threading
import time
from collections import Counter

import redis
import requests

from .clients import create_room, register_many
from .harness import Run, log, report
from .hostile import BadBodies, HeadCycler, Poster, slow_readers
from .server import ROOT, _die_with_parent
from .soak_checks import compare_sequences, fds_and_rss, metric, redis_bound_bytes, wait_idle

SUBSCRIBERS_PER_ACCOUNT = 5  # well under CHAT_MAX_STREAMS_PER_USER (20), also while a hung-up stream is let go
POSTERS = 5
SLOW_READERS = 10


def soak(options) -> dict:
    subscribers, rooms_count, minutes = options.soak_subscribers, options.soak_rooms, options.minutes
    with Run(options) as run:
        if not run.services.given_redis:  # as the embedded Redis runs (docs/SECURITY.md, "Redis memory")
            run.services.redis_client().config_set("maxmemory", "512mb")
        tag = run.services.run_id
        accounts = register_many(run.url, f"k{tag}", -(-subscribers // SUBSCRIBERS_PER_ACCOUNT) + POSTERS + 2)
        listeners, posters, hostile, reader = (accounts[:-POSTERS - 2], accounts[-POSTERS - 2:-2], accounts[-2],
                                               accounts[-1])
        rooms = [create_room(run.url, posters[0], f"soak {tag} {n}") for n in range(rooms_count)]
        starts = {slug: _history(run.url, posters[0], slug)["cursor"] for slug in rooms}
        run.refresh_server_pids()
        baseline = fds_and_rss(run.server.worker_pids(), run.server.port)
        redis_before = _redis_used(run)
        log(f"soak: {subscribers} subscribers over {rooms_count} rooms for {minutes} min; baseline {baseline}")

        result_path, final_path = run.workdir / "soak-result.json", run.workdir / "soak-final.json"
        hard_deadline = time.monotonic() + minutes * 60 + 300
        config = {"host": "127.0.0.1", "port": run.server.port, "count": subscribers, "rooms": rooms,
                  "cookies": [a.cookie for a in listeners], "per_account": SUBSCRIBERS_PER_ACCOUNT, "starts": starts,
                  "session_seconds": [2, 15], "pause_seconds": 1.5, "ramp_seconds": min(20, subscribers / 50),
                  "hard_deadline": hard_deadline, "catch_up_seconds": 60, "final_path": str(final_path),
                  "result_path": str(result_path)}
        (run.workdir / "soak-config.json").write_text(json.dumps(config))
        clients = subprocess.Popen([sys.executable, "-m", "bench.soak_clients", str(run.workdir / "soak-config.json")],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=open(run.workdir / "soak.stderr", "wb"),
                                   preexec_fn=_die_with_parent)
        try:
            ready = json.loads(clients.stdout.readline() or "{}")
            log(f"soak: subscribers connected: {ready}")
            stop = threading.Event()
            activities = [Poster(stop, run.url, account, rooms, options.rate / POSTERS, f"poster{n}")
                          for n, account in enumerate(posters)]
            activities += [HeadCycler(stop, run.url, hostile, rooms),
                           BadBodies(stop, run.url, hostile, rooms[0], run.server.port)]
            stalled = slow_readers(run.server.port, reader, rooms, SLOW_READERS)
            for activity in activities:
                activity.start()
            peak = _watch(run, minutes * 60)
            stop.set()
            for activity in activities:
                activity.join(60)
                activity.http.close()  # its keep-alive connection would hold a descriptor of the server's
            final = {slug: _history(run.url, posters[0], slug)["cursor"] for slug in rooms}
            final_path.write_text(json.dumps(final))
            ended = json.loads(clients.stdout.readline() or "{}")
            clients.wait(30)
        finally:
            if clients.poll() is None:
                clients.kill()
        for sock in stalled:
            sock.close()
        if ended.get("unfinished", 1):
            log("soak: subscribers' stderr:\n" + (run.workdir / "soak.stderr").read_text(errors="replace")[-3000:])
        results = json.loads(result_path.read_text())
        histories = {slug: _all_ids(run.url, posters[0], slug) for slug in rooms}
        idle = wait_idle(run.url, timeout=60)
        after = fds_and_rss(run.server.worker_pids(), run.server.port)
        redis_after = _redis_used(run)
        delivered = metric(run.url, "chat_events_delivered_total")
    statuses = Counter()
    for source in [*activities, *({"statuses": Counter(r["statuses"])} for r in results)]:
        statuses.update(source.statuses if hasattr(source, "statuses") else source["statuses"])
    sequences = compare_sequences(results, histories)
    bound = redis_bound_bytes(rooms_count)
    failures = [*sequences["failures"]]
    failures += [f"{code} answers: {count}" for code, count in statuses.items() if code.startswith("5")]
    failures += [f"HEAD got {code}" for code in activities[POSTERS].statuses if code not in ("200", "403")]
    failures += [f"oversized/stalled body got {code}" for code in activities[POSTERS + 1].statuses
                 if code not in ("413", "408")]
    failures += after.compare(baseline)
    failures += [] if idle else ["streams or polls still open at the end"]
    failures += [] if ended.get("unfinished") == 0 else [f"subscribers not caught up: {ended}"]
    failures += [] if peak["redis_used"] <= bound else [f"Redis used {peak['redis_used']} B, over the bound {bound} B"]
    return report({"scenario": "soak", "minutes": minutes, "subscribers": subscribers, "rooms": rooms_count,
                   "connected": ready.get("connected"), "messages": sum(map(len, histories.values())),
                   "deliveries_checked": sequences["deliveries"], "sessions": sequences["sessions"],
                   "resets": sequences["resets"], "events_delivered_metric": delivered,
                   "statuses": dict(statuses), "errors": _errors(activities, results),
                   "head_requests": activities[POSTERS].sent, "slow_readers": len(stalled),
                   "baseline": baseline.as_dict(), "after": after.as_dict(), "peak": peak,
                   "redis_used_before": redis_before, "redis_used_after": redis_after, "redis_bound": bound,
                   "failures": failures}, save=options.save)


def _watch(run, seconds: float) -> dict:
    """Sleep through the soak, sampling the workers and Redis every few seconds: the peaks, and the
    workers' RSS over time (a leak climbs through the run; a high-water mark flattens once all are connected)."""
    peak = {"rss_kib": 0, "fds": 0, "redis_used": 0, "streams_open": 0}
    timeline, started = [], time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        sample = fds_and_rss(run.server.worker_pids(), run.server.port)
        timeline.append([round(time.monotonic() - started), sample.rss_kib])
        peak["rss_kib"] = max(peak["rss_kib"], sample.rss_kib)
        peak["fds"] = max(peak["fds"], sample.fds)
        peak["redis_used"] = max(peak["redis_used"], _redis_used(run))
        peak["streams_open"] = max(peak["streams_open"], metric(run.url, "chat_streams_open"))
    peak["rss_timeline_kib"] = timeline[::max(1, len(timeline) // 12)] + timeline[-1:]
    return peak


def _redis_used(run) -> int:
    try:
        return int(run.services.redis_client().info("memory")["used_memory"])
    except redis.RedisError:
        return -1


def _history(base_url: str, account, slug: str, **params) -> dict:
    answer = requests.get(f"{base_url}/api/rooms/{slug}/messages", params={"limit": 200, **params}, timeout=30,
                          cookies={"chat_session": account.cookie})
    answer.raise_for_status()
    return answer.json()


def _all_ids(base_url: str, account, slug: str) -> list:
    ids, before = [], None
    while True:
        page = _history(base_url, account, slug, **({"before": before} if before else {}))
        ids[:0] = [message["id"] for message in page["messages"]]
        if not page["has_more"]:
            return ids
        before = page["messages"][0]["id"]


def _errors(activities, results) -> dict:
    errors = Counter()
    for activity in activities:
        errors.update(activity.errors)
    for result in results:
        errors.update(result["errors"])
    return dict(errors)

