"""What the soak checks at its end (bench/soak.py), apart so that each rule and its tolerance reads alone."""
import socket
import time
from dataclasses import dataclass

import psutil

from . import measure

# Back to baseline means within these. Memory: the allocator keeps some of what a peak of 500
# connections used (pymalloc arenas, greenlet stacks), which is not a leak; a leak of even a few KiB per
# stream or per message would exceed this over the soak's tens of thousands of each.
RSS_TOLERANCE_RATIO = 0.25  # of the workers' baseline RSS, together
RSS_TOLERANCE_KIB = 16 * 1024  # plus this much: small baselines move by whole arenas
# Descriptors: no client connection may remain (checked exactly); besides, a worker's connection pools
# fill up to their sizes under load and keep those connections: Redis's CHAT_REDIS_POOL_SIZE (6), and
# the database's (SQLite: 5 connections, up to 3 files each with WAL; PostgreSQL: 10 sockets).
FDS_TOLERANCE_PER_WORKER = 6 + 5 * 3

MIB = 1024 * 1024


def redis_bound_bytes(rooms: int) -> int:
    """docs/SECURITY.md, "Redis memory", typical use (messages under 200 bytes): a room's stream under
    3 MB, the firehose under 30 MB. The soak's messages are under 200 bytes, so this is its bound."""
    return rooms * 3 * MIB + 30 * MIB


@dataclass
class Resources:
    rss_kib: int
    fds: int
    clients: int  # established connections to the server's port
    per_worker: dict

    def as_dict(self) -> dict:
        return {"rss_kib": self.rss_kib, "fds": self.fds, "clients": self.clients, "per_worker": self.per_worker}

    def compare(self, baseline: "Resources") -> list:
        """What is not back to `baseline` within the tolerances above."""
        failures = []
        rss_limit = baseline.rss_kib * (1 + RSS_TOLERANCE_RATIO) + RSS_TOLERANCE_KIB
        if self.rss_kib > rss_limit:
            failures.append(f"workers' RSS {self.rss_kib} KiB, over {rss_limit:.0f} (baseline {baseline.rss_kib})")
        fds_limit = baseline.fds + FDS_TOLERANCE_PER_WORKER * max(1, len(baseline.per_worker))
        if self.fds > fds_limit:
            failures.append(f"workers' open descriptors {self.fds}, over {fds_limit} (baseline {baseline.fds})")
        if self.clients:
            failures.append(f"{self.clients} client connections still open in the workers")
        if set(self.per_worker) != set(baseline.per_worker):
            failures.append(f"workers changed (a crash?): {sorted(baseline.per_worker)} -> {sorted(self.per_worker)}")
        return failures


def fds_and_rss(pids, port: int) -> Resources:
    per_worker = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            per_worker[str(pid)] = {"rss_kib": process.memory_info().rss // 1024, "fds": process.num_fds(),
                                    **_kinds(process, port)}
        except psutil.Error:
            pass
    return Resources(*(sum(w[key] for w in per_worker.values()) for key in ("rss_kib", "fds", "clients")), per_worker)


def _kinds(process, port: int) -> dict:
    """What the descriptors are, so that a rise can be told apart: client sockets, Redis and database
    connections (TCP or unix), files (the SQLite database, its journal, metrics)."""
    sockets = process.net_connections(kind="all")
    return {"clients": sum(1 for c in sockets if c.laddr and c.family != socket.AF_UNIX and c.laddr.port == port
                           and c.status == psutil.CONN_ESTABLISHED),
            "tcp": sum(1 for c in sockets if c.type == socket.SOCK_STREAM and c.family != socket.AF_UNIX),
            "unix": sum(1 for c in sockets if c.family == socket.AF_UNIX), "files": len(process.open_files())}


def metric(base_url: str, name: str) -> float:
    return sum(value for (found, _), value in measure.scrape(base_url).items() if found == name)


def wait_idle(base_url: str, timeout: float) -> bool:
    """Until no stream is open and no poll waits (a hung-up stream is noticed at its next write, within a
    heartbeat); False if that does not happen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(base_url, "chat_streams_open") == 0 and metric(base_url, "chat_polls_waiting") == 0:
            return True
        time.sleep(0.5)
    return False


def compare_sequences(results: list, histories: dict) -> dict:
    """Each subscriber's message ids against its room's history after its start: equal, or a failure
    saying how (missing, repeated, out of order)."""
    failures, deliveries, sessions, resets = [], 0, 0, 0
    for index, result in enumerate(results):
        start = _key(result["start"])
        expected = [i for i in histories[result["slug"]] if _key(i) > start]
        got = result["ids"]
        deliveries += len(got)
        sessions += result["sessions"]
        resets += result["resets"]
        if got != expected:
            missing = len(set(expected) - set(got))
            repeated = len(got) - len(set(got))
            failures.append(f"subscriber {index} ({result['transport']}, {result['slug']}): {len(got)} ids against "
                            f"{len(expected)} in history; {missing} missing, {repeated} repeated"
                            + ("" if missing or repeated else ", out of order"))
    if resets:
        failures.append(f"{resets} reset events (none expected)")
    return {"failures": failures[:20], "deliveries": deliveries, "sessions": sessions, "resets": resets}


def _key(event_id: str) -> tuple:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)
