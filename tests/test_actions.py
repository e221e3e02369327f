"""Each action emits exactly the events it should (STYLE.md), and a replay from the record rebuilds them as sent."""
from datetime import timedelta

import pytest

from chat import actions, streams
from chat.ids import ZERO
from chat.models import Ban, Mute, Report, Room, events_between, find_room
from tests.support import assert_error, beaten_to_insert


@pytest.fixture
def moderator(make_moderator):
    return make_moderator()


def published(app, slug) -> list[tuple[str, dict]]:
    """Every durable event in the room's stream, oldest first; the record's replay of them must be identical."""
    with app.app_context():
        window, entries = streams.current().read_after(slug, ZERO, 1000)
        sent = [(entry.id, entry.type, entry.data) for entry in entries]
        if sent:
            assert events_between(find_room(slug).id, ZERO, window.last, 1000) == sent
    return [(kind, data) for _, kind, data in sent]


def test_lock_and_unlock_each_emit_one_room_updated_with_the_whole_room(app, moderator, room):
    locked = moderator.post(f"/api/rooms/{room}/lock").json["room"]
    unlocked = moderator.post(f"/api/rooms/{room}/unlock").json["room"]
    assert published(app, room) == [("room_updated", {"room": locked}), ("room_updated", {"room": unlocked})]
    assert locked["slow_mode_seconds"] == 0 and unlocked["locked"] is False


def test_slow_mode_emits_one_room_updated_and_a_refused_post_nothing(app, moderator, member, room):
    slowed = moderator.post(f"/api/rooms/{room}/slow_mode", json={"seconds": 60}).json["room"]
    first = member.send(room, "first").json["message"]
    assert member.send(room, "refused").status_code == 429
    off = moderator.post(f"/api/rooms/{room}/slow_mode", json={"seconds": 0}).json["room"]
    assert published(app, room) == [
        ("room_updated", {"room": slowed}),
        ("message", first),
        ("room_updated", {"room": off})]
    assert (slowed["slow_mode_seconds"], off["slow_mode_seconds"]) == (60, 0)


def test_slow_mode_wait_names_posts_so_a_retry_is_not_a_next_post(app):
    with app.app_context():
        limits = streams.current()
        assert limits.slow_mode_wait("r", 1, 60, "client:a") == 0
        assert limits.slow_mode_wait("r", 1, 60, "client:a") == 0  # the same post, retried
        assert 59 <= limits.slow_mode_wait("r", 1, 60, "client:b") <= 60
        assert limits.slow_mode_wait("r", 1, 0, "client:b") == 0  # slow mode lowered to nothing
        assert limits.slow_mode_wait("r", 2, 60, "client:b") == 0  # another user
        assert limits.slow_mode_wait("s", 1, 60, "client:c") == 0  # another room


def test_purge_emits_one_message_deleted_per_message_as_a_single_delete_does(app, moderator, member, room):
    sent = [member.send(room, f"spam {n}").json["message"] for n in range(2)]
    single = member.send(room, "deleted alone").json["message"]
    assert moderator.delete(f"/api/rooms/{room}/messages/{single['id']}").status_code == 200
    deleted = moderator.post("/api/moderation/purge", json={"username": member.username, "minutes": 5}).json["deleted"]
    assert deleted == [message["id"] for message in sent]
    events = published(app, room)
    assert [kind for kind, _ in events] == ["message"] * 3 + ["message_deleted"] * 3
    assert [data for _, data in events[3:]] == [
        {"id": message["id"], "room": room, "deleted_by": moderator.username} for message in [single, *sent]]
    assert all(data["body"] == "" and data["deleted"] for _, data in events[:3])  # replays never show the text


def run_out(app, slug, username):
    """Move a mute's end into the past, as time would."""
    from chat.extensions import db  # noqa: PLC0415
    from chat.ids import utcnow  # noqa: PLC0415
    from chat.models import Mute, find_user  # noqa: PLC0415

    with app.app_context():
        mute = Mute.query.filter_by(room_id=find_room(slug).id, user_id=find_user(username).id).one()
        mute.until = utcnow() - timedelta(seconds=1)
        db.session.commit()


def expire_mutes(app) -> int:
    with app.app_context():
        return actions.expire_mutes()


def test_a_mute_that_runs_out_emits_one_user_unmuted_by_no_one(app, moderator, member, room):
    muted = moderator.mute(room, member.username, minutes=5).json
    assert expire_mutes(app) == 0  # not yet
    run_out(app, room, member.username)
    assert expire_mutes(app) == 1
    assert expire_mutes(app) == 0  # once
    unmuted = {"room": room, "username": member.username, "until": None, "by": None}
    assert published(app, room) == [("user_muted", {k: v for k, v in muted.items() if k != "reason"}),
                                    ("user_unmuted", unmuted)]
    assert member.send(room, "free").status_code == 201
    assert moderator.get("/api/moderation/actions").json["actions"][0]["action"] == "mute"  # no moderator did it

    again = moderator.mute(room, member.username, minutes=5)  # a re-mute after it ran out is a mute again
    assert again.status_code == 201
    assert member.send(room, "muted again").status_code == 403
    run_out(app, room, member.username)
    assert expire_mutes(app) == 1
    assert [kind for kind, _ in published(app, room)] == ["user_muted", "user_unmuted", "message", "user_muted",
                                                          "user_unmuted"]


def test_an_unmute_or_a_re_mute_before_the_sweep_leaves_it_nothing_to_end(app, moderator, member, room, make_client):
    other = make_client()
    other.register()
    moderator.mute(room, member.username, minutes=5)
    moderator.mute(room, other.username, minutes=5)
    assert moderator.delete(f"/api/rooms/{room}/mutes/{member.username}").status_code == 204
    run_out(app, room, other.username)
    moderator.mute(room, other.username, minutes=5)  # ran out, but muted again before the sweep came
    assert expire_mutes(app) == 0
    assert [(kind, data["username"], data["by"]) for kind, data in published(app, room)] == [
        ("user_muted", member.username, moderator.username), ("user_muted", other.username, moderator.username),
        ("user_unmuted", member.username, moderator.username), ("user_muted", other.username, moderator.username)]


def test_a_room_updated_appended_before_slow_mode_existed_reads_with_it_off():
    from chat.events import from_entry  # noqa: PLC0415
    from chat.ids import EventId  # noqa: PLC0415
    from chat.streams import Entry  # noqa: PLC0415

    room = {"slug": "old", "name": "Old", "created_at": "2026-11-25T19:00:00.000Z", "locked": True, "online_count": 0}
    event = from_entry(Entry(EventId(5, 0), "room_updated", {"room": room}, "old", EventId(5, 0)))
    assert event.data == {"room": {**room, "slow_mode_seconds": 0}}
    current = {"room": {**room, "slow_mode_seconds": 30}}
    assert from_entry(Entry(EventId(6, 0), "room_updated", current, "old", EventId(6, 0))).data == current


def test_a_report_emits_report_created_once_and_its_resolution_report_resolved(app, moderator, member, room,
                                                                               make_client):
    """Report events are events of the room (so in its stream, and rebuilt alike by the record), the repeat of a
    report emits nothing, and a deletion shows in the report events that hold the message, as in the message."""
    reporter = make_client()
    assert reporter.register().status_code == 201
    first = member.send(room, "first").json["message"]
    second = member.send(room, "second").json["message"]
    made = reporter.post(f"/api/rooms/{room}/messages/{first['id']}/reports", json={"reason": "spam"})
    assert made.status_code == 201
    repeat = reporter.post(f"/api/rooms/{room}/messages/{first['id']}/reports", json={"reason": "again"})
    assert repeat.status_code == 200 and repeat.json == made.json
    kept = reporter.post(f"/api/rooms/{room}/messages/{second['id']}/reports", json={"reason": "rude"}).json
    dismissed = moderator.post(f"/api/moderation/reports/{kept['id']}/resolve", json={"action": "dismiss"}).json
    resolved = moderator.post(f"/api/moderation/reports/{made.json['id']}/resolve", json={"action": "delete"}).json
    gone = {**first, "body": "", "deleted": True}
    assert resolved["message"] == gone
    assert published(app, room) == [
        ("message", gone),
        ("message", second),
        ("report_created", {"report": {**made.json, "message": gone}}),  # read back now: the text is gone
        ("report_created", {"report": kept}),
        ("report_resolved", {"report": dismissed}),
        ("message_deleted", {"id": first["id"], "room": room, "deleted_by": moderator.username}),
        ("report_resolved", {"report": resolved})]


def test_ban_and_unban_emit_one_event_each_in_the_firehose_alone(app, moderator, member, room):
    """A ban is an event of no room: the firehose holds it (the moderators' feed), no room's stream does. A ban
    in force or an unban of nobody emits nothing; an operator's unban (the CLI) says `"by": null`."""
    from chat.models import find_user  # noqa: PLC0415

    with app.app_context():
        start = streams.current().positions()[0]
    ban = moderator.ban(member.username, reason="spam").json
    assert moderator.ban(member.username).status_code == 201  # in force already
    assert moderator.delete(f"/api/bans/{member.username}").status_code == 204
    assert moderator.delete(f"/api/bans/{member.username}").status_code == 204  # not banned
    assert moderator.ban(member.username).status_code == 201
    with app.app_context():
        assert actions.lift_ban(find_user(member.username)) is True
        _, entries = streams.current().read_after(None, start, 1000)
    assert not any(entry.room for entry in entries)  # of no room
    assert [(entry.type, entry.data) for entry in entries] == [
        ("user_banned", ban),
        ("user_unbanned", {"username": member.username, "by": moderator.username}),
        ("user_banned", {**ban, "reason": None, "created_at": entries[2].data["created_at"]}),
        ("user_unbanned", {"username": member.username, "by": None})]
    assert published(app, room) == []


# Races: two requests read that a row is missing, both insert it; the loser answers as if it had come second.

def test_a_ban_that_loses_a_race_answers_the_ban_in_force_and_publishes_nothing(app, make_moderator, member):
    """Two moderators ban one user at once, the other's ban committed between this one's read and its insert: this
    one answers as banning a banned user does (the ban in force), and the one ban is published once."""
    winner, loser = make_moderator(), make_moderator()
    with app.app_context():
        start = streams.current().positions()[0]
    with beaten_to_insert(Ban, lambda: winner.ban(member.username, reason="spam")) as rival:
        lost = loser.ban(member.username, reason="spam too")
    won = rival[0]
    assert (won.status_code, lost.status_code) == (201, 201), won.json
    assert lost.json == won.json and won.json["by"] == winner.username
    assert loser.get("/api/bans").json["bans"] == [won.json]
    with app.app_context():
        _, entries = streams.current().read_after(None, start, 1000)
    assert [(entry.type, entry.data) for entry in entries] == [("user_banned", won.json)]


def test_a_mute_that_loses_a_race_is_a_re_mute(app, make_moderator, member, room):
    """Two moderators mute one user in one room at once, the other's mute committed between this one's read and
    its insert: this one moves the end of that mute, as muting again does, and each mute is published."""
    winner, loser = make_moderator(), make_moderator()
    with beaten_to_insert(Mute, lambda: winner.mute(room, member.username, minutes=5)) as rival:
        lost = loser.mute(room, member.username, minutes=60, reason="again")
    won = rival[0]
    assert (won.status_code, lost.status_code) == (201, 201)
    assert loser.get(f"/api/rooms/{room}/mutes").json["mutes"] == [lost.json]
    assert published(app, room) == [("user_muted", {k: v for k, v in answer.json.items() if k != "reason"})
                                    for answer in (won, lost)]
    assert member.send(room, "muted").status_code == 403


def test_a_report_that_loses_a_race_to_the_same_report_answers_it(app, member, room, make_client):
    """The same user reporting one message from two tabs at once: one report, answered to both, published once."""
    reporter = make_client()
    assert reporter.register().status_code == 201
    message = member.send(room, "rude").json["message"]
    path = f"/api/rooms/{room}/messages/{message['id']}/reports"
    with beaten_to_insert(Report, lambda: reporter.post(path, json={"reason": "spam"})) as rival:
        lost = reporter.post(path, json={"reason": "spam"})
    won = rival[0]
    assert (won.status_code, lost.status_code) == (201, 200) and lost.json == won.json
    assert published(app, room) == [("message", message), ("report_created", {"report": won.json})]


def test_a_room_created_that_loses_a_race_for_its_address_is_409(member, make_client):
    other = make_client()
    assert other.register().status_code == 201
    with beaten_to_insert(Room, lambda: other.post("/api/rooms", json={"name": "Lobby"})) as rival:
        lost = member.post("/api/rooms", json={"name": "Lobby"})
    assert rival[0].status_code == 201
    assert_error(lost, 409, "room_exists")
