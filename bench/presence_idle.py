"""Redis commands per second that presence costs: two hubs (as two processes would) over a private redis-server,
subscribers present in M rooms, idle or with a change a second (docs/SCALING.md, "Measured").

    .venv/bin/python -m bench.presence_idle [rooms ...]
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.server import _die_with_parent, redis_binary
from chat.config import CHAT_DEFAULTS
from chat.hub import Hub
from chat.ids import ZERO
from chat.streams import Streams

CONFIG = {**CHAT_DEFAULTS, "CHAT_MAX_STREAMS_PER_PROCESS": 100000, "CHAT_MAX_STREAMS_PER_USER": 100000}
USERS, WINDOW = 10, 60.0  # six of the hubs' 10 s heartbeat rounds, and two or three reads of each live room


def commands_per_second(client, seconds: float, during=None) -> dict:
    """What the server ran per second over `seconds`, calling `during()` once a second meanwhile: its commands (a
    script's own calls included, the INFO calls not), of them the ZRANGEBYSCORE and ZRANGE calls (a list read was one
    ZRANGEBYSCORE; it is now a script making two ZRANGE), the script calls (each a round trip from a process), and
    its CPU in ms/s."""
    client.config_resetstat()
    cpu_before = _cpu_ms(client)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if during is not None:
            during()
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    cpu = _cpu_ms(client) - cpu_before
    calls = {name: stats["calls"] for name, stats in client.info("commandstats").items()}
    total = sum(count for name, count in calls.items() if name not in ("cmdstat_info", "cmdstat_config|resetstat"))
    reads = calls.get("cmdstat_zrangebyscore", 0) + calls.get("cmdstat_zrange", 0)
    scripts = calls.get("cmdstat_evalsha", 0) + calls.get("cmdstat_eval", 0)
    return {"commands": total / seconds, "reads": reads / seconds, "scripts": scripts / seconds,
            "cpu_ms": cpu / seconds}


def _cpu_ms(client) -> float:
    info = client.info("cpu")
    return (info["used_cpu_user"] + info["used_cpu_sys"]) * 1000


def private_redis(directory: Path) -> subprocess.Popen:
    """A redis-server of the bench's own on a unix socket in `directory`, ended with this process."""
    return subprocess.Popen(
        [redis_binary(), "--port", "0", "--unixsocket", str(directory / "redis.sock"), "--unixsocketperm", "700",
         "--dir", str(directory), "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log")],
        stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)


def measure(rooms: int) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as directory:
        server = private_redis(Path(directory))
        client = redis.Redis(unix_socket_path=str(Path(directory) / "redis.sock"), decode_responses=True)
        deadline = time.monotonic() + 10
        while True:  # until it answers
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        streams = Streams(client, "bench", 1000)
        streams.mark_verified(streams.run_id(), ZERO)
        hubs = [Hub(streams, CONFIG, verify=lambda shard: streams.run_id(shard)) for _ in range(2)]
        try:
            slugs = [f"room-{n}" for n in range(rooms)]
            for n, slug in enumerate(slugs):
                for index, hub in enumerate(hubs):
                    user = (n + index) % USERS
                    hub.subscribe(rooms=frozenset([slug]), present=frozenset([slug]), presence=True, session_id=user,
                                  user_id=user, username=f"user{user}")
            time.sleep(3)  # the first reads and writes settle
            idle = commands_per_second(client, WINDOW)
            joined = []

            def one_change():  # someone joins the first room in one process, or leaves it
                if joined:
                    hubs[0].unsubscribe(joined.pop())
                else:
                    joined.append(hubs[0].subscribe(rooms=frozenset([slugs[0]]), present=frozenset([slugs[0]]),
                                                    presence=True, session_id=99, user_id=99, username="visitor"))
            changing = commands_per_second(client, WINDOW, one_change)
            return idle, changing
        finally:
            for hub in hubs:
                hub.shutdown(window=0)
            client.close()
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    for rooms in [int(arg) for arg in sys.argv[1:]] or [10, 100, 1000]:
        for label, figures in zip(("idle", "a change a second"), measure(rooms)):
            print(f"{rooms} rooms, 2 processes, {label}: {figures['commands']:.1f} commands/s "
                  f"({figures['reads']:.1f} ZRANGE*/s, {figures['scripts']:.1f} script calls/s), "
                  f"Redis CPU {figures['cpu_ms']:.2f} ms/s", flush=True)
