"""Extensions, created unbound here and bound to an app in create_app."""
from urllib.parse import urlsplit

import redis
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
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
# What a Redis call raises when Redis fails. redis-py's cluster client raises some of it outside RedisError:
# SlotNotCoveredError while no node serves a key's slot (a failover, a resharding), among others.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)
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


def connect(url: str, *, cluster: bool, max_connections: int, socket_timeout: float = 5,
            known_nodes: list[ClusterNode] = ()) -> redis.Redis | RedisCluster:
    """A client with bounded pools and timeouts, so a reconnect storm cannot grow them: a request waits up to
    5 s for a free connection, then fails (503). With `cluster`, `url` names any node of a Redis Cluster, or
    several separated by commas (`redis://a:6379/0,b:6379`: the first URL's scheme and credentials are
    everyone's), and redis-py's cluster client finds the others, with a pool of `max_connections` per node;
    it asks every node named and `known_nodes` too, so it starts while some of them are down."""
    options = dict(max_connections=max_connections, timeout=5, socket_timeout=socket_timeout,
                   socket_connect_timeout=3, decode_responses=True)
    if cluster:
        first, *others = url.split(",")
        startup_nodes = [*map(_cluster_node, others), *(ClusterNode(node.host, node.port) for node in known_nodes)]
        try:
            return RedisCluster(url=first, startup_nodes=startup_nodes,
                                connection_pool_class=redis.BlockingConnectionPool, **options)
        except RedisClusterException as error:  # no node answered: unavailable, as a Redis that is down (503)
            raise redis.ConnectionError(f"Redis Cluster unreachable: {error}") from error
    # from_pool: closing the client closes its pool (the hub's reader is replaced after a failure).
    return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(url, health_check_interval=30, **options))


def _cluster_node(address: str) -> ClusterNode:
    """`host:port` or a redis:// URL, as a cluster's startup node."""
    parsed = urlsplit(address.strip() if "://" in address else f"redis://{address.strip()}")
    return ClusterNode(parsed.hostname, parsed.port or 6379)


class RedisClient:
    """The app's Redis client (one Redis, or a Redis Cluster with REDIS_CLUSTER=1).

    Created on first use, so commands that never touch Redis (`flask db upgrade`) start no server.
    """

    def init_app(self, app):
        app.extensions["chat_redis"] = None

    @staticmethod
    def url(app) -> str:
        if not app.config["REDIS_URL"]:
            app.config["REDIS_URL"] = embedded_redis.ensure_running(
                app.instance_path, app.config["CHAT_EMBEDDED_REDIS_MAXMEMORY"])
        return app.config["REDIS_URL"]

    def get(self, app) -> redis.Redis | RedisCluster:
        client = app.extensions["chat_redis"]
        if client is None:
            client = app.extensions["chat_redis"] = connect(
                self.url(app), cluster=app.config["REDIS_CLUSTER"], max_connections=app.config["CHAT_REDIS_POOL_SIZE"])
        return client

    def reader(self, app) -> redis.Redis | RedisCluster:
        """A client of its own for the hub's blocking XREAD: one connection (per node), and a socket timeout
        above the read's 5 s block. On a cluster it starts from the nodes the app's client knows now: the
        node REDIS_URL names may be the master that just failed (the hub makes a new reader after a failure)."""
        cluster = app.config["REDIS_CLUSTER"]
        return connect(self.url(app), cluster=cluster, max_connections=1, socket_timeout=30,
                       known_nodes=self.get(app).get_nodes() if cluster else ())


redis_client = RedisClient()
