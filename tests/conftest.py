"""Shared fixtures: real Redis and a real database, isolated per run and per test.

With REDIS_URL / DATABASE_URL set, tests use those servers (a key prefix and a fresh PostgreSQL
database per run); without them, the embedded defaults (a private Redis, SQLite in a temp dir).
"""
import os
import uuid

import pytest
import sqlalchemy

from chat import create_app, embedded_redis
from chat.config import MAX_SHARDS, database_url
from chat.extensions import connect, db
from chat.streams import Streams
from tests.faults import PrivateRedis
from tests.support import AuthActions, LiveServer, run_migrations

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """URLs of the Redis and database this run uses, created fresh for the run."""
    base = tmp_path_factory.mktemp("services")
    redis_url = os.environ.get("REDIS_URL") or embedded_redis.ensure_running(str(base / "instance"))
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url:
        admin_engine = sqlalchemy.create_engine(database_url(admin_url, ""), isolation_level="AUTOCOMMIT")
        name = f"chat_test_{RUN_ID}"
        with admin_engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        db_url = admin_engine.url.set(database=name).render_as_string(hide_password=False)
    else:
        db_url = "sqlite:///" + str(base / "chat.sqlite3")
    run_migrations(db_url, str(base / "instance"))
    yield {"redis_url": redis_url, "database_url": db_url, "prefix": f"test{RUN_ID}", "instance": str(base / "instance")}
    if admin_url:
        with admin_engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def app_config(services, **overrides) -> dict:
    return {"TESTING": True, "SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": services["database_url"],
            "REDIS_URL": services["redis_url"],
            "CHAT_REDIS_PREFIX": services["prefix"], "CHAT_PASSWORD_METHOD": "pbkdf2:sha256:1000",
            **overrides}


def reset_state(services) -> None:
    """Empty every table and every per-room Redis key; the firehose and control streams stay,
    because a live server's hub is reading them, and so does the record that this Redis was checked
    against the database (emptying a database does not lose events)."""
    engine = sqlalchemy.create_engine(services["database_url"])
    with engine.begin() as connection:
        tables = [table.name for table in reversed(db.metadata.sorted_tables)]
        if engine.dialect.name == "postgresql":
            connection.execute(sqlalchemy.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(sqlalchemy.text(f"DELETE FROM {table}"))
    engine.dispose()
    client = connect(services["redis_url"], cluster=services.get("cluster", False), max_connections=4)
    names = Streams(client, services["prefix"], 1)
    keep = {names.control_key(), *(key for shard in range(MAX_SHARDS) for key in (
        names.firehose_key(shard), names.incarnation_key(shard), names.presence_changes_key(shard)))}
    doomed = [key for pattern in (f"{services['prefix']}:*", f"{{{services['prefix']}:*")  # untagged, hash-tagged
              for key in client.scan_iter(pattern, count=1000) if key not in keep]
    if doomed:
        client.delete(*doomed)
    client.close()


def close_app(application) -> None:
    """Release what a test's app holds: its hub's reader stops (quietly, when Redis goes at exit) and its
    database connections close."""
    if application.extensions.get("chat_hub") is not None:
        application.extensions["chat_hub"].shutting_down = True
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(services):
    reset_state(services)
    application = create_app(app_config(services), instance_path=services["instance"])
    yield application
    close_app(application)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def make_client(app):
    """More signed-in browsers: `make_client()` returns a fresh test client with its own cookies."""
    return lambda: AuthActions(app.test_client())


@pytest.fixture(scope="session")
def live_server(services):
    """A real gunicorn with gevent workers on a free port, sharing the run's Redis and database."""
    server = LiveServer(services)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live(live_server, services):
    """The live server, with the tables and room keys emptied for this test."""
    reset_state(services)
    return live_server


_OUTPUT_AT = pytest.StashKey[dict]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """Where each live server's output ends as the test starts (a server started later: from its start)."""
    item.stash[_OUTPUT_AT] = {server: server.output_size() for server in LiveServer.started}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure shows, beside it, what the live servers logged during the test that may say why (warnings,
    errors, resets, restarts: LiveServer.notable_output), since a torture's assertion alone often cannot."""
    report = (yield).get_result()
    if report.failed:
        since = item.stash.get(_OUTPUT_AT, {})
        for server in LiveServer.started:
            lines = server.notable_output(since.get(server, 0))
            if lines:
                report.sections.append((f"{server.url} (gunicorn) during the test: warnings, errors, resets, "
                                        f"restarts (last {len(lines)})", "\n".join(lines)))


def pytest_sessionfinish(session, exitstatus):
    """Skipped tests do not count as passing: fail the run if any test was skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture
def make_app(app, services):
    """Apps with settings overridden, e.g. `make_app(CHAT_RATE_LIMIT="2/60")`, sharing `app`'s emptied state."""
    built = []

    def build(**overrides):
        built.append(create_app(app_config(services, **overrides), instance_path=services["instance"]))
        return built[-1]

    yield build
    for application in built:
        close_app(application)


@pytest.fixture
def make_moderator(app):
    """`make_moderator(on=app)`: a moderator created as deployers do (not through the API), signed in."""
    from chat import actions  # noqa: PLC0415
    from tests.support import PASSWORD, unique  # noqa: PLC0415

    def build(username=None, on=None):
        target = on or app
        username = username or unique("mod")
        with target.app_context():
            actions.register_user(username, PASSWORD, role="moderator")
        moderator = AuthActions(target.test_client())
        assert moderator.login(username).status_code == 200
        return moderator

    return build


@pytest.fixture
def member(auth):
    """A signed-in user (role `user`)."""
    assert auth.register().status_code == 201
    return auth


@pytest.fixture
def room(member):
    """A room's slug, created by `member`."""
    return member.create_room()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own, for tests that stop, fill or cut it (never the machine's)."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()
