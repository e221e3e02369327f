"""Settings: the one place that reads the environment."""
import os
import secrets
from pathlib import Path

# The service's own settings and their defaults (API.md, "Configuration").
CHAT_DEFAULTS = {
    "CHAT_MAX_MESSAGE_CHARS": 2000,
    "CHAT_MAX_REQUEST_BYTES": 64 * 1024,
    # A request body must be in within this many seconds of the headers, else 408: a client that
    # dribbles a body (or stops) cannot hold a connection for ever. 0 turns the deadline off.
    "CHAT_BODY_TIMEOUT_SECONDS": 10,
    "CHAT_RATE_LIMIT": "10/10",
    "CHAT_RETRY_MS": 3000,
    "CHAT_HEARTBEAT_SECONDS": 15,
    "CHAT_POLL_TIMEOUT_SECONDS": 25,
    "CHAT_STREAM_MAX_SECONDS": 3600,
    "CHAT_STREAM_MAXLEN": 10000,
    # Redis keeps a room's events, and the feeds' firehose, for at most this long (besides CHAT_STREAM_MAXLEN):
    # an older position is served from the database (rooms) or answered `reset` (feeds). 0: no age bound.
    "CHAT_STREAM_MAX_AGE_SECONDS": 24 * 3600,
    "CHAT_MAX_ROOMS_PER_STREAM": 50,
    "CHAT_MAX_STREAMS_PER_USER": 20,
    "CHAT_LOGIN_FAILURE_LIMIT": "10/300",  # failed logins per account (any address), then 429 until the window ends
    "CHAT_REGISTER_LIMIT": "100/60",  # registration requests per client address
    "CHAT_ROOM_CREATE_LIMIT": "10/3600",  # rooms a user (not a moderator) may create
    # Reports an account may make (each is a row and an event on every moderator's dashboard): far above
    # what a person flags in an hour, far below what a script could bury the queue with.
    "CHAT_REPORT_LIMIT": "20/3600",
    # Per account, across every room (CHAT_RATE_LIMIT counts per room): a hundred rooms must not mean a
    # hundred times the rate, nor a stream of maximum-size messages fill Redis.
    "CHAT_USER_RATE_LIMIT": "30/10",  # messages per user, all rooms together
    "CHAT_USER_BYTES_LIMIT": "131072/60",  # bytes of message text (UTF-8) per user, all rooms together
    "CHAT_TRUSTED_PROXIES": 1,  # hops of X-Forwarded-* to believe (Heroku's router is one; 0: no proxy)
    # A session ends after this long without a request (an open stream or poll counts: it reconnects)...
    "CHAT_SESSION_IDLE_MINUTES": 7 * 24 * 60,  # a week: survives weekends and long weekends, not a forgotten machine
    # ...and at the latest this long after sign-in, however busy (bounds the life of a stolen cookie).
    "CHAT_SESSION_MAX_DAYS": 30,
    # Not in API.md: operational knobs of this implementation.
    "CHAT_REDIS_PREFIX": "chat",  # key namespace; tests use one per run
    "CHAT_EMBEDDED_REDIS_MAXMEMORY": "512mb",  # the private Redis's bound (with no REDIS_URL)
    "CHAT_METRICS_TOKEN": "",  # set: /metrics asks for `Authorization: Bearer <token>`
    "CHAT_LOG_LEVEL": "INFO",  # INFO: a JSON line per request and per stream end; WARNING: problems only
    # A stream whose client takes no bytes for this long is ended (it resumes from its last id when it
    # reads again): a client that stops reading must not pin a greenlet and its buffers for ever.
    "CHAT_SEND_TIMEOUT_SECONDS": 30,
    # A room's stream resumed from further back than this many events gets `reset` (the client reloads
    # history, cheaper than a long replay); any catch-up is read a page at a time (resume.PAGE).
    "CHAT_RESUME_MAX_EVENTS": 1000,
    "CHAT_MAX_STREAMS_PER_PROCESS": 8000,  # past it, new streams get 503 + Retry-After
    "CHAT_SUBSCRIBER_QUEUE": 1000,  # events buffered per slow client before it is cut
    "CHAT_PRESENCE_TTL_SECONDS": 30,
    "CHAT_REDIS_POOL_SIZE": 6,  # per process (per node, on a cluster), besides the hub's own reader connection
    # Rooms are spread over this many shards (streams.shard_of), each one hash-tagged Redis Cluster slot with its
    # own firehose, read by one reader per process (docs/SCALING.md). 1 to 16: a feed's position holds one id per
    # shard. Changing it moves rooms between shards: see docs/DEPLOY.md before you do.
    "CHAT_SHARDS": 1,
    "CHAT_PASSWORD_METHOD": "scrypt",  # werkzeug's hash method; tests use a cheaper one
    # Test-only fault injection: `name=kill,...` SIGKILLs the worker at that point of the write path.
    "CHAT_FAILPOINTS": "",
}
MAX_SHARDS = 16  # a feed's position carries an id per shard, in every event's `id:` line
_INT_SETTINGS = {k for k, v in CHAT_DEFAULTS.items() if isinstance(v, int)}


def database_url(url: str | None, instance_path: str) -> str:
    """Normalise DATABASE_URL: Heroku's `postgres://` means PostgreSQL through psycopg 3."""
    if not url:
        return "sqlite:///" + os.path.join(instance_path, "chat.sqlite3")
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _secret_key(instance_path: str) -> str:
    """A random key generated once and kept in instance/, so restarts keep sessions' CSRF context."""
    path = Path(instance_path, "secret_key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def load(instance_path: str, environ=os.environ) -> dict:
    """Build the Flask config mapping from the environment."""
    settings = dict(CHAT_DEFAULTS)
    for key in CHAT_DEFAULTS:
        if key in environ:
            settings[key] = int(environ[key]) if key in _INT_SETTINGS else environ[key]
    settings["SQLALCHEMY_DATABASE_URI"] = database_url(environ.get("DATABASE_URL"), instance_path)
    settings["REDIS_URL"] = environ.get("REDIS_URL") or None  # None: the embedded server
    # REDIS_URL names a node of a Redis Cluster: use redis-py's cluster client (docs/DEPLOY.md, "Redis Cluster").
    settings["REDIS_CLUSTER"] = _flag(environ.get("REDIS_CLUSTER", ""), "REDIS_CLUSTER")
    settings["SECRET_KEY"] = environ.get("SECRET_KEY") or None  # None: see finish()
    return settings


def finish(config, instance_path: str) -> None:
    """Derive settings that depend on others, after tests' overrides are applied."""
    config["SQLALCHEMY_DATABASE_URI"] = database_url(config["SQLALCHEMY_DATABASE_URI"], "")
    config.setdefault("REDIS_CLUSTER", False)
    if config["REDIS_CLUSTER"] and not config.get("REDIS_URL"):
        raise RuntimeError("REDIS_CLUSTER=1 needs REDIS_URL naming a node of the cluster (the embedded Redis is not one)")
    if "," in (config.get("REDIS_URL") or "") and not config["REDIS_CLUSTER"]:
        raise RuntimeError("REDIS_URL names several nodes: only a Redis Cluster has them (set REDIS_CLUSTER=1)")
    if not 1 <= config["CHAT_SHARDS"] <= MAX_SHARDS:
        raise RuntimeError(f"CHAT_SHARDS={config['CHAT_SHARDS']} is out of range: 1 to {MAX_SHARDS}")
    uri = config["SQLALCHEMY_DATABASE_URI"]
    if not config.get("SECRET_KEY"):
        if not uri.startswith("sqlite"):
            # A shared database means several machines, which must sign with one key (API.md, Configuration).
            raise RuntimeError("SECRET_KEY must be set when DATABASE_URL names a shared database "
                               "(every machine needs the same key); see docs/DEPLOY.md")
        config["SECRET_KEY"] = _secret_key(instance_path)
    if uri.startswith("sqlite"):
        # WAL and a busy timeout: a writer waits briefly instead of failing (DESIGN.md, gevent pitfall).
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 2}})
    else:
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {
            "pool_size": 10, "max_overflow": 10, "pool_timeout": 5, "pool_pre_ping": True,
            # A stalled server must not hang a request (or, under gevent, pile up greenlets): keepalives and
            # tcp_user_timeout notice a dead peer, statement_timeout bounds a query that never answers.
            "connect_args": {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                             "keepalives_count": 3, "tcp_user_timeout": 10000, "options": "-c statement_timeout=10000"},
        })
    # Logs never carry SQL parameters (token hashes, CSRF tokens, message text), also when the database fails.
    config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault("hide_parameters", True)
    config["MAX_CONTENT_LENGTH"] = config["CHAT_MAX_REQUEST_BYTES"]
    for key in ("CHAT_SESSION_IDLE_MINUTES", "CHAT_SESSION_MAX_DAYS"):
        if config[key] < 1:
            raise RuntimeError(f"{key} must be at least 1")
    config["CHAT_RATE_LIMIT_PARSED"] = rate(config["CHAT_RATE_LIMIT"])
    config["CHAT_LOGIN_FAILURE_LIMIT_PARSED"] = rate(config["CHAT_LOGIN_FAILURE_LIMIT"])
    config["CHAT_REGISTER_LIMIT_PARSED"] = rate(config["CHAT_REGISTER_LIMIT"])
    config["CHAT_ROOM_CREATE_LIMIT_PARSED"] = rate(config["CHAT_ROOM_CREATE_LIMIT"])
    config["CHAT_REPORT_LIMIT_PARSED"] = rate(config["CHAT_REPORT_LIMIT"])
    config["CHAT_USER_RATE_LIMIT_PARSED"] = rate(config["CHAT_USER_RATE_LIMIT"])
    config["CHAT_USER_BYTES_LIMIT_PARSED"] = rate(config["CHAT_USER_BYTES_LIMIT"])
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"


def _flag(value: str, name: str) -> bool:
    """A boolean setting: 1/true/yes or 0/false/no (or empty), ignoring case; anything else is refused."""
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    if value.strip().lower() in ("", "0", "false", "no"):
        return False
    raise RuntimeError(f"{name} must be 1 or 0, not {value!r}")


def rate(spec: str) -> tuple[int, int]:
    """Parse `<count>/<seconds>`."""
    count, seconds = spec.split("/")
    return int(count), int(seconds)
