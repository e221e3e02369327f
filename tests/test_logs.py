"""Structured logs (chat/logs.py): a JSON line per request and per stream end, with nothing secret in them."""
import json
import logging

from chat.auth import token_hash
from chat.logs import JsonLines
from tests.support import PASSWORD, wait_until


def written(capsys, caplog) -> str:
    """What went to stderr (request lines are written there directly) and through the logging handler."""
    return capsys.readouterr().err + "\n".join(JsonLines().format(record) for record in caplog.records)


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_line_per_request_with_who_what_and_how_long(member, capsys, caplog):
    slug = member.create_room()
    capsys.readouterr()
    member.get(f"/api/rooms/{slug}/messages", query_string={"limit": 7}, headers={"X-Request-ID": "trace-1"})
    member.get(f"/api/rooms/{slug}/poll", query_string={"timeout": 0})
    history, poll = [line for line in lines(written(capsys, caplog)) if line["message"] == "request"][-2:]
    assert history["method"] == "GET" and history["path"] == f"/api/rooms/{slug}/messages"  # no query values
    assert history["status"] == 200 and history["request_id"] == "trace-1"
    assert history["user_id"] == member.user["id"] and history["duration_ms"] >= 0
    assert poll["rooms"] == [slug] and poll["events"] == 0 and poll["reason"] == "timeout"


def test_no_secrets_in_any_line(make_client, capsys, caplog):
    user = make_client()
    with caplog.at_level(logging.DEBUG):
        user.register(password="a secret password 1")
        token = user.client.get_cookie("chat_session").value
        slug = user.create_room()
        user.send(slug, "a private message body")
        user.client.post("/api/auth/login", json={"username": user.username, "password": "wrong secret 2"})
        user.post("/api/auth/logout")
    text = written(capsys, caplog)
    assert '"request"' in text
    for secret in ("a secret password 1", "wrong secret 2", "a private message body", user.csrf, PASSWORD, token,
                   token_hash(token)):
        assert secret not in text


def test_a_stream_logs_its_end(live):
    user = live.user()
    slug = user.create_room()
    stream = user.events(f"/api/rooms/{slug}/events", headers={"X-Request-ID": "stream-trace"})
    stream.next(timeout=5)
    user.send(slug, "one")
    stream.next_durable()
    stream.close()

    def ended():
        with open(live.log.name, encoding="utf-8") as log:
            found = [json.loads(line) for line in log if line.startswith("{") and "stream-trace" in line]
        return [line for line in found if line["message"] == "stream ended"]

    line = wait_until(ended, timeout=30, what="the stream's end logged")[0]  # noticed at the next heartbeat
    assert line["rooms"] == [slug] and line["events"] == 1 and line["reason"] in ("hung up", "closed by the client")
    assert line["user_id"] == user.user["id"] and line["duration_s"] > 0


def test_every_line_a_server_writes_is_json(live):
    """gunicorn's own lines (starting, booting workers) are JSON too, in the same fields as the app's."""
    live.user()  # at least one request line beside gunicorn's

    with open(live.log.name, encoding="utf-8") as log:
        lines = [line for line in log.read().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in parsed)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in parsed)


def test_a_path_with_a_line_break_stays_on_its_one_line(member, capsys, caplog):
    capsys.readouterr()
    member.get('/api/rooms/x%0A{"level": "ERROR", "message": "forged"}/messages')
    text = written(capsys, caplog)
    assert all(json.loads(line).get("message") != "forged" for line in text.splitlines() if line.startswith("{"))
    assert not any(line.startswith('{"level": "ERROR"') for line in text.splitlines())


def test_a_failing_database_logs_no_sql_parameters(make_app, tmp_path, capsys, caplog):
    """The session's token hash is the lookup's parameter: a database that fails must not log it."""
    broken = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'no-tables.sqlite3'}")  # every query fails
    client = broken.test_client()
    client.set_cookie("chat_session", "a-session-token-that-must-not-be-logged")
    with caplog.at_level(logging.DEBUG):
        answer = client.get("/api/auth/me")
    assert answer.status_code == 503
    text = written(capsys, caplog)
    assert "no such table" in text  # the failure itself is logged
    for secret in ("a-session-token-that-must-not-be-logged", token_hash("a-session-token-that-must-not-be-logged")):
        assert secret not in text
