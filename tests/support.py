"""Test helpers: sign-in actions, a real gunicorn server, and an SSE client that parses the byte stream."""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from chat.ids import FeedPosition
from chat.streams import shard_of

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse"


def run_migrations(database_url: str, instance_path: str) -> None:
    """Create the schema the way deployers do: `flask db upgrade`."""
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "test"}
    subprocess.run([sys.executable, "-m", "flask", "--app", "chat", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True)


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")  # API.md: 2026-11-25T19:00:00.123Z


# Bodies a JSON endpoint must refuse: too large (64 KiB is the default limit), malformed, not JSON.
BAD_BODIES = [("x" * (65 * 1024), "application/json"), ("{", "application/json"),
              ("name=x", "application/x-www-form-urlencoded")]


def event_key(event_id: str) -> tuple[int, int]:
    """The one comparison API.md allows on event ids: split at `-`, compare as a pair of integers."""
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def room_name_in_shard(shard: int, shards: int) -> str:
    """A new room's name whose slug (the same letters and digits: API.md) belongs to `shard` of `shards`."""
    while True:
        name = unique("room")
        if shard_of(name, shards) == shard:
            return name


def feed_positions_increase(ids: list[str]) -> bool:
    """Whether a feed's ids (several-rooms or moderators') strictly increase: each at or past the one before on
    every shard, and not the same (with one shard, as event ids do; with several, each carries one id per shard)."""
    positions = [FeedPosition.parse(event_id) for event_id in ids]
    return all(before.covered_by(after) and before != after for before, after in zip(positions, positions[1:]))


def assert_fields(actual: dict, **expected) -> None:
    """`actual` holds these fields with these values (API.md lets the project add fields of its own)."""
    assert expected.keys() <= actual.keys(), actual
    assert {key: actual[key] for key in expected} == expected


def assert_error(response, status: int, code: str, fields=()) -> dict:
    """The response is API.md's error shape with this status and code; a validation error names `fields`."""
    assert response.status_code == status, (response.status_code, response.get_json(silent=True))
    error = response.json["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if code == "validation_error":
        assert set(fields) <= set(error["fields"]), error
        assert all(isinstance(problems, list) and problems for problems in error["fields"].values()), error
    else:
        assert "fields" not in error, error
    return error


def assert_refused(attempt, values, status: int, code: str, fields=()) -> None:
    """A table of bad inputs against one state: `attempt(value)` answers this error for every value."""
    for value in values:
        response = attempt(value)
        body = response.get_json(silent=True) or {}
        assert (response.status_code, body.get("error", {}).get("code")) == (status, code), (value, body)
        assert_error(response, status, code, fields)


class AuthActions:
    """A browser's session against the Flask test client (flaskr's AuthActions)."""

    def __init__(self, client):
        self.client = client
        self.csrf = None
        self.user = None

    def register(self, username=None, password=PASSWORD):
        response = self.client.post("/api/auth/register", json={"username": username or unique(), "password": password})
        if response.status_code == 201:
            self.user, self.csrf = response.json["user"], response.json["csrf_token"]
        return response

    def login(self, username, password=PASSWORD):
        response = self.client.post("/api/auth/login", json={"username": username, "password": password})
        if response.status_code == 200:
            self.user, self.csrf = response.json["user"], response.json["csrf_token"]
        return response

    def headers(self):
        return {"X-CSRF-Token": self.csrf or ""}

    def post(self, path, **kwargs):
        return self.client.post(path, headers=self.headers(), **kwargs)

    def delete(self, path, **kwargs):
        return self.client.delete(path, headers=self.headers(), **kwargs)

    def get(self, path, **kwargs):
        return self.client.get(path, **kwargs)

    def create_room(self, name=None) -> str:
        response = self.post("/api/rooms", json={"name": name or unique("room")})
        assert response.status_code == 201, response.json
        return response.json["room"]["slug"]

    def send(self, slug, body="hello", client_id=None):
        payload = {"body": body} if client_id is None else {"body": body, "client_id": client_id}
        return self.post(f"/api/rooms/{slug}/messages", json=payload)

    def history(self, slug, **params):
        return self.get(f"/api/rooms/{slug}/messages", query_string=params)

    @property
    def username(self) -> str:
        return self.user["username"]

    def mute(self, slug, username, minutes=10, **extra):
        return self.post(f"/api/rooms/{slug}/mutes", json={"username": username, "minutes": minutes, **extra})

    def ban(self, username, **extra):
        return self.post("/api/bans", json={"username": username, **extra})


@contextmanager
def beaten_to_insert(model, rival):
    """A race lost every time, not by luck: the first flush that would insert a `model` row waits for `rival()`
    (a whole request through a test client, run on a thread of its own so that it has its own app context and
    database session) as if that request had come between this one's read and its insert. Yields a list that
    then holds `rival()`'s answer."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from sqlalchemy import event  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    answers = []

    def rival_first(session, _context, _instances):
        if not answers and any(isinstance(row, model) for row in session.new):
            answers.append(None)  # the rival's own insert must not start another rival
            with ThreadPoolExecutor(1) as pool:
                answers[0] = pool.submit(rival).result(timeout=30)

    event.listen(Session, "before_flush", rival_first)
    try:
        yield answers
    finally:
        event.remove(Session, "before_flush", rival_first)


# Settings for servers that tests flood with messages on purpose: none of the posting limits bites.
UNLIMITED_POSTING = {"CHAT_RATE_LIMIT": "100000/10", "CHAT_USER_RATE_LIMIT": "100000/10",
                     "CHAT_USER_BYTES_LIMIT": "1000000000/10"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# What a failing test shows of a server's output (conftest.py): its JSON lines at WARNING and above, those that
# tell of resets, restarts and Redis incarnations, and any line that is not JSON (a crash's traceback).
_NOTABLE = re.compile(r"reset|restart|incarnation", re.IGNORECASE)


def _notable(line: str) -> bool:
    try:
        fields = json.loads(line)
    except ValueError:
        return bool(line.strip())
    return not isinstance(fields, dict) or fields.get("level") not in ("DEBUG", "INFO") or bool(_NOTABLE.search(line))


class LiveServer:
    """gunicorn with gevent workers, as the Procfile runs it, on a free port."""

    started: list["LiveServer"] = []  # every server of the run, for what a failing test shows (conftest.py)

    def __init__(self, services, workers: int = 2, **settings):
        self.services = services
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": services["database_url"], "REDIS_URL": services["redis_url"],
                    "CHAT_REDIS_PREFIX": services["prefix"], "CHAT_PASSWORD_METHOD": "pbkdf2:sha256:1000",
                    "SECRET_KEY": "test", "PORT": str(self.port), "REDIS_CLUSTER": "1" if services.get("cluster") else "0",
                    "WEB_CONCURRENCY": str(workers), **{key: str(value) for key, value in settings.items()}}
        self.process = None

    def start(self, timeout: float = 30) -> None:
        os.makedirs(self.services["instance"], exist_ok=True)  # with REDIS_URL set, nothing else creates it
        Path(self.services["instance"]).mkdir(parents=True, exist_ok=True)
        self.log = open(Path(self.services["instance"]) / f"gunicorn-{self.port}.log", "ab")
        if self not in LiveServer.started:
            LiveServer.started.append(self)
        self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                        cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log.name}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer /healthz in time")

    def stop(self, timeout: float = 15) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode if self.process else None

    def user(self, username=None, role=None) -> "HttpUser":
        return HttpUser(self.url).register(username)

    def output_size(self) -> int:
        """Where the server's output (stdout and stderr, one file) ends now."""
        return os.path.getsize(self.log.name)

    def notable_output(self, since: int = 0, most: int = 200) -> list[str]:
        """The last `most` notable lines (_notable) the server wrote from byte `since` on; a long line (a
        traceback) keeps its start and end."""
        with open(self.log.name, "rb") as output:
            output.seek(since)
            lines = [line for line in output.read().decode("utf-8", "replace").splitlines() if _notable(line)]
        return [line if len(line) <= 1500 else f"{line[:700]} [...] {line[-700:]}" for line in lines[-most:]]


class HttpUser:
    """A signed-in browser talking HTTP to a live server."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = requests.Session()
        self.csrf = None
        self.user = None

    def register(self, username=None, password=PASSWORD) -> "HttpUser":
        response = self.http.post(self.base_url + "/api/auth/register",
                                  json={"username": username or unique(), "password": password}, timeout=10)
        response.raise_for_status()
        self.user, self.csrf = response.json()["user"], response.json()["csrf_token"]
        return self

    def login(self, username, password=PASSWORD) -> requests.Response:
        response = self.http.post(self.base_url + "/api/auth/login", json={"username": username, "password": password},
                                  timeout=10)
        if response.ok:
            self.user, self.csrf = response.json()["user"], response.json()["csrf_token"]
        return response

    def request(self, method, path, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        headers = {"X-CSRF-Token": self.csrf or "", **kwargs.pop("headers", {})}
        return self.http.request(method, self.base_url + path, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def create_room(self, name=None) -> str:
        response = self.post("/api/rooms", json={"name": name or unique("room")})
        response.raise_for_status()
        return response.json()["room"]["slug"]

    def send(self, slug, body, client_id=None) -> requests.Response:
        return self.post(f"/api/rooms/{slug}/messages", json={"body": body, "client_id": client_id or unique("c")})

    def events(self, path, last_event_id=None, **kwargs) -> "SSEClient":
        return SSEClient(self.http, self.base_url + path, last_event_id=last_event_id, **kwargs)


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None  # the id field this event carried, if any
    retry: int | None = None

    def json(self):
        import json  # noqa: PLC0415

        return json.loads(self.data)


@dataclass
class _Parser:
    """The SSE parsing algorithm of the HTML standard, fed arbitrary chunks."""

    buffer: str = ""
    pending: dict = field(default_factory=dict)
    data_lines: list = field(default_factory=list)
    comments: list = field(default_factory=list)
    retry: int | None = None

    def feed(self, text: str) -> list[Event]:
        self.buffer += text
        events = []
        while True:
            cut = min((i for i in (self.buffer.find("\r"), self.buffer.find("\n")) if i >= 0), default=-1)
            if cut < 0:
                return events
            if self.buffer[cut] == "\r" and cut == len(self.buffer) - 1:
                return events  # a CR at the end may be half of a CRLF split across chunks
            line = self.buffer[:cut]
            skip = 2 if self.buffer[cut:cut + 2] == "\r\n" else 1
            self.buffer = self.buffer[cut + skip:]
            if line == "":
                if self.data_lines or "event" in self.pending or "id" in self.pending:
                    events.append(Event(self.pending.get("event", "message"), "\n".join(self.data_lines),
                                        self.pending.get("id"), self.retry))
                self.pending, self.data_lines = {}, []
                continue
            if line.startswith(":"):
                self.comments.append(line[1:])
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self.data_lines.append(value)
            elif name in ("event", "id"):
                self.pending[name] = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)


class SSEClient:
    """Reads an event stream in a thread; tests await events with deadlines, never sleeps."""

    def __init__(self, http: requests.Session, url: str, last_event_id=None, params=None, headers=None):
        headers = {"Accept": "text/event-stream", **(headers or {})}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.response = http.get(url, params=params, headers=headers, stream=True, timeout=(5, 60))
        self.status = self.response.status_code
        self.headers = self.response.headers
        self.parser = _Parser()
        self.queue = queue.Queue()
        self.closed = threading.Event()
        self.first_chunk = None
        self.reader = None
        if self.status == 200:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self):
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                text = chunk.decode("utf-8")
                if self.first_chunk is None:
                    self.first_chunk = text
                for event in self.parser.feed(text):
                    self.queue.put(event)
        except Exception:  # noqa: BLE001, S110 - the connection ending is what `closed` reports
            pass
        finally:
            self.closed.set()
            self.queue.put(None)

    def next(self, timeout: float = 10) -> Event:
        """The next event; AssertionError if none arrives in time or the stream ends."""
        try:
            event = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None
        if event is None:
            self.queue.put(None)
            raise AssertionError("the stream ended")
        return event

    def next_durable(self, timeout: float = 10) -> Event:
        """The next event that carries an id (skipping ready, ping and presence)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if event.id is not None:
                return event

    def wait_for(self, predicate, timeout: float = 10) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if predicate(event):
                return event

    def wait_closed(self, timeout: float = 10) -> bool:
        return self.closed.wait(timeout)

    def close(self):
        """Hang up now, as a closed tab does. The socket is shut down first: closing the response alone
        waits for the reader thread's blocked read, i.e. for the server's next bytes (up to a heartbeat)."""
        connection = self.response.raw.connection
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.response.close()
        # The session may hand this connection to the next request: the reader must be done with it first
        # (else the two share it, and the next request fails with "ResponseNotReady").
        if self.reader is not None:
            self.reader.join(5)


# Helpers for the live-events tests.

_OPERATOR_APPS = {}


@contextmanager
def operator_context(server: LiveServer):
    """An app context on the live server's database and Redis, as an operator's `flask` command has;
    it holds no connection afterwards (the run's database is dropped at the end)."""
    from chat import create_app  # noqa: PLC0415
    from chat.extensions import db  # noqa: PLC0415

    services, shards = server.services, int(server.env.get("CHAT_SHARDS", 1))
    key = (services["database_url"], services["redis_url"], services["prefix"], shards)
    app = _OPERATOR_APPS.get(key)
    if app is None:
        app = _OPERATOR_APPS[key] = create_app(
            {"TESTING": True, "SQLALCHEMY_DATABASE_URI": services["database_url"], "REDIS_URL": services["redis_url"],
             "REDIS_CLUSTER": services.get("cluster", False), "CHAT_SHARDS": shards,
             "CHAT_REDIS_PREFIX": services["prefix"], "CHAT_PASSWORD_METHOD": "pbkdf2:sha256:1000", "SECRET_KEY": "test"},
            instance_path=services["instance"])
    with app.app_context():
        try:
            yield app
        finally:
            db.session.remove()
            db.engine.dispose()


def live_moderator(server: LiveServer, username=None) -> HttpUser:
    """A moderator created as an operator does (`register_user(..., role="moderator")` in an app
    context, what `flask users create --moderator` runs), then signed in over HTTP."""
    from chat.actions import register_user  # noqa: PLC0415

    username = username or unique("mod")
    with operator_context(server):
        register_user(username, PASSWORD, role="moderator")
    moderator = HttpUser(server.url)
    response = moderator.login(username)
    response.raise_for_status()
    return moderator


def another_session(user: HttpUser, server: LiveServer) -> HttpUser:
    """The same account signed in on another browser: a session of its own, on `server`."""
    other = HttpUser(server.url)
    response = other.login(user.user["username"])
    assert response.status_code == 200, response.text
    return other


def same_session(user: HttpUser, server: LiveServer) -> HttpUser:
    """The same browser session (cookie and CSRF token) talking to another server."""
    other = HttpUser(server.url)
    other.http, other.csrf, other.user = user.http, user.csrf, user.user
    return other




def wait_until(condition, timeout: float = 10, interval: float = 0.05, what: str = "condition"):
    """Ask again until `condition()` is truthy (for state only visible by asking); its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(interval)


def metric(server: LiveServer, name: str) -> float:
    """A gauge or counter from the server's /metrics, summed over its labels and workers."""
    total = 0.0
    for line in requests.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def history_ids(user: HttpUser, slug: str) -> list[str]:
    """Every message id of a room, oldest first, paging back through the history endpoint."""
    ids, before = [], None
    while True:
        params = {"limit": 200, **({"before": before} if before else {})}
        page = user.get(f"/api/rooms/{slug}/messages", params=params)
        page.raise_for_status()
        ids[:0] = [message["id"] for message in page.json()["messages"]]
        if not page.json()["has_more"]:
            return ids
        before = page.json()["messages"][0]["id"]


def events_path(slug: str) -> str:
    return f"/api/rooms/{slug}/events"


def poll_path(slug: str) -> str:
    return f"/api/rooms/{slug}/poll"


def posted(user: HttpUser, slug: str, body: str | None = None) -> dict:
    """Post a message and return it, asserting it was accepted."""
    response = user.send(slug, body or unique("body "))
    assert response.status_code == 201, response.text
    return response.json()["message"]


def no_polls_waiting(server: LiveServer) -> float:
    """Wait until no poll waits on the server (earlier tests' abandoned polls end within seconds);
    returns the gauge's value then, 0, for a caller that awaits its own poll's rise."""
    wait_until(lambda: metric(server, "chat_polls_waiting") == 0, timeout=30, what="earlier polls to end")
    return 0.0
