"""API.md "Conventions" and "Users and sessions": registration, login, logout, `me`, cookies, CSRF, JSON errors."""
import time

import pytest

from chat.auth import session_token_from
from tests.support import BAD_BODIES, PASSWORD, AuthActions, assert_error, assert_fields, assert_refused, unique

# Every /api/ endpoint in scope here except register and login (the live event endpoints are tested elsewhere).
PROTECTED = [
    ("GET", "/api/auth/me"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/logout_all"),
    ("POST", "/api/auth/password"),
    ("GET", "/api/rooms"),
    ("POST", "/api/rooms"),
    ("GET", "/api/rooms/nowhere"),
    ("GET", "/api/rooms/nowhere/messages"),
    ("POST", "/api/rooms/nowhere/messages"),
    ("DELETE", "/api/rooms/nowhere/messages/1-0"),
    ("POST", "/api/rooms/nowhere/mutes"),
    ("DELETE", "/api/rooms/nowhere/mutes/someone"),
    ("POST", "/api/bans"),
    ("DELETE", "/api/bans/someone"),
    ("POST", "/api/rooms/nowhere/lock"),
    ("POST", "/api/rooms/nowhere/unlock"),
    ("GET", "/api/moderation/actions"),
    ("GET", "/api/bans"),
    ("GET", "/api/rooms/nowhere/mutes"),
    ("POST", "/api/rooms/nowhere/slow_mode"),
    ("POST", "/api/moderation/purge"),
]
UNSAFE = [(method, path) for method, path in PROTECTED if method != "GET"]
# Endpoints that read a JSON body; `{room}` is a room the caller (a moderator) may use.
JSON_ENDPOINTS = ["/api/auth/register", "/api/auth/login", "/api/auth/password", "/api/rooms",
                  "/api/rooms/{room}/messages", "/api/rooms/{room}/mutes", "/api/bans", "/api/rooms/{room}/slow_mode",
                  "/api/moderation/purge"]


def session_cookie(response, name="chat_session") -> dict[str, str | bool]:
    """The attributes of the chat session's Set-Cookie header, lower-cased (`{"httponly": True, ...}`)."""
    headers = [value for value in response.headers.getlist("Set-Cookie") if value.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers
    attributes = {}
    for part in headers[0].split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value or True
    return attributes


def call(client, endpoint, **kwargs):
    """Call a (method, path) endpoint with an empty JSON object."""
    method, path = endpoint
    return client.open(path, method=method, json={}, **kwargs)


def sign_in(client, how: str, **kwargs):
    """Register a fresh user, or log in an existing one, with the same client."""
    if how == "register":
        return client.post("/api/auth/register", json={"username": unique(), "password": PASSWORD}, **kwargs)
    username = unique()
    client.post("/api/auth/register", json={"username": username, "password": PASSWORD})
    return client.post("/api/auth/login", json={"username": username, "password": PASSWORD}, **kwargs)


# Conventions: sessions, CSRF and the error shape

def test_every_endpoint_needs_a_session(client):
    assert_refused(lambda endpoint: call(client, endpoint), PROTECTED, 401, "not_authenticated")


def test_401_is_answered_before_the_body_is_read(client):
    assert_refused(lambda bad: client.post("/api/rooms", data=bad[0], content_type=bad[1]), BAD_BODIES,
                   401, "not_authenticated")


@pytest.mark.parametrize("headers", [{}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "not-the-token"}])
def test_every_unsafe_endpoint_needs_the_csrf_token(member, headers):
    assert_refused(lambda endpoint: call(member.client, endpoint, headers=headers), UNSAFE, 403, "csrf_failed")


@pytest.mark.parametrize("how", ["register", "login"])
def test_session_cookie_is_httponly_and_samesite_lax_and_not_secure_over_http(client, how):
    cookie = session_cookie(sign_in(client, how))
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert "secure" not in cookie


@pytest.mark.parametrize("how", ["register", "login"])
def test_session_cookie_is_secure_when_the_proxy_says_https(client, how):
    """Named `__Host-chat_session` there (tests/test_sessions.py): Secure, Path=/, no Domain."""
    cookie = session_cookie(sign_in(client, how, headers={"X-Forwarded-Proto": "https"}), "__Host-chat_session")
    assert cookie["secure"] is True and cookie["httponly"] is True and cookie["samesite"].lower() == "lax"


@pytest.fixture
def moderator_with_room(make_moderator):
    moderator = make_moderator()
    return moderator, moderator.create_room()


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_that_is_not_json_is_415(moderator_with_room, content_type):
    moderator, slug = moderator_with_room
    assert_refused(lambda path: moderator.post(path.format(room=slug), data="username=x", content_type=content_type),
                   JSON_ENDPOINTS, 415, "unsupported_media_type")


MALFORMED = ['{"username": ', "{'single': 'quotes'}", b'{"body": "\xff"}',
             # an unpaired surrogate cannot be UTF-8 text
             '{"username": "\\ud800abc", "password": "x\\udfffxxxxxxx", "name": "\\ud800", "body": "\\ud800",'
             ' "minutes": 5}']


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_json_is_400(moderator_with_room, body):
    moderator, slug = moderator_with_room
    for path in JSON_ENDPOINTS:
        response = moderator.post(path.format(room=slug), data=body, content_type="application/json")
        assert response.status_code == 400 and response.json["error"]["code"], (path, response.json)
        assert "fields" not in response.json["error"]


def test_a_body_over_the_request_limit_is_413(moderator_with_room):
    moderator, slug = moderator_with_room
    oversized = '{"body": "' + "x" * (64 * 1024) + '"}'
    assert_refused(lambda path: moderator.post(path.format(room=slug), data=oversized, content_type="application/json"),
                   JSON_ENDPOINTS, 413, "payload_too_large")


def test_answers_and_errors_are_json(member):
    name = "Ünïcödé ✓ 日本"
    response = member.post("/api/rooms", data=f'{{"name": "{name} room"}}'.encode(), content_type="application/json")
    assert response.mimetype == "application/json" and response.json["room"]["name"] == f"{name} room"
    assert member.get("/api/rooms/nowhere").mimetype == "application/json"


# Register

def test_register_signs_in_a_new_user(auth):
    username = unique()
    response = auth.register(username)
    assert response.status_code == 201
    user = response.json["user"]
    assert_fields(user, username=username, role="user")
    assert isinstance(user["id"], int)
    assert isinstance(response.json["csrf_token"], str) and response.json["csrf_token"]
    assert auth.get("/api/auth/me").json == response.json


def test_register_accepts_the_username_alphabet_and_lengths(make_client):
    for username in ["abc", "A" * 32, "a.B_c-9", "___", "..."]:
        browser = make_client()
        assert browser.register(username).status_code == 201, username
        assert browser.username == username


def test_register_accepts_passwords_of_8_to_256_characters(make_client):
    for password in ["x" * 8, "x" * 256, "pass word with spaces ✓"]:
        browser = make_client()
        assert browser.register(password=password).status_code == 201
        assert make_client().login(browser.username, password).status_code == 200


def register(client, **fields):
    return client.post("/api/auth/register", json=fields)


def test_register_rejects_invalid_usernames(client):
    assert_refused(lambda username: register(client, username=username, password=PASSWORD),
                   ["ab", "a" * 33, "has space", "naïve", "semi;colon", "newline\n", 12345, None],
                   422, "validation_error", ["username"])
    assert_error(client.get("/api/auth/me"), 401, "not_authenticated")


def test_register_rejects_invalid_passwords(client):
    assert_refused(lambda password: register(client, username="valid_name", password=password),
                   ["x" * 7, "x" * 257, None, 12345678], 422, "validation_error", ["password"])
    assert_error(client.get("/api/auth/me"), 401, "not_authenticated")


def test_register_names_every_missing_field(client):
    assert_error(register(client), 422, "validation_error", ["username", "password"])


def test_usernames_are_unique_ignoring_case(make_client):
    assert make_client().register("Alice_1").status_code == 201
    assert_refused(lambda taken: make_client().register(taken), ["Alice_1", "alice_1", "ALICE_1"],
                   409, "username_taken")


# Login

def test_login_answers_the_user_and_a_csrf_token(make_client):
    registered = make_client()
    registered.register()
    browser = make_client()
    response = browser.login(registered.username)
    assert response.status_code == 200
    assert response.json["user"] == registered.user
    assert browser.get("/api/auth/me").json["csrf_token"] == response.json["csrf_token"]


def test_login_gives_the_same_answer_for_an_unknown_user_and_a_wrong_password(member, make_client):
    wrong_password = make_client().login(member.username, "wrong password")
    unknown_user = make_client().login(unique(), PASSWORD)
    for response in (wrong_password, unknown_user):
        assert_error(response, 401, "invalid_credentials")
    assert wrong_password.json == unknown_user.json


def test_an_unknown_user_and_a_wrong_password_take_the_same_time(make_app):
    """The production hash (scrypt): a cheaper dummy for unknown names would tell which names exist."""
    app = make_app(CHAT_PASSWORD_METHOD="scrypt")
    known = AuthActions(app.test_client())
    assert known.register().status_code == 201

    def slowest(username):  # the slowest of a few, so one scheduling hiccup cannot decide
        took = []
        for _ in range(3):
            started = time.perf_counter()
            assert AuthActions(app.test_client()).login(username, "wrong password").status_code == 401
            took.append(time.perf_counter() - started)
        return min(took)

    wrong_password, unknown_user = slowest(known.username), slowest(unique())
    assert 0.5 < unknown_user / wrong_password < 2, (unknown_user, wrong_password)


def test_login_with_credentials_that_could_never_exist_is_invalid_credentials(client):
    assert_refused(lambda payload: client.post("/api/auth/login", json=payload),
                   [{"username": "x", "password": PASSWORD}, {"username": "someone"}, {}], 401, "invalid_credentials")


# Logout and me

def test_me_answers_the_session_user_and_its_token(member):
    response = member.get("/api/auth/me")
    assert response.status_code == 200
    assert_fields(response.json, user=member.user, csrf_token=member.csrf)


def test_logout_ends_the_session(member):
    assert member.post("/api/auth/logout").status_code == 204
    assert_error(member.get("/api/auth/me"), 401, "not_authenticated")


def test_a_cookie_replayed_after_logout_is_refused(member):
    token = member.client.get_cookie("chat_session").value
    assert member.post("/api/auth/logout").status_code == 204
    member.client.set_cookie("chat_session", token)
    assert_error(member.get("/api/auth/me"), 401, "not_authenticated")
    assert_error(member.post("/api/rooms", json={"name": "after logout"}), 401, "not_authenticated")


def test_logout_keeps_the_users_other_sessions(member, make_client):
    other = make_client()
    assert other.login(member.username).status_code == 200
    assert member.post("/api/auth/logout").status_code == 204
    assert other.get("/api/auth/me").json["user"] == member.user


def test_a_session_cookie_the_server_did_not_issue_is_refused(client):
    def me_with(token):
        client.set_cookie("chat_session", token)
        return client.get("/api/auth/me")

    assert_refused(me_with, ["forged", "", "x" * 1000], 401, "not_authenticated")


def test_the_poll_lane_finds_the_session_cookie_among_an_intranets_others():
    assert session_token_from("sso=1; chat_session=tok; theme=dark", https=False) == "tok"
    assert session_token_from("xchat_session=evil;chat_session=tok", https=False) == "tok"
    assert session_token_from("chat_session=first; chat_session=second", https=False) == "first"  # as Flask reads it
    assert session_token_from("chat_session=planted", https=True) is None  # over HTTPS only the __Host- cookie counts
    assert session_token_from("__Host-chat_session=sec", https=True) == "sec"
    assert session_token_from("__Host-chat_session=sec", https=False) is None
    assert session_token_from("", https=False) is None
