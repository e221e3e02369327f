"""API.md "Moderation" (without the live feeds): mutes, bans, locks, the actions log, and who may use them."""
from datetime import datetime, timedelta, timezone

import pytest

from tests.support import (BAD_BODIES, TIME_FORMAT, AuthActions, assert_error, assert_fields, assert_refused, unique,
                           wait_until)

MODERATOR_ONLY = [
    ("POST", "/api/rooms/{room}/mutes", {"username": "{user}", "minutes": 5}),
    ("DELETE", "/api/rooms/{room}/mutes/{user}", None),
    ("POST", "/api/bans", {"username": "{user}"}),
    ("DELETE", "/api/bans/{user}", None),
    ("POST", "/api/rooms/{room}/lock", None),
    ("POST", "/api/rooms/{room}/unlock", None),
    ("GET", "/api/moderation/actions", None),
    ("GET", "/api/bans", None),
    ("GET", "/api/rooms/{room}/mutes", None),
    ("POST", "/api/rooms/{room}/slow_mode", {"seconds": 10}),
    ("POST", "/api/moderation/purge", {"username": "{user}", "minutes": 60}),
]


@pytest.fixture
def moderator(make_moderator):
    return make_moderator()


def parse_time(text: str) -> datetime:
    assert TIME_FORMAT.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def lock(browser, slug, action="lock"):
    return browser.post(f"/api/rooms/{slug}/{action}")


def call(browser, method, path, payload, **names):
    """Fill `{room}` / `{user}` into a path and a JSON payload, then send it with the browser's CSRF token."""
    json = {key: value.format(**names) if isinstance(value, str) else value for key, value in (payload or {}).items()}
    return browser.client.open(path.format(**names), method=method, json=json, headers=browser.headers())


# Who may moderate

def test_moderation_is_forbidden_to_users(member, room, make_client):
    target = make_client()
    target.register()
    assert_refused(lambda endpoint: call(member, *endpoint, room=room, user=target.username), MODERATOR_ONLY,
                   403, "forbidden")
    assert target.send(room, "still free").status_code == 201  # nothing took effect


def test_forbidden_is_answered_before_404_and_422(member):
    def invalid_call(method, path, payload):
        return call(member, method, path, payload and {key: None for key in payload}, room="nowhere", user="nobody")

    assert_refused(lambda endpoint: invalid_call(*endpoint), MODERATOR_ONLY, 403, "forbidden")


def test_an_unknown_room_is_answered_before_the_body_is_read(moderator):
    assert_refused(lambda bad: moderator.post("/api/rooms/nowhere/mutes", data=bad[0], content_type=bad[1]),
                   BAD_BODIES, 404, "not_found")


# Mutes

def test_a_mute_silences_the_user_in_that_room_until_then(moderator, member, room):
    elsewhere = member.create_room()
    response = moderator.mute(room, member.username, minutes=30, reason="cool off")
    assert response.status_code == 201
    muted = response.json
    assert_fields(muted, room=room, username=member.username, by=moderator.username, reason="cool off")
    expected = datetime.now(timezone.utc) + timedelta(minutes=30)
    assert abs(parse_time(muted["until"]) - expected) < timedelta(seconds=30)
    assert_error(member.send(room, "let me talk"), 403, "muted")
    assert member.send(elsewhere, "fine here").status_code == 201
    assert member.history(room).json["messages"] == []


def test_a_mute_without_a_reason(moderator, member, room):
    assert moderator.mute(room, member.username).json["reason"] is None


def test_unmute_lets_the_user_post_again(moderator, member, room):
    moderator.mute(room, member.username)
    response = moderator.delete(f"/api/rooms/{room}/mutes/{member.username}")
    assert response.status_code == 204 and response.data == b""
    assert member.send(room, "back").status_code == 201


def test_muting_again_moves_the_end_of_the_mute(moderator, member, room):
    first = moderator.mute(room, member.username, minutes=10080).json
    second = moderator.mute(room, member.username, minutes=1).json
    assert parse_time(second["until"]) < parse_time(first["until"])
    assert_error(member.send(room, "still muted"), 403, "muted")


def test_mute_minutes_may_be_1_to_10080(moderator, member, room):
    for minutes in (1, 10080):
        assert moderator.mute(room, member.username, minutes=minutes).status_code == 201


def test_mute_minutes_outside_1_to_10080_are_422(moderator, member, room):
    assert_refused(lambda minutes: moderator.mute(room, member.username, minutes=minutes),
                   [0, -5, 10081, "5", 2.5, None], 422, "validation_error", ["minutes"])
    assert member.send(room, "not muted").status_code == 201


def test_a_mute_needs_a_username_and_minutes(moderator, room):
    response = moderator.post(f"/api/rooms/{room}/mutes", json={})
    assert_error(response, 422, "validation_error", ["username", "minutes"])


def test_muting_or_banning_an_unknown_user_is_404(moderator, room):
    unknown = [unique(), "no\x00body"]
    assert_refused(lambda username: moderator.mute(room, username), unknown, 404, "not_found")
    assert_refused(moderator.ban, unknown, 404, "not_found")


def test_unmuting_or_unbanning_an_unknown_user_is_404(moderator, room):
    unknown = [unique(), "no%00body", "x" * 40]
    assert_refused(lambda username: moderator.delete(f"/api/rooms/{room}/mutes/{username}"), unknown, 404, "not_found")
    assert_refused(lambda username: moderator.delete(f"/api/bans/{username}"), unknown, 404, "not_found")


def test_a_reason_with_control_characters_or_over_500_characters_is_422(moderator, member, room):
    bad_reasons = ["nul\x00byte", "bell\x07", "x" * 501]
    assert_refused(lambda reason: moderator.mute(room, member.username, reason=reason), bad_reasons,
                   422, "validation_error", ["reason"])
    assert_refused(lambda reason: moderator.ban(member.username, reason=reason), bad_reasons,
                   422, "validation_error", ["reason"])
    assert member.send(room, "neither muted nor banned").status_code == 201


def test_a_reason_may_span_lines(moderator, member, room):
    assert moderator.mute(room, member.username, reason="first\n\tsecond").json["reason"] == "first\n\tsecond"


def test_muting_in_an_unknown_room_is_404(moderator, member):
    assert_error(moderator.mute("nowhere", member.username), 404, "not_found")
    assert_error(moderator.delete(f"/api/rooms/nowhere/mutes/{member.username}"), 404, "not_found")


# Bans

def test_a_ban_refuses_the_users_login_and_every_request(moderator, member, room, make_client):
    response = moderator.ban(member.username, reason="spam")
    assert response.status_code == 201
    assert_fields(response.json, username=member.username, by=moderator.username, reason="spam")
    assert TIME_FORMAT.match(response.json["created_at"])
    assert_error(member.get("/api/auth/me"), 403, "banned")
    assert_error(member.get("/api/rooms"), 403, "banned")
    assert_error(member.history(room), 403, "banned")
    assert_error(member.send(room, "let me in"), 403, "banned")
    assert_error(make_client().login(member.username), 403, "banned")


def test_a_banned_user_with_a_wrong_password_gets_invalid_credentials(moderator, member, make_client):
    moderator.ban(member.username)
    assert_error(make_client().login(member.username, "not the password"), 401, "invalid_credentials")


def test_a_ban_leaves_other_users_alone(moderator, member, room, make_client):
    other = make_client()
    other.register()
    moderator.ban(member.username)
    assert other.get("/api/auth/me").status_code == 200
    assert other.send(room, "unaffected").status_code == 201


def test_unban_restores_the_kept_session(moderator, member, room, make_client):
    moderator.ban(member.username, reason=None)
    response = moderator.delete(f"/api/bans/{member.username}")
    assert response.status_code == 204 and response.data == b""
    assert_fields(member.get("/api/auth/me").json, user=member.user, csrf_token=member.csrf)
    assert member.send(room, "I'm back").status_code == 201
    assert make_client().login(member.username).status_code == 200


def test_a_ban_needs_a_username(moderator):
    assert_error(moderator.post("/api/bans", json={"reason": "no one"}), 422, "validation_error", ["username"])


# Lists of bans and mutes

def test_bans_are_listed_newest_first(moderator, make_client):
    assert moderator.get("/api/bans").json == {"bans": []}
    first, second = make_client(), make_client()
    first.register()
    second.register()
    banned = [moderator.ban(first.username, reason="spam").json, moderator.ban(second.username).json]
    response = moderator.get("/api/bans")
    assert response.status_code == 200
    assert response.json["bans"] == banned[::-1]
    assert_fields(response.json["bans"][1], username=first.username, by=moderator.username, reason="spam")
    moderator.delete(f"/api/bans/{first.username}")
    assert [ban["username"] for ban in moderator.get("/api/bans").json["bans"]] == [second.username]


def test_mutes_in_force_are_listed_per_room(app, moderator, member, room, make_client):
    other, elsewhere = make_client(), member.create_room()
    other.register()
    assert moderator.get(f"/api/rooms/{room}/mutes").json == {"mutes": []}
    long = moderator.mute(room, member.username, minutes=60, reason="flooding").json
    short = moderator.mute(room, other.username, minutes=5).json
    moderator.mute(elsewhere, other.username, minutes=5)
    response = moderator.get(f"/api/rooms/{room}/mutes")
    assert response.status_code == 200
    assert response.json["mutes"] == [short, long]  # the soonest to end first
    assert_fields(long, room=room, username=member.username, by=moderator.username, reason="flooding")
    moderator.delete(f"/api/rooms/{room}/mutes/{other.username}")
    assert moderator.get(f"/api/rooms/{room}/mutes").json["mutes"] == [long]
    with app.app_context():  # a mute that ran out is not in force, even before the sweep removes it
        from chat.extensions import db  # noqa: PLC0415
        from chat.models import Mute  # noqa: PLC0415

        Mute.query.update({"until": datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)})
        db.session.commit()
    assert moderator.get(f"/api/rooms/{room}/mutes").json["mutes"] == []
    assert member.send(room, "free again").status_code == 201


def test_listing_the_mutes_of_an_unknown_room_is_404(moderator):
    assert_error(moderator.get("/api/rooms/nowhere/mutes"), 404, "not_found")


# Locks

def test_a_locked_room_takes_posts_from_moderators_only(moderator, member, room):
    response = lock(moderator, room)
    assert response.status_code == 200
    assert_fields(response.json["room"], slug=room, locked=True, slow_mode_seconds=0)
    assert member.get(f"/api/rooms/{room}").json["room"]["locked"] is True
    assert [r["locked"] for r in member.get("/api/rooms").json["rooms"]] == [True]
    assert_error(member.send(room, "hello?"), 403, "room_locked")
    assert moderator.send(room, "announcement").status_code == 201
    assert [m["body"] for m in member.history(room).json["messages"]] == ["announcement"]


def test_unlock_opens_the_room_again(moderator, member, room):
    lock(moderator, room)
    response = lock(moderator, room, "unlock")
    assert response.status_code == 200 and response.json["room"]["locked"] is False
    assert member.send(room, "open again").status_code == 201


def test_locking_an_unknown_room_is_404(moderator):
    assert_refused(lambda action: lock(moderator, "nowhere", action), ["lock", "unlock"], 404, "not_found")


# Slow mode

def slow_mode(browser, slug, seconds, **extra):
    return browser.post(f"/api/rooms/{slug}/slow_mode", json={"seconds": seconds, **extra})


def test_slow_mode_answers_the_room_and_every_room_object_shows_it(moderator, member, room):
    response = slow_mode(moderator, room, 30)
    assert response.status_code == 200
    assert_fields(response.json["room"], slug=room, locked=False, slow_mode_seconds=30)
    assert member.get(f"/api/rooms/{room}").json["room"]["slow_mode_seconds"] == 30
    assert [r["slow_mode_seconds"] for r in member.get("/api/rooms").json["rooms"]] == [30]
    assert lock(moderator, room).json["room"]["slow_mode_seconds"] == 30
    assert slow_mode(moderator, room, 0).json["room"]["slow_mode_seconds"] == 0


def test_in_slow_mode_a_users_next_post_waits_that_many_seconds(moderator, member, room, make_client):
    elsewhere = member.create_room()
    slow_mode(moderator, room, 60)
    assert member.send(room, "first").status_code == 201
    refused = member.send(room, "second")
    assert_error(refused, 429, "slow_mode")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert member.send(elsewhere, "other rooms are not slow").status_code == 201
    other = make_client()
    other.register()
    assert other.send(room, "each user has their own pace").status_code == 201
    assert [m["body"] for m in member.history(room).json["messages"]] == ["first", "each user has their own pace"]


def test_slow_mode_counts_from_the_last_post_and_retry_after_says_when(moderator, member, room):
    slow_mode(moderator, room, 1)
    assert member.send(room, "first").status_code == 201
    refused = member.send(room, "too soon")
    assert_error(refused, 429, "slow_mode")
    assert refused.headers["Retry-After"] == "1"
    wait_until(lambda: member.send(room, "later").status_code == 201, timeout=3, interval=0.2, what="slow mode to pass")
    assert_error(member.send(room, "too soon again"), 429, "slow_mode")


def test_slow_mode_spares_moderators(moderator, room):
    slow_mode(moderator, room, 3600)
    assert [moderator.send(room, f"notice {n}").status_code for n in range(3)] == [201] * 3


def test_slow_mode_answers_a_repeated_client_id_with_the_original(moderator, member, room):
    slow_mode(moderator, room, 3600)
    first = member.send(room, "once", client_id="c-1")
    assert first.status_code == 201
    again = member.send(room, "once", client_id="c-1")
    assert again.status_code == 200 and again.json == first.json
    assert_error(member.send(room, "twice", client_id="c-2"), 429, "slow_mode")


def test_slow_mode_holds_across_processes(make_app, moderator, member, room):
    slow_mode(moderator, room, 3600)
    assert member.send(room, "here").status_code == 201
    elsewhere = AuthActions(make_app().test_client())
    assert elsewhere.login(member.username).status_code == 200
    assert_error(elsewhere.send(room, "and there"), 429, "slow_mode")


def test_turning_slow_mode_off_lets_users_post_again(moderator, member, room):
    slow_mode(moderator, room, 3600)
    member.send(room, "first")
    slow_mode(moderator, room, 0)
    assert [member.send(room, f"then {n}").status_code for n in range(3)] == [201] * 3


def test_slow_mode_comes_after_mutes_and_locks(moderator, member, room):
    slow_mode(moderator, room, 3600)
    member.send(room, "first")
    moderator.mute(room, member.username)
    assert_error(member.send(room, "muted first"), 403, "muted")
    moderator.delete(f"/api/rooms/{room}/mutes/{member.username}")
    lock(moderator, room)
    assert_error(member.send(room, "locked first"), 403, "room_locked")


def test_slow_mode_seconds_outside_0_to_3600_are_422(moderator, room):
    assert_refused(lambda seconds: slow_mode(moderator, room, seconds), [-1, 3601, "5", 2.5, None, True],
                   422, "validation_error", ["seconds"])
    assert_error(moderator.post(f"/api/rooms/{room}/slow_mode", json={}), 422, "validation_error", ["seconds"])
    assert moderator.get(f"/api/rooms/{room}").json["room"]["slow_mode_seconds"] == 0
    assert slow_mode(moderator, room, 3600).status_code == 200


def test_slow_mode_in_an_unknown_room_is_404_before_the_body_is_read(moderator):
    assert_error(slow_mode(moderator, "nowhere", 10), 404, "not_found")
    assert_refused(lambda bad: moderator.post("/api/rooms/nowhere/slow_mode", data=bad[0], content_type=bad[1]),
                   BAD_BODIES, 404, "not_found")


# Purges

def purge(browser, username, minutes=60, **extra):
    return browser.post("/api/moderation/purge", json={"username": username, "minutes": minutes, **extra})


def bodies(browser, slug):
    return [(m["body"], m["deleted"]) for m in browser.history(slug).json["messages"]]


def test_purge_in_one_room_tombstones_that_users_recent_messages_there(moderator, member, room, make_client):
    elsewhere = member.create_room()
    other = make_client()
    other.register()
    mine = [member.send(room, f"spam {n}").json["message"]["id"] for n in range(3)]
    other.send(room, "innocent")
    member.send(elsewhere, "spam elsewhere")
    response = purge(moderator, member.username, room=room)
    assert response.status_code == 200
    assert response.json == {"deleted": mine}
    assert bodies(other, room) == [("", True)] * 3 + [("innocent", False)]
    assert bodies(other, elsewhere) == [("spam elsewhere", False)]


def test_purge_without_a_room_covers_every_room(moderator, member, room):
    elsewhere = member.create_room()
    ids = [member.send(room, "one").json["message"]["id"], member.send(elsewhere, "two").json["message"]["id"]]
    assert purge(moderator, member.username.upper(), room=None).json == {"deleted": ids}
    assert bodies(member, room) == bodies(member, elsewhere) == [("", True)]


def test_purge_keeps_older_messages_and_skips_those_already_deleted(app, moderator, member, room):
    old = member.send(room, "old").json["message"]["id"]
    gone = member.send(room, "gone").json["message"]["id"]
    recent = member.send(room, "recent").json["message"]["id"]
    member.delete(f"/api/rooms/{room}/messages/{gone}")
    with app.app_context():
        from chat.extensions import db  # noqa: PLC0415
        from chat.models import Message  # noqa: PLC0415

        ms, seq = map(int, old.split("-"))
        Message.query.filter_by(event_ms=ms, event_seq=seq).update(
            {"created_at": datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=61)})
        db.session.commit()
    assert purge(moderator, member.username, minutes=60).json == {"deleted": [recent]}
    assert bodies(member, room) == [("old", False), ("", True), ("", True)]
    assert purge(moderator, member.username, minutes=60).json == {"deleted": []}  # nothing left to purge


def test_purge_is_logged_once_with_its_reason(moderator, member, room):
    for n in range(3):
        member.send(room, f"spam {n}")
    purge(moderator, member.username, room=room, reason="bot")
    purge(moderator, member.username)
    entries = moderator.get("/api/moderation/actions").json["actions"]
    assert [(a["action"], a["room"], a["target"], a["reason"]) for a in entries] == [
        ("purge", None, member.username, None), ("purge", room, member.username, "bot")]


def test_purge_fields_are_checked_before_the_names_are_looked_up(moderator, member):
    def attempt(payload):
        return moderator.post("/api/moderation/purge", json=payload)

    assert_refused(lambda minutes: purge(moderator, unique(), minutes), [0, 10081, "5", 2.5, None],
                   422, "validation_error", ["minutes"])
    assert_refused(attempt, [{"minutes": 5}, {"username": None, "minutes": 5}, {"username": "x" * 33, "minutes": 5}],
                   422, "validation_error", ["username"])
    assert_refused(lambda room: purge(moderator, unique(), room=room), ["", 42, "x" * 65],
                   422, "validation_error", ["room"])
    assert_refused(lambda payload: purge(moderator, **payload),
                   [{"username": unique()}, {"username": "no\x00body"},
                    {"username": member.username, "room": "nowhere"}, {"username": member.username, "room": "No Where"}],
                   404, "not_found")
    assert_refused(lambda bad: moderator.post("/api/moderation/purge", data=bad[0], content_type=bad[1]),
                   BAD_BODIES[:1], 413, "payload_too_large")


# The actions log

def test_the_actions_log_lists_what_moderators_did_newest_first(moderator, member, room):
    message = member.send(room, "rude").json["message"]
    moderator.delete(f"/api/rooms/{room}/messages/{message['id']}")
    moderator.mute(room, member.username, reason="rude")
    moderator.delete(f"/api/rooms/{room}/mutes/{member.username}")
    moderator.ban(member.username, reason="again")
    moderator.delete(f"/api/bans/{member.username}")
    lock(moderator, room)
    lock(moderator, room, "unlock")
    response = moderator.get("/api/moderation/actions")
    assert response.status_code == 200
    actions = response.json["actions"]
    assert [(a["action"], a["target"]) for a in actions] == [
        ("unlock", actions[0]["target"]), ("lock", actions[1]["target"]),
        ("unban", member.username), ("ban", member.username),
        ("unmute", member.username), ("mute", member.username),
        ("delete_message", message["id"]),
    ]
    assert all(a["moderator"] == moderator.username and TIME_FORMAT.match(a["created_at"]) for a in actions)
    assert [a["room"] for a in actions if a["action"] not in ("ban", "unban")] == [room] * 5
    assert [a["reason"] for a in actions if a["action"] in ("ban", "mute")] == ["again", "rude"]
    assert len({a["id"] for a in actions}) == len(actions)


def test_the_actions_log_keeps_each_reason_given(moderator, member, room):
    member.send(room, "spam")
    moderator.mute(room, member.username, reason="mute reason")
    moderator.ban(member.username, reason="ban reason")
    slow_mode(moderator, room, 30, reason="slow reason")
    purge(moderator, member.username, room=room, reason="purge reason")
    slow_mode(moderator, room, 0)
    entries = moderator.get("/api/moderation/actions").json["actions"]
    assert [(a["action"], a["room"], a["target"], a["reason"]) for a in entries] == [
        ("slow_mode", room, room, None), ("purge", room, member.username, "purge reason"),
        ("slow_mode", room, room, "slow reason"), ("ban", None, member.username, "ban reason"),
        ("mute", room, member.username, "mute reason")]


def test_the_actions_log_names_each_moderator(make_moderator, member, room):
    first, second = make_moderator(), make_moderator()
    first.mute(room, member.username)
    lock(second, room)
    assert [(a["moderator"], a["action"]) for a in second.get("/api/moderation/actions").json["actions"]] == [
        (second.username, "lock"), (first.username, "mute")]


def test_the_actions_log_is_empty_at_first(moderator):
    assert moderator.get("/api/moderation/actions").json["actions"] == []


def test_the_actions_log_limit(moderator, member, room):
    for minutes in (1, 2, 3):
        moderator.mute(room, member.username, minutes=minutes)
    newest = moderator.get("/api/moderation/actions", query_string={"limit": 2}).json["actions"]
    everything = moderator.get("/api/moderation/actions").json["actions"]
    assert len(everything) == 3 and newest == everything[:2]


def test_the_actions_log_limit_outside_1_to_200_is_422(moderator):
    assert_refused(lambda limit: moderator.get("/api/moderation/actions", query_string={"limit": limit}),
                   [0, 201, "many"], 422, "validation_error", ["limit"])


def test_moderators_are_refused_like_anyone_when_banned(app, make_moderator, member, make_client):
    moderator, banned = make_moderator(), make_client()
    banned.register()
    moderator.ban(banned.username)
    # Moderators cannot be banned through the API: this one was promoted by an operator after the ban.
    assert app.test_cli_runner().invoke(args=["users", "promote", banned.username]).exit_code == 0
    assert_error(banned.get("/api/moderation/actions"), 403, "banned")
    assert_error(banned.ban(member.username), 403, "banned")


# Moderators are not muted or banned

def test_a_moderator_cannot_mute_or_ban_a_moderator_or_themselves(make_moderator, member, room):
    moderator, other = make_moderator(), make_moderator()
    for target in (moderator.username, other.username, other.username.upper()):
        assert_error(moderator.mute(room, target), 403, "forbidden")
        assert_error(moderator.ban(target, reason="no"), 403, "forbidden")
    assert other.send(room, "not muted").status_code == 201
    assert moderator.send(room, "me neither").status_code == 201
    assert other.get("/api/auth/me").status_code == 200
    assert moderator.get("/api/moderation/actions").json["actions"] == []  # nothing was done


def test_refusing_a_moderator_comes_after_422_and_404(make_moderator, room):
    moderator = make_moderator()
    assert_error(moderator.mute(room, moderator.username, minutes=0), 422, "validation_error", ["minutes"])
    assert_error(moderator.ban(moderator.username, reason="x" * 501), 422, "validation_error", ["reason"])
    assert_error(moderator.mute(room, unique()), 404, "not_found")
    assert_error(moderator.mute("nowhere", moderator.username), 404, "not_found")
    assert_error(moderator.mute(room, moderator.username), 403, "forbidden")


def test_a_deletion_a_lock_and_an_unlock_keep_their_optional_reason(moderator, member, room):
    """The dashboard asks for a reason for every action: a deletion, a lock and an unlock take one in an
    optional body (none is needed) and the log keeps it."""
    doomed = member.send(room, "spam").json["message"]
    assert moderator.delete(f"/api/rooms/{room}/messages/{doomed['id']}", json={"reason": "a spam link"}).status_code == 200
    assert moderator.post(f"/api/rooms/{room}/lock", json={"reason": "a raid"}).status_code == 200
    assert moderator.post(f"/api/rooms/{room}/unlock").status_code == 200  # no body: still fine
    entries = moderator.get("/api/moderation/actions").json["actions"]
    assert [(entry["action"], entry["reason"]) for entry in entries[:3]] == [
        ("unlock", None), ("lock", "a raid"), ("delete_message", "a spam link")]
    assert_error(moderator.post(f"/api/rooms/{room}/lock", json={"reason": "x" * 501}), 422, "validation_error",
                 ["reason"])
