"""Extensions, created unbound here and bound to an app in create_app."""
import redis
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

from . import embedded_redis

# Named constraints so Alembic migrations work on SQLite and PostgreSQL alike.
# expire_on_commit=False: after a commit, objects stay readable without opening a new transaction,
# so the write path can call Redis with no transaction held (DESIGN.md, gevent pitfall).
db = SQLAlchemy(session_options={"expire_on_commit": False}, metadata=MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}))
migrate = Migrate()
SQLITE_BUSY_TIMEOUT_MS = 2000  # how long a connection waits for another's write lock (writer.py waits its own way)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets readers run beside the writer; the busy timeout bounds a wait for the write lock.
    if type(dbapi_connection).__module__ == "sqlite3":
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # In WAL, NORMAL skips the fsync per commit (which would stall every greenlet of the worker):
        # a commit survives a crash of the process, though not a power loss (docs/ARCHITECTURE.md).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


class RedisClient:
    """The app's Redis connection pool: bounded, with timeouts, so a reconnect storm cannot grow it.

    Created on first use, so commands that never touch Redis (`flask db upgrade`) start no server.
    """

    def init_app(self, app):
        app.extensions["chat_redis"] = None

    @staticmethod
    def get(app) -> redis.Redis:
        client = app.extensions["chat_redis"]
        if client is None:
            url = app.config["REDIS_URL"] or embedded_redis.ensure_running(
                app.instance_path, app.config["CHAT_EMBEDDED_REDIS_MAXMEMORY"])
            app.config["REDIS_URL"] = url
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=app.config["CHAT_REDIS_POOL_SIZE"], timeout=5, socket_timeout=5,
                socket_connect_timeout=3, health_check_interval=30, decode_responses=True)
            client = app.extensions["chat_redis"] = redis.Redis(connection_pool=pool)
        return client


redis_client = RedisClient()
