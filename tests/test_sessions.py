"""Sessions beyond API.md's login and logout (docs/API.md, "What this implementation adds"): the idle timeout
and absolute lifetime, signing out everywhere, changing the password, and the `__Host-` cookie over HTTPS."""
import json
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from chat import actions, live
from chat.auth import ACTIVITY_WRITE_SECONDS, SECURE_COOKIE
from chat.caches import CachedSession, CachedUser, SessionCache
from chat.extensions import db
from chat.ids import utcnow
from chat.models import Session
from tests.support import (PASSWORD, AuthActions, HttpUser, another_session, assert_error, assert_refused, events_path,
                           operator_context, posted, unique, wait_until)
from tests.test_fastpoll import by_the_view, from_memory, poll_environ
from tests.test_live_poll import cursor_of, waiting_poll

IDLE = timedelta(minutes=7 * 24 * 60)  # the defaults, which these tests run with
LIFETIME = timedelta(days=30)
HTTPS = {"X-Forwarded-Proto": "https"}
NEW_PASSWORD = "a new passphrase"


@contextmanager
def app_database(app):
    with app.app_context():
        try:
            yield
        finally:
            db.session.remove()


class SessionRows:
    """Users' session rows as the database holds them, read and moved behind the service's back (as time would).
    `context()` opens a context with the database: the test app's, or an operator's beside a live server."""

    def __init__(self, context):
        self.context = context

    def move(self, browser, **times) -> None:
        """Set the browser's user's sessions' `created_at` / `last_seen_at`."""
        with self.context():
            db.session.execute(update(Session).where(Session.user_id == browser.user["id"]).values(**times))
            db.session.commit()

    def end_in(self, browser, seconds: float) -> float:
        """Bring the sessions' absolute end to `seconds` from now; returns that moment on the monotonic clock."""
        self.move(browser, created_at=utcnow() - LIFETIME + timedelta(seconds=seconds))
        return time.monotonic() + seconds

    def of(self, browser) -> list[tuple]:
        """(id, created_at, last_seen_at) of each session of the browser's user."""
        with self.context():
            return db.session.execute(select(Session.id, Session.created_at, Session.last_seen_at)
                                      .where(Session.user_id == browser.user["id"])).all()


@pytest.fixture
def sessions(app):
    return SessionRows(lambda: app_database(app))


@pytest.fixture
def elsewhere(make_client, member):
    """The member signed in on a second browser: another session of theirs."""
    browser = make_client()
    assert browser.login(member.username).status_code == 200
    return browser


def change_password(user, current=PASSWORD, new=NEW_PASSWORD, **kwargs):
    return user.post("/api/auth/password", json={"current_password": current, "new_password": new}, **kwargs)


def remembered_by_the_lane(browser, path: str, headers=None) -> None:
    for _ in range(2):  # the first live request starts the hub; the second is remembered
        assert browser.get(path, query_string={"timeout": 0}, headers=headers).status_code == 200


# The idle timeout and the absolute lifetime

def test_a_session_idle_for_longer_than_the_idle_timeout_is_refused_and_deleted(sessions, member):
    sessions.move(member, last_seen_at=utcnow() - IDLE - timedelta(minutes=1))
    assert_error(member.get("/api/auth/me"), 401, "not_authenticated")
    assert sessions.of(member) == []
    assert_error(member.post("/api/rooms", json={"name": "after"}), 401, "not_authenticated")


def test_a_session_used_just_within_the_idle_timeout_stays(sessions, member):
    sessions.move(member, last_seen_at=utcnow() - IDLE + timedelta(minutes=1))
    assert member.get("/api/auth/me").status_code == 200


def test_a_session_past_its_absolute_lifetime_is_refused_however_busy(sessions, member):
    sessions.move(member, created_at=utcnow() - LIFETIME - timedelta(seconds=1), last_seen_at=utcnow())
    assert_error(member.get("/api/auth/me"), 401, "not_authenticated")
    assert sessions.of(member) == []


def test_an_expired_session_is_refused_by_every_endpoint_kind(sessions, member):
    slug = member.create_room()
    sessions.move(member, created_at=utcnow() - LIFETIME)
    for response in (member.get(f"/api/rooms/{slug}/poll", query_string={"timeout": 0}),
                     member.get(f"/api/rooms/{slug}/events"), member.send(slug), member.get("/")):
        if response.mimetype == "application/json":
            assert_error(response, 401, "not_authenticated")
        else:
            assert b'data-testid="login"' in response.data  # the page offers sign-in


def test_activity_is_written_at_most_every_few_minutes(sessions, member):
    """A request notes the session's activity only when the last note is older than ACTIVITY_WRITE_SECONDS."""
    recent = utcnow() - timedelta(seconds=ACTIVITY_WRITE_SECONDS - 60)
    sessions.move(member, last_seen_at=recent)
    assert member.get("/api/auth/me").status_code == 200
    assert sessions.of(member)[0][2] == recent  # no write
    stale = utcnow() - timedelta(seconds=ACTIVITY_WRITE_SECONDS + 60)
    sessions.move(member, last_seen_at=stale)
    before = utcnow()
    assert member.get("/api/auth/me").status_code == 200
    assert sessions.of(member)[0][2] >= before  # written: the idle clock starts again


def test_the_hourly_job_deletes_expired_sessions_nobody_presents_again(app, sessions, make_client):
    idle, busy_but_old, fresh = make_client(), make_client(), make_client()
    for browser in (idle, busy_but_old, fresh):
        assert browser.register().status_code == 201
    sessions.move(idle, last_seen_at=utcnow() - IDLE)
    sessions.move(busy_but_old, created_at=utcnow() - LIFETIME)
    with app_database(app):
        assert actions.delete_expired_sessions() == 2
    for browser in (idle, busy_but_old):
        assert sessions.of(browser) == []
    assert len(sessions.of(fresh)) == 1
    assert fresh.get("/api/auth/me").status_code == 200


def test_the_session_cache_never_serves_an_expired_session():
    cache, now = SessionCache(), time.time()
    user = CachedUser(1, "someone", "user")
    cache.put("live", CachedSession(1, 1, "csrf", user, expires_at=now + 60), time.monotonic())
    cache.put("ended", CachedSession(2, 1, "csrf", user, expires_at=now - 0.001), time.monotonic())
    assert cache.get("live") is not None
    assert cache.get("ended") is None


def test_the_poll_fast_lane_stops_answering_when_the_session_expires(app, sessions, member):
    """The lane answers from the cache; the cached session carries its end, so the lane stops at it and
    the view answers 401 (and deletes the session)."""
    slug = member.create_room()
    ends_in = 4.0
    ends_at = sessions.end_in(member, ends_in)
    path, token = f"/api/rooms/{slug}/poll", member.client.get_cookie("chat_session").value
    remembered_by_the_lane(member, path)
    cursor = member.send(slug).json["message"]["id"]

    def environ():
        return poll_environ(member, path, token, cursor=cursor, timeout=0)

    wait_until(lambda: from_memory(app, environ(), slug), timeout=ends_in, what="the lane answers")
    wait_until(lambda: from_memory(app, environ(), slug) is None, timeout=ends_in + 2, what="the lane stops")
    assert time.monotonic() >= ends_at - 0.5  # not before the session's end (the cache reads the wall clock)
    status, _, body = by_the_view(app, environ())
    assert status.startswith("401") and json.loads(body)["error"]["code"] == "not_authenticated"
    assert sessions.of(member) == []


def test_a_stream_lasts_at_most_half_the_idle_timeout_so_its_reconnect_keeps_the_session(make_app, member):
    app = make_app(CHAT_SESSION_IDLE_MINUTES=10, CHAT_STREAM_MAX_SECONDS=3600)
    with app.app_context():
        row = db.session.execute(select(Session).where(Session.user_id == member.user["id"])).scalar_one()
        assert live._stream_lifetime(row) == (300, "CHAT_STREAM_MAX_SECONDS")
        row.created_at = utcnow() - LIFETIME + timedelta(seconds=60)
        lifetime, reason = live._stream_lifetime(row)
        assert 55 < lifetime <= 60 and reason == "session_expired"
        db.session.rollback()


def test_the_settings_must_be_positive(make_app):
    for setting in ("CHAT_SESSION_IDLE_MINUTES", "CHAT_SESSION_MAX_DAYS"):
        with pytest.raises(RuntimeError, match=setting):
            make_app(**{setting: 0})


def test_an_expiring_session_ends_its_stream_and_its_waiting_poll(live):
    """At the session's absolute end its stream closes and its waiting poll answers 401, in every process."""
    user = live.user()
    slug = user.create_room()
    cursor = cursor_of(user, slug)
    ends_in = 4.0
    on_live = SessionRows(lambda: operator_context(live))
    ends_at = on_live.end_in(user, ends_in)
    stream = user.events(events_path(slug))
    try:
        assert stream.status == 200 and stream.next(timeout=3).event == "ready"
        poll = waiting_poll(live, user, slug, cursor=cursor, timeout=20)
        assert stream.wait_closed(ends_in + 2), "the stream outlived its session"
        assert time.monotonic() >= ends_at - 0.5
        answer = poll.result(timeout=max(0.1, ends_at - time.monotonic()) + 2)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "not_authenticated"
    finally:
        stream.close()
    assert user.get("/api/auth/me").status_code == 401
    assert on_live.of(user) == []


# Sign out everywhere

def test_logout_all_ends_every_session_of_the_user_only(make_client, member, elsewhere):
    stranger = make_client()
    assert stranger.register().status_code == 201
    response = member.post("/api/auth/logout_all")
    assert response.status_code == 204 and response.data == b""
    assert "chat_session=;" in response.headers["Set-Cookie"]  # the browser drops it
    for ended in (member, elsewhere):
        assert_error(ended.get("/api/auth/me"), 401, "not_authenticated")
    assert stranger.get("/api/auth/me").status_code == 200
    assert member.login(member.username).status_code == 200  # signing in again works


def test_logout_all_ends_the_streams_and_polls_of_every_session_within_2_seconds(live):
    """Two workers; one session holds a stream, another a waiting poll; a third user's stream stays."""
    first = live.user()
    second = another_session(first, live)
    bystander = live.user()
    slug = first.create_room()
    cursor = cursor_of(first, slug)
    streams = [first.events(events_path(slug)) for _ in range(2)]  # two: both workers are likely involved
    theirs = bystander.events(events_path(slug))
    try:
        for stream in [*streams, theirs]:
            assert stream.next(timeout=3).event == "ready"
        poll = waiting_poll(live, second, slug, cursor=cursor, timeout=20)
        started = time.monotonic()
        assert first.post("/api/auth/logout_all").status_code == 204
        for stream in streams:
            assert stream.wait_closed(2), "logout_all did not end a stream within 2 s"
        answer = poll.result(timeout=2.5)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "not_authenticated"
        assert poll.finished_at - started < 2
        print(f"logout_all ended the streams and the poll in {time.monotonic() - started:.3f} s")
        assert not theirs.closed.is_set()
        message = posted(bystander, slug)
        assert theirs.next_durable().id == message["id"]
        for ended in (first, second):
            assert ended.get("/api/auth/me").status_code == 401
            assert ended.get(events_path(slug)).status_code == 401
    finally:
        for stream in [*streams, theirs]:
            stream.close()


# Changing the password

def test_change_password_keeps_this_session_and_ends_the_others(make_client, member, elsewhere):
    response = change_password(member)
    assert response.status_code == 204 and response.data == b""
    assert member.get("/api/auth/me").json == {"user": member.user, "csrf_token": member.csrf}
    assert member.post("/api/rooms", json={"name": unique("room")}).status_code == 201  # the CSRF token holds
    assert_error(elsewhere.get("/api/auth/me"), 401, "not_authenticated")
    assert_error(make_client().login(member.username), 401, "invalid_credentials")
    assert make_client().login(member.username, NEW_PASSWORD).status_code == 200


def test_a_wrong_current_password_is_403_and_changes_nothing(make_client, member, elsewhere):
    assert_error(change_password(member, current="not my password"), 403, "invalid_credentials")
    assert member.get("/api/auth/me").status_code == 200  # still signed in: 403, not 401
    assert elsewhere.get("/api/auth/me").status_code == 200
    assert make_client().login(member.username).status_code == 200


def test_change_password_validates_like_registration(member):
    assert_refused(lambda new: change_password(member, new=new), ["x" * 7, "x" * 257, None, 12345678],
                   422, "validation_error", ["new_password"])
    assert_error(member.post("/api/auth/password", json={}), 422, "validation_error",
                 ["current_password", "new_password"])
    # Validation comes before the password check: a wrong current password with a bad new one is 422.
    assert_error(change_password(member, current="wrong", new="short"), 422, "validation_error", ["new_password"])
    assert change_password(member).status_code == 204


def test_guesses_at_the_current_password_count_in_the_accounts_login_limit(make_app):
    app = make_app(CHAT_LOGIN_FAILURE_LIMIT="3/60")
    member = AuthActions(app.test_client())
    assert member.register().status_code == 201
    assert_error(change_password(member, current="wrong 1"), 403, "invalid_credentials")
    assert change_password(member, new=PASSWORD).status_code == 204  # right: gives its count back
    assert_error(change_password(member, current="wrong 2"), 403, "invalid_credentials")
    assert_error(change_password(member, current="wrong 3"), 403, "invalid_credentials")
    refused = change_password(member)
    assert_error(refused, 429, "rate_limited")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    # One limit per account: sign-ins are blocked too, and the right current password waits as well.
    assert_error(AuthActions(app.test_client()).login(member.username), 429, "rate_limited")
    assert_error(change_password(member), 429, "rate_limited")


def test_change_password_ends_the_other_sessions_streams_within_2_seconds_and_keeps_this_ones(live):
    mine = live.user()
    others = [another_session(mine, live), another_session(mine, live)]
    slug = mine.create_room()
    cursor = cursor_of(mine, slug)
    my_streams = [mine.events(events_path(slug)) for _ in range(2)]
    their_streams = [others[0].events(events_path(slug)) for _ in range(2)]
    try:
        for stream in [*my_streams, *their_streams]:
            assert stream.next(timeout=3).event == "ready"
        poll = waiting_poll(live, others[1], slug, cursor=cursor, timeout=20)
        started = time.monotonic()
        assert change_password(mine).status_code == 204
        for stream in their_streams:
            assert stream.wait_closed(2), "the password change did not end another session's stream within 2 s"
        answer = poll.result(timeout=2.5)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "not_authenticated"
        assert poll.finished_at - started < 2
        print(f"the password change ended the other sessions' streams and poll in {time.monotonic() - started:.3f} s")
        message = posted(mine, slug)  # this session's CSRF token still holds
        for stream in my_streams:
            assert not stream.closed.is_set()
            assert stream.next_durable().id == message["id"]
        for other in others:
            assert other.get("/api/auth/me").status_code == 401
        assert HttpUser(live.url).login(mine.user["username"], NEW_PASSWORD).status_code == 200
    finally:
        for stream in [*my_streams, *their_streams]:
            stream.close()


# The cookie over HTTPS

def set_cookie_headers(response, name: str) -> list[str]:
    return [value for value in response.headers.getlist("Set-Cookie") if value.startswith(f"{name}=")]


def sign_in_over_https(browser, how="register", username=None):
    """Register (a new account) or log in over HTTPS, as the trusted proxy says; the browser keeps its user and
    CSRF token. Returns the answer."""
    response = browser.client.post(f"/api/auth/{how}", json={"username": username or unique(), "password": PASSWORD},
                                   headers=HTTPS)
    if response.status_code in (200, 201):
        browser.user, browser.csrf = response.json["user"], response.json["csrf_token"]
    return response


def cookie_attributes(header: str) -> dict:
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value or True
    return attributes


@pytest.mark.parametrize("how", ["register", "login"])
def test_over_https_the_cookie_is_a_host_cookie(make_app, how):
    app = make_app(CHAT_TRUSTED_PROXIES=1)
    username = unique()
    if how == "login":
        assert AuthActions(app.test_client()).register(username).status_code == 201
    browser = AuthActions(app.test_client())
    response = sign_in_over_https(browser, how, username)
    assert response.status_code in (200, 201)
    assert set_cookie_headers(response, "chat_session") == []
    [header] = set_cookie_headers(response, SECURE_COOKIE)
    attributes = cookie_attributes(header)
    # What a browser demands of `__Host-`: Secure, Path=/, no Domain.
    assert attributes["secure"] is True and attributes["path"] == "/" and "domain" not in attributes
    assert attributes["httponly"] is True and attributes["samesite"].lower() == "lax"
    assert browser.client.get("/api/auth/me", headers=HTTPS).status_code == 200
    # Over plain HTTP only the plain name is read.
    assert_error(browser.client.get("/api/auth/me"), 401, "not_authenticated")


def test_over_https_a_plain_cookie_is_not_read_and_is_expired_at_sign_in(app, member):
    """A plain-HTTP cookie over HTTPS could have been planted (session fixation): not read. A deployment that
    moves to HTTPS signs its users in again, and the old cookie goes."""
    assert member.get("/api/auth/me").status_code == 200
    assert_error(member.client.get("/api/auth/me", headers=HTTPS), 401, "not_authenticated")
    response = sign_in_over_https(member, "login", member.username)
    assert response.status_code == 200
    [expired] = set_cookie_headers(response, "chat_session")
    assert expired.startswith("chat_session=;") and "expires=thu, 01 jan 1970" in expired.lower()
    assert set_cookie_headers(response, SECURE_COOKIE)


@pytest.mark.parametrize("path", ["/api/auth/logout", "/api/auth/logout_all"])
def test_signing_out_over_https_drops_the_host_cookie(app, path):
    browser = AuthActions(app.test_client())
    assert sign_in_over_https(browser).status_code == 201
    response = browser.client.post(path, headers={**HTTPS, **browser.headers()})
    assert response.status_code == 204
    [dropped] = set_cookie_headers(response, SECURE_COOKIE)
    assert "secure" in cookie_attributes(dropped) and cookie_attributes(dropped)["path"] == "/"
    assert_error(browser.client.get("/api/auth/me", headers=HTTPS), 401, "not_authenticated")


def test_the_poll_fast_lane_reads_the_host_cookie_over_https(app):
    from werkzeug.test import EnvironBuilder  # noqa: PLC0415

    browser = AuthActions(app.test_client())
    assert sign_in_over_https(browser).status_code == 201
    token = browser.client.get_cookie(SECURE_COOKIE).value
    slug = browser.client.post("/api/rooms", json={"name": unique("room")},
                               headers={**HTTPS, **browser.headers()}).json["room"]["slug"]
    path = f"/api/rooms/{slug}/poll"
    remembered_by_the_lane(browser, path, headers=HTTPS)
    cursor = browser.client.post(f"/api/rooms/{slug}/messages", json={"body": "hi"},
                                 headers={**HTTPS, **browser.headers()}).json["message"]["id"]

    def environ(cookie_name, scheme):
        return EnvironBuilder(path=path, query_string={"cursor": cursor, "timeout": 0},
                              base_url=f"{scheme}://localhost/", headers={"Cookie": f"{cookie_name}={token}"}
                              ).get_environ()

    wait_until(lambda: from_memory(app, environ(SECURE_COOKIE, "https"), slug), what="the lane answers over HTTPS")
    # The same token under the other scheme's name is not read.
    assert from_memory(app, environ("chat_session", "https"), slug) is None
    assert from_memory(app, environ(SECURE_COOKIE, "http"), slug) is None
