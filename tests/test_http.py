"""What every response carries (API.md, "Conventions"): a request id, and the security headers."""
import logging
import os

import pytest

from chat.auth import token_hash

from tests.support import PASSWORD, unique

FRAMING = ("X-Frame-Options", "DENY")


@pytest.mark.parametrize("given, kept", [("abc-123_x.y", True), ("A" * 128, True), ("A" * 129, False),
                                         ("two words", False), ("", False), ("id\u00e9", False)])
def test_a_request_id_is_kept_when_well_formed_else_made(member, given, kept):
    answer = member.get("/api/auth/me", headers={"X-Request-ID": given})
    request_id = answer.headers["X-Request-ID"]
    assert (request_id == given) is kept
    assert 1 <= len(request_id) <= 128 and request_id.replace("-", "").replace("_", "").replace(".", "").isalnum()


def test_every_kind_of_answer_carries_an_id_and_the_security_headers(member, make_client):
    client = make_client().client  # signed out
    slug = member.create_room()
    for _ in range(2):  # the second poll is answered by the fast lane (the first remembers the session)
        member.get(f"/api/rooms/{slug}/poll", query_string={"timeout": 0})
    answers = {
        "json": member.get("/api/auth/me"),
        "error": client.get("/api/auth/me"),
        "unknown path": client.get("/api/no-such-thing"),
        "page": member.get(f"/rooms/{slug}"),
        "page not found": member.get("/rooms/no-such-room"),
        "poll": member.get(f"/api/rooms/{slug}/poll", query_string={"timeout": 0}),
        "feed poll": member.get("/api/poll", query_string={"rooms": slug, "timeout": 0}),
        "static": client.get("/static/js/api.js"),
    }
    ids = set()
    for what, answer in answers.items():
        assert answer.headers.get("X-Request-ID"), what
        ids.add(answer.headers["X-Request-ID"])
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", what
        assert "frame-ancestors 'none'" in answer.headers.get("Content-Security-Policy", ""), what
        assert answer.headers.get(FRAMING[0]) == FRAMING[1], what
    assert len(ids) == len(answers)  # a new one each
    assert answers["error"].status_code == 401 and answers["unknown path"].status_code == 404


def test_a_stream_carries_them_too(live):
    user = live.user()
    slug = user.create_room()
    stream = user.events(f"/api/rooms/{slug}/events", headers={"X-Request-ID": unique("trace")})
    try:
        assert stream.status == 200 and stream.headers["X-Request-ID"].startswith("trace")
        assert stream.headers["X-Frame-Options"] == "DENY"
    finally:
        stream.close()


def test_api_answers_are_never_cached(member, make_client):
    slug = member.create_room()
    for answer in (member.get("/api/auth/me"), member.get("/api/rooms"), member.get(f"/api/rooms/{slug}/messages"),
                   make_client().client.get("/api/auth/me")):
        assert answer.headers["Cache-Control"] == "no-store", answer.request.path


def test_the_instance_directory_is_private(app):
    assert os.stat(app.instance_path).st_mode & 0o777 == 0o700


def test_logs_carry_no_sql_parameters_when_the_database_fails(make_app, member, tmp_path, caplog):
    """A database without its tables: every query fails, and the failure is logged without its parameters."""
    token = member.client.get_cookie("chat_session").value
    broken = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    client = broken.test_client()
    client.set_cookie("chat_session", token)
    with caplog.at_level(logging.WARNING):
        answer = client.get("/api/auth/me")
    assert answer.status_code == 503
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "dependency failure" in logged and token_hash(token) not in logged and token not in logged


def test_hsts_only_over_https_as_the_trusted_proxy_says(member, make_client):
    # A second browser of the same user signs in over HTTPS: its cookie is `__Host-chat_session` (test_sessions.py).
    https = {"X-Forwarded-Proto": "https"}
    secure = make_client().client
    assert secure.post("/api/auth/login", json={"username": member.username, "password": PASSWORD},
                       headers=https).status_code == 200
    slug = member.create_room()
    for _ in range(2):  # the second is answered by the poll fast lane, which must say it too
        assert secure.get(f"/api/rooms/{slug}/poll", query_string={"timeout": 0}, headers=https).status_code == 200
    member.send(slug, "so that memory holds an event")
    for path in ("/api/auth/me", f"/rooms/{slug}", f"/api/rooms/{slug}/poll?timeout=0"):
        over_https = secure.get(path, headers=https)
        assert over_https.status_code == 200, path
        assert over_https.headers.get("Strict-Transport-Security", "").startswith("max-age="), path
        assert "Strict-Transport-Security" not in member.get(path).headers, path
