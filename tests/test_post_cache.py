"""The posts' memory (caches.PostCache, writer.py): a process lets a post through from what it read before,
and the write itself proves nothing changed meanwhile. Each test warms another app's memory with a post (an
app is a process's worth of memory), changes a rule through this one, and checks that the other obeys it
on the very next post."""
import pytest
from sqlalchemy.exc import IntegrityError

from chat import actions, auth, writer
from chat.extensions import db
from chat.ids import EventId
from chat.models import Message, Room, bump_post_rules, post_rules_version
from tests.support import AuthActions, assert_error


def warm(browser, room) -> None:
    """Post once, and check that the browser's app now keeps its session and the room's rules in memory."""
    assert browser.send(room, "warm").status_code == 201
    application = browser.client.application
    with application.app_context():
        room_id, user_id = Room.query.filter_by(slug=room).one().id, browser.user["id"]
        cache = auth.post_cache()
        assert cache.rules(room_id, user_id) is not None and len(cache._sessions) == 1


@pytest.fixture
def elsewhere(make_app, member, room):
    """The member signed in on another app, whose memory already holds their session and the room's rules."""
    browser = AuthActions(make_app().test_client())
    assert browser.login(member.username).status_code == 200
    warm(browser, room)
    return browser


@pytest.fixture
def moderator(make_moderator):
    return make_moderator()


def test_a_mute_is_obeyed_by_the_next_post_on_another_process(moderator, member, room, elsewhere):
    assert moderator.mute(room, member.username).status_code == 201
    assert_error(elsewhere.send(room, "muted now"), 403, "muted")
    assert moderator.delete(f"/api/rooms/{room}/mutes/{member.username}").status_code == 204
    assert elsewhere.send(room, "free again").status_code == 201


def test_a_lock_is_obeyed_by_the_next_post_on_another_process(moderator, room, elsewhere):
    assert moderator.post(f"/api/rooms/{room}/lock").status_code == 200
    assert_error(elsewhere.send(room, "locked now"), 403, "room_locked")


def test_slow_mode_is_obeyed_by_the_next_posts_on_another_process(moderator, room, elsewhere):
    assert moderator.post(f"/api/rooms/{room}/slow_mode", json={"seconds": 3600}).status_code == 200
    answers = [elsewhere.send(room, f"slow {index}") for index in range(2)]
    assert_error(answers[-1], 429, "slow_mode")


def test_a_ban_is_obeyed_by_the_next_post_on_another_process(moderator, member, room, elsewhere):
    assert moderator.ban(member.username).status_code == 201
    assert_error(elsewhere.send(room, "banned now"), 403, "banned")


def test_logout_everywhere_is_obeyed_by_the_next_post_on_another_process(member, room, elsewhere):
    assert member.post("/api/auth/logout_all").status_code == 204
    assert_error(elsewhere.send(room, "signed out"), 401, "not_authenticated")


def test_a_logout_is_obeyed_by_the_next_post_with_that_cookie_on_another_process(app, make_app, member, room):
    other = make_app().test_client()
    other.set_cookie("chat_session", member.client.get_cookie("chat_session").value)
    same_session = AuthActions(other)
    same_session.csrf = member.csrf
    same_session.user = member.user
    warm(same_session, room)
    assert member.post("/api/auth/logout").status_code == 204
    assert_error(same_session.send(room, "signed out"), 401, "not_authenticated")


def test_a_demotion_is_obeyed_by_the_next_post_on_another_process(app, make_app, make_moderator, moderator, room):
    demoted = make_moderator()
    other = AuthActions(make_app().test_client())
    assert other.login(demoted.username).status_code == 200
    assert moderator.post(f"/api/rooms/{room}/lock").status_code == 200
    warm(other, room)
    with app.app_context():
        actions.set_role(actions.find_user(demoted.username), "user")
    assert_error(other.send(room, "a user may not"), 403, "room_locked")


def test_a_post_memory_does_not_let_through_is_checked_from_the_database_session_and_all(
        make_app, moderator, member, room):
    """In slow mode memory lets nothing through by itself: the post's session is read again, so a ban answered
    on another process comes first even for a repeat, which would otherwise be answered with the original."""
    assert moderator.post(f"/api/rooms/{room}/slow_mode", json={"seconds": 3600}).status_code == 200
    browser = AuthActions(make_app().test_client())
    assert browser.login(member.username).status_code == 200
    assert browser.send(room, "once", client_id="c-1").status_code == 201  # memory: the session, slow mode
    assert browser.send(room, "once", client_id="c-1").status_code == 200
    assert moderator.ban(member.username).status_code == 201
    assert_error(browser.send(room, "once", client_id="c-1"), 403, "banned")


def test_memory_only_lets_posts_through_a_refusal_is_decided_by_the_database(member, room, elsewhere):
    """A signed-out session with a wrong CSRF token is 401 (API.md's order), not what memory would say."""
    assert member.post("/api/auth/logout_all").status_code == 204
    elsewhere.csrf = "wrong"
    assert_error(elsewhere.send(room, "signed out"), 401, "not_authenticated")


def test_a_change_that_does_not_concern_the_post_costs_a_read_not_a_refusal(make_client, moderator, room,
                                                                            elsewhere):
    bystander = make_client()
    assert bystander.register().status_code == 201
    assert moderator.mute(room, bystander.username).status_code == 201
    assert elsewhere.send(room, "still welcome").status_code == 201
    warm(elsewhere, room)  # memory is current again


def test_a_repeated_client_id_is_answered_with_the_original_and_counts_in_no_limit(make_app, member, room):
    limited = AuthActions(make_app(CHAT_RATE_LIMIT="2/60").test_client())
    assert limited.login(member.username).status_code == 200
    warm(limited, room)
    first = limited.send(room, "once", client_id="c-1")
    assert first.status_code == 201
    for _ in range(3):
        again = limited.send(room, "once", client_id="c-1")
        assert again.status_code == 200 and again.json == first.json
    assert_error(limited.send(room, "second", client_id="c-2"), 429, "rate_limited")
    assert limited.send(room, "once", client_id="c-1").json == first.json  # a repeat beats the limit


def test_a_stale_post_is_not_recorded_and_takes_no_id(app, member, room):
    """The writer refuses a post whose checks read an older version, before anything is written."""
    with app.app_context():
        room_row = Room.query.filter_by(slug=room).one()
        before = (room_row.event_ms, room_row.event_seq, Message.query.count())
        user_id, version = room_row.created_by_id, post_rules_version()
        bump_post_rules()
        db.session.commit()
        current = post_rules_version()
        assert current > version
        with pytest.raises(writer.Stale) as refused:
            writer.current().record(writer.Post(room_row.id, room, user_id, member.username, "late", None, version))
        assert refused.value.version == current
        db.session.expire_all()
        room_row = Room.query.filter_by(slug=room).one()
        assert (room_row.event_ms, room_row.event_seq, Message.query.count()) == before
        answer, created = writer.current().record(
            writer.Post(room_row.id, room, user_id, member.username, "current", None, current))
        assert created and answer["body"] == "current"


def test_a_group_over_several_rooms_records_all_but_the_stale_posts_without_a_gap(app, member, room):
    """One commit for posts of three rooms (on PostgreSQL one statement): the stale post is left out and takes
    no id, the rest of its room is recorded, and each room's posts get the room's next ids in their order."""
    other_rooms = [member.create_room(), member.create_room()]
    with app.app_context():
        rows = {slug: Room.query.filter_by(slug=slug).one() for slug in [room, *other_rooms]}
        before = {slug: row.event_seq for slug, row in rows.items()}
        user_id, old = member.user["id"], post_rules_version()
        bump_post_rules()
        db.session.commit()
        current = post_rules_version()
        post = lambda slug, body, version: writer.Post(rows[slug].id, slug, user_id, member.username, body,  # noqa: E731
                                                       None, version)
        batch = [post(other_rooms[1], "b1", current), post(room, "a1", current), post(room, "stale", old),
                 post(other_rooms[0], "c1", None), post(room, "a2", None), post(other_rooms[1], "b2", current)]
        writer._record(batch)
        with pytest.raises(writer.Stale):
            batch[2].outcome()
        answered = {each.body: each.outcome()[0] for each in batch if each is not batch[2]}
        db.session.expire_all()
        for slug, bodies in [(room, ["a1", "a2"]), (other_rooms[0], ["c1"]), (other_rooms[1], ["b1", "b2"])]:
            seqs = [EventId.parse(answered[body]["id"]).seq for body in bodies]
            assert seqs == list(range(before[slug] + 1, before[slug] + 1 + len(bodies)))
            assert Room.query.filter_by(slug=slug).one().event_seq == before[slug] + len(bodies)
            assert [message.body for message in Message.query.filter_by(room_id=rows[slug].id)
                    .order_by(Message.event_ms, Message.event_seq)] == bodies


def test_a_group_with_a_client_id_recorded_meanwhile_records_the_others_one_by_one(app, member, room):
    """A group of which one post repeats a client_id recorded before (on PostgreSQL, its one statement writes
    nothing): its posts are recorded one by one; the repeat is answered IntegrityError (its request answers
    with the message recorded before), the others are recorded, in their order, without a gap."""
    other = member.create_room()
    assert member.send(room, "first", client_id="c-1").status_code == 201
    with app.app_context():
        rows = {slug: Room.query.filter_by(slug=slug).one() for slug in (room, other)}
        before = {slug: row.event_seq for slug, row in rows.items()}
        user_id = member.user["id"]
        post = lambda slug, body, client_id: writer.Post(rows[slug].id, slug, user_id, member.username, body,  # noqa: E731
                                                         client_id)
        batch = [post(room, "a1", "c-2"), post(other, "b1", None), post(room, "again", "c-1"),
                 post(room, "a2", None)]
        writer._record(batch)
        with pytest.raises(IntegrityError):
            batch[2].outcome()
        answered = {each.body: each.outcome() for each in batch if each is not batch[2]}
        assert all(created for _, created in answered.values())
        db.session.expire_all()
        for slug, bodies in [(room, ["a1", "a2"]), (other, ["b1"])]:
            seqs = [EventId.parse(answered[body][0]["id"]).seq for body in bodies]
            assert seqs == list(range(before[slug] + 1, before[slug] + 1 + len(bodies)))
            assert Room.query.filter_by(slug=slug).one().event_seq == before[slug] + len(bodies)
        assert [message.body for message in Message.query.filter_by(room_id=rows[room].id)
                .order_by(Message.event_ms, Message.event_seq)] == ["first", "a1", "a2"]


def test_a_groups_allowances_are_taken_in_one_round_trip_as_one_by_one(make_app, member, room):
    """ratelimit.take_post_allowances answers as Streams.post_allowed would, post by post, in order."""
    from chat import ratelimit, streams  # noqa: PLC0415

    limited = make_app(CHAT_RATE_LIMIT="2/60", CHAT_USER_BYTES_LIMIT="10/60")
    with limited.app_context():
        user_id = member.user["id"]
        room_id = Room.query.filter_by(slug=room).one().id
        waits = ratelimit.take_post_allowances([(user_id, room_id, 1), (user_id, room_id, 20), (user_id, room_id, 1),
                                                (user_id, room_id, 1)])
        assert waits[0] == 0 and waits[1] > 0 and waits[2] == 0 and waits[3] > 0  # bytes, then the room's count
        ratelimit.give_back(user_id, room_id, 1)
        config = limited.config
        assert streams.current().post_allowed(user_id, room_id, 1, config["CHAT_RATE_LIMIT_PARSED"],
                                              config["CHAT_USER_RATE_LIMIT_PARSED"],
                                              config["CHAT_USER_BYTES_LIMIT_PARSED"]) == 0
