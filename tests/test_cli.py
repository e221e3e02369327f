"""API.md "Command line": `flask --app chat db upgrade` and `flask --app chat users ...` (README lists them)."""
import logging
from contextlib import contextmanager

import pytest
import sqlalchemy

from tests.support import PASSWORD, AuthActions, assert_error, assert_fields, unique


@pytest.fixture
def flask_cli(app):
    """`flask_cli("users", "create", ...)` runs a command as `flask --app chat ...` would, on the test's app."""
    return lambda *args, on=None, **kwargs: (on or app).test_cli_runner().invoke(args=list(args), **kwargs)


@contextmanager
def logging_kept():
    """Alembic's env.py applies alembic.ini's logging config (and disables other loggers): undo that for later tests."""
    root, loggers = logging.getLogger(), logging.Logger.manager.loggerDict
    saved_root = (root.level, root.handlers[:])
    saved = {name: (logger.level, logger.disabled, logger.handlers[:], logger.propagate)
             for name, logger in loggers.items() if isinstance(logger, logging.Logger)}
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, (level, disabled, handlers, propagate) in saved.items():
            logger = loggers[name]
            logger.setLevel(level)
            logger.disabled, logger.handlers[:], logger.propagate = disabled, handlers, propagate


def sign_in(app, username, password=PASSWORD):
    browser = AuthActions(app.test_client())
    return browser, browser.login(username, password)


# users create

def test_users_create_makes_a_user_who_can_sign_in(app, flask_cli):
    username = unique()
    result = flask_cli("users", "create", username, "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    browser, response = sign_in(app, username)
    assert response.status_code == 200 and response.json["user"]["role"] == "user"
    assert_error(browser.get("/api/moderation/actions"), 403, "forbidden")


def test_users_create_moderator_makes_a_moderator(app, flask_cli):
    username = unique()
    assert flask_cli("users", "create", username, "--password", PASSWORD, "--moderator").exit_code == 0
    browser, response = sign_in(app, username)
    assert_fields(response.json["user"], username=username, role="moderator")
    assert browser.get("/api/moderation/actions").status_code == 200


def test_users_create_asks_for_the_password_when_not_given(app, flask_cli):
    username = unique()
    result = flask_cli("users", "create", username, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # the prompt hides what is typed
    assert sign_in(app, username)[1].status_code == 200


def test_users_create_refuses_a_taken_username_ignoring_case(app, flask_cli, make_client):
    assert make_client().register("Taken_name").status_code == 201
    for taken in ["Taken_name", "taken_name", "TAKEN_NAME"]:
        result = flask_cli("users", "create", taken, "--password", "another password", "--moderator")
        assert result.exit_code != 0, taken
        assert_error(sign_in(app, taken, "another password")[1], 401, "invalid_credentials")
    assert sign_in(app, "Taken_name")[1].json["user"]["role"] == "user"


def test_users_create_refuses_what_registration_would(app, flask_cli):
    for username, password in [("ab", PASSWORD), ("has space", PASSWORD), ("x" * 33, PASSWORD), ("newline\n", PASSWORD),
                               ("valid_name", "short"), ("valid_name", "x" * 257)]:
        assert flask_cli("users", "create", username, "--password", password).exit_code != 0, (username, password)
        assert_error(sign_in(app, username.strip(), password)[1], 401, "invalid_credentials")


# users promote

def test_users_promote_makes_an_existing_user_a_moderator(flask_cli, member):
    result = flask_cli("users", "promote", member.username)
    assert result.exit_code == 0, result.output
    assert member.get("/api/auth/me").json["user"]["role"] == "moderator"  # the running session sees it at once
    assert member.get("/api/moderation/actions").status_code == 200


def test_users_promote_twice_is_harmless(flask_cli, member):
    assert flask_cli("users", "promote", member.username).exit_code == 0
    assert flask_cli("users", "promote", member.username).exit_code == 0
    assert member.get("/api/auth/me").json["user"]["role"] == "moderator"


def test_users_promote_of_an_unknown_user_fails(flask_cli):
    username = unique()
    result = flask_cli("users", "promote", username)
    assert result.exit_code != 0 and username in result.output


# users demote

def test_users_demote_makes_a_moderator_a_user_again(flask_cli, make_moderator):
    moderator = make_moderator()
    result = flask_cli("users", "demote", moderator.username)
    assert result.exit_code == 0, result.output
    assert moderator.get("/api/auth/me").json["user"]["role"] == "user"
    assert_error(moderator.get("/api/moderation/actions"), 403, "forbidden")
    assert flask_cli("users", "demote", moderator.username).exit_code == 0  # twice is harmless


def test_users_demote_or_unban_or_set_password_of_an_unknown_user_fails(flask_cli):
    username = unique()
    for command in ("demote", "unban", "set-password"):
        result = flask_cli("users", command, username, input=f"{PASSWORD}\n{PASSWORD}\n")
        assert result.exit_code != 0 and username in result.output, (command, result.output)


# users set-password

def test_users_set_password_asks_twice_hides_it_and_ends_the_users_sessions(app, flask_cli, member, make_client):
    other_browser = make_client()
    assert other_browser.login(member.username).status_code == 200
    new_password = "a new password"
    result = flask_cli("users", "set-password", member.username, input=f"{new_password}\n{new_password}\n")
    assert result.exit_code == 0, result.output
    assert new_password not in result.output
    assert result.output.count("assword") >= 2  # asked, then asked to repeat
    for browser in (member, other_browser):
        assert_error(browser.get("/api/auth/me"), 401, "not_authenticated")
    assert_error(sign_in(app, member.username)[1], 401, "invalid_credentials")
    assert sign_in(app, member.username, new_password)[1].status_code == 200


def test_users_set_password_asks_again_until_both_entries_match(app, flask_cli, member):
    result = flask_cli("users", "set-password", member.username,
                       input="first try one\nfirst try two\nsecond try\nsecond try\n")
    assert result.exit_code == 0, result.output
    assert sign_in(app, member.username, "second try")[1].status_code == 200


def test_users_set_password_refuses_what_registration_would(app, flask_cli, member):
    for password in ("short", "x" * 257):
        result = flask_cli("users", "set-password", member.username, input=f"{password}\n{password}\n")
        assert result.exit_code != 0, password
    assert member.get("/api/auth/me").status_code == 200  # nothing changed
    assert sign_in(app, member.username)[1].status_code == 200


def test_users_set_password_takes_no_password_argument(flask_cli, member):
    assert flask_cli("users", "set-password", member.username, "--password", "on the command line").exit_code != 0
    assert flask_cli("users", "set-password", member.username, "on the command line").exit_code != 0


# users unban

def test_users_unban_lifts_a_ban_and_restores_the_kept_session(app, flask_cli, make_moderator, member):
    make_moderator().ban(member.username)
    assert_error(member.get("/api/auth/me"), 403, "banned")
    result = flask_cli("users", "unban", member.username)
    assert result.exit_code == 0, result.output
    assert member.get("/api/auth/me").status_code == 200
    assert sign_in(app, member.username)[1].status_code == 200
    again = flask_cli("users", "unban", member.username)
    assert again.exit_code == 0 and "not banned" in again.output


# users list

def test_users_list_shows_everyone_by_name_with_role_and_ban(flask_cli, make_moderator, make_client):
    names = {}
    for key in ("b_user", "A_mod", "c_banned"):
        browser = make_client()
        browser.register(key + unique(""))
        names[key] = browser.username
    moderator = make_moderator("a_" + unique(""))
    flask_cli("users", "promote", names["A_mod"])
    moderator.ban(names["c_banned"])
    result = flask_cli("users", "list")
    assert result.exit_code == 0, result.output
    moderators = sorted([f"{names['A_mod']}\tmoderator", f"{moderator.username}\tmoderator"], key=str.lower)
    assert result.output.splitlines() == moderators + [f"{names['b_user']}\tuser", f"{names['c_banned']}\tuser\tbanned"]
    assert flask_cli("users", "list", "--moderators").output.splitlines() == moderators


# db upgrade

def test_db_upgrade_creates_the_schema_and_is_safe_to_run_again(make_app, flask_cli, tmp_path):
    fresh = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    with logging_kept():
        first = flask_cli("db", "upgrade", on=fresh)
        second = flask_cli("db", "upgrade", on=fresh)
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    with fresh.app_context():
        from chat.extensions import db  # noqa: PLC0415

        tables = set(sqlalchemy.inspect(db.engine).get_table_names())
    assert {"users", "sessions", "rooms", "messages", "mutes", "bans", "moderation_actions"} <= tables
    username = unique()
    assert flask_cli("users", "create", username, "--password", PASSWORD, on=fresh).exit_code == 0
    assert sign_in(fresh, username)[1].status_code == 200


def test_db_upgrade_on_a_current_database_keeps_its_data(app, flask_cli, member, room):
    message = member.send(room, "still here").json["message"]
    with logging_kept():
        result = flask_cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert member.get("/api/auth/me").status_code == 200
    assert member.history(room).json["messages"] == [message]


def test_db_upgrade_gives_rooms_and_their_stored_room_updated_events_slow_mode(make_app, flask_cli, tmp_path):
    """A database from before slow mode: its rooms get it off, and replays of its room_updated events show so."""
    import json  # noqa: PLC0415

    old = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with logging_kept():
        assert flask_cli("db", "upgrade", "324ad5dbe05e", on=old).exit_code == 0
    room = {"slug": "old", "name": "Old", "created_at": "2026-11-25T19:00:00.000Z", "locked": True, "online_count": 2}
    with old.app_context():
        from chat.extensions import db  # noqa: PLC0415

        with db.engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                "INSERT INTO users (id, username, username_key, password_hash, role, created_at) "
                "VALUES (1, 'mod', 'mod', 'x', 'moderator', '2026-11-25 19:00:00')"))
            connection.execute(sqlalchemy.text(
                "INSERT INTO rooms (id, slug, name, locked, created_at) "
                "VALUES (1, 'old', 'Old', 1, '2026-11-25 19:00:00')"))
            connection.execute(sqlalchemy.text(
                "INSERT INTO moderation_actions (moderator_id, action, room_id, target, created_at, event_ms, "
                "event_seq, event_type, event_data) "
                "VALUES (1, 'lock', 1, 'old', '2026-11-25 19:00:00', 5, 0, 'room_updated', :data)"),
                {"data": json.dumps({"room": room})})
    with logging_kept():
        result = flask_cli("db", "upgrade", on=old)
    assert result.exit_code == 0, result.output
    with old.app_context():
        from chat.ids import ZERO, EventId  # noqa: PLC0415
        from chat.models import events_between, find_room  # noqa: PLC0415

        upgraded = find_room("old")
        assert upgraded.to_api(2) == {**room, "slow_mode_seconds": 0}
        assert events_between(upgraded.id, ZERO, EventId(10, 0), 10) == [
            (EventId(5, 0), "room_updated", {"room": {**room, "slow_mode_seconds": 0}})]
        db.session.remove()


def test_db_upgrade_gives_each_room_the_counter_of_its_events(make_app, flask_cli, tmp_path):
    """A database from before the record gave ids: each room's counter starts at its highest event id
    (messages, deletions, moderation events), so the next id is above every one handed out; messages the
    old two-step path left pending (never acknowledged, never shown) are removed."""
    old = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with logging_kept():
        assert flask_cli("db", "upgrade", "b3e8f0a2c6d4", on=old).exit_code == 0
    with old.app_context():
        from chat.extensions import db  # noqa: PLC0415

        with db.engine.begin() as connection:
            run = lambda sql, **params: connection.execute(sqlalchemy.text(sql), params)  # noqa: E731
            run("INSERT INTO users (id, username, username_key, password_hash, role, created_at) "
                "VALUES (1, 'ann', 'ann', 'x', 'moderator', '2026-11-25 19:00:00')")
            for room_id in (1, 2, 3):
                run("INSERT INTO rooms (id, slug, name, locked, created_at) "
                    "VALUES (:id, :slug, 'R', 0, '2026-11-25 19:00:00')", id=room_id, slug=f"r{room_id}")
            message = ("INSERT INTO messages (write_key, room_id, sender_id, body, created_at, event_ms, event_seq, "
                       "deleted_event_ms, deleted_event_seq) VALUES (:key, :room, 1, 'b', '2026-11-25 19:00:00', "
                       ":ms, :seq, :dms, :dseq)")
            run(message, key="a", room=1, ms=100, seq=0, dms=None, dseq=None)
            run(message, key="b", room=1, ms=100, seq=1, dms=300, dseq=0)  # deleted later
            run(message, key="c", room=1, ms=None, seq=None, dms=None, dseq=None)  # pending
            run(message, key="d", room=2, ms=50, seq=0, dms=None, dseq=None)
            run("INSERT INTO moderation_actions (moderator_id, action, room_id, target, created_at, event_ms, "
                "event_seq, event_type, event_data) VALUES (1, 'lock', 2, 'r2', '2026-11-25 19:00:00', 70, 2, "
                "'room_updated', '{}')")
    with logging_kept():
        result = flask_cli("db", "upgrade", on=old)
    assert result.exit_code == 0, result.output
    with old.app_context():
        from chat.models import Message, Room, allocate_event_id  # noqa: PLC0415

        counters = {room.slug: (room.event_ms, room.event_seq) for room in Room.query}
        assert counters == {"r1": (300, 0), "r2": (70, 2), "r3": (0, 0)}
        assert Message.query.count() == 3, "the pending message is gone"
        assert allocate_event_id(1) > (300, 0) and allocate_event_id(3).seq == 1
        db.session.rollback()
        db.session.remove()


def test_db_upgrade_starts_existing_sessions_idle_clocks_at_the_upgrade(make_app, flask_cli, tmp_path):
    """A database from before the idle timeout: nobody knows when its sessions were last used, so their
    idle clock starts at the upgrade (not at sign-in, which would sign out everyone who signed in over a
    week ago); the absolute lifetime still counts from sign-in."""
    from datetime import datetime, timedelta  # noqa: PLC0415

    from chat.auth import token_hash  # noqa: PLC0415
    from chat.ids import utcnow  # noqa: PLC0415

    old = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with logging_kept():
        assert flask_cli("db", "upgrade", "c4d2a7e91f03", on=old).exit_code == 0
    with old.app_context():
        from chat.extensions import db  # noqa: PLC0415

        with db.engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                "INSERT INTO users (id, username, username_key, password_hash, role, created_at) "
                "VALUES (1, 'old', 'old', 'x', 'user', '2026-01-01 00:00:00')"))
            for token, age in (("ten-days", timedelta(days=10)), ("forty-days", timedelta(days=40))):
                connection.execute(sqlalchemy.text(
                    "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at) VALUES (:hash, 1, 'c', :at)"),
                    {"hash": token_hash(token), "at": utcnow() - age})
        db.session.remove()
    upgraded_at = utcnow()
    with logging_kept():
        result = flask_cli("db", "upgrade", on=old)
    assert result.exit_code == 0, result.output
    with old.app_context():
        seen = db.session.execute(sqlalchemy.text("SELECT last_seen_at FROM sessions")).scalars().all()
        db.session.remove()
    assert len(seen) == 2 and all(datetime.fromisoformat(str(value)) >= upgraded_at for value in seen), seen

    def me(token):
        browser = old.test_client()
        browser.set_cookie("chat_session", token)
        return browser.get("/api/auth/me")

    assert me("ten-days").status_code == 200
    assert_error(me("forty-days"), 401, "not_authenticated")
