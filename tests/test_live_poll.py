"""Live events by long-polling (API.md, "Live events: long-polling"), against a real gunicorn server."""
import threading
import time

import pytest

from tests.support import HttpUser, live_moderator, metric, no_polls_waiting, poll_path, posted, wait_until


def cursor_of(user, slug):
    """Where the room stands now, as history reports it."""
    return user.get(f"/api/rooms/{slug}/messages").json()["cursor"]


class Background:
    """A request running in a thread, so the test can act while it waits; `result()` with a deadline."""

    def __init__(self, call):
        self.answer, self.error, self.finished_at = None, None, None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call):
        try:
            self.answer = call()
        except Exception as error:  # noqa: BLE001 - re-raised in result()
            self.error = error
        self.finished_at = time.monotonic()

    def result(self, timeout):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"no answer within {timeout} s"
        if self.error:
            raise self.error
        return self.answer


def waiting_poll(server, user, slug, *, others_waiting=False, **params):
    """Start a poll in the background and return once the server counts it as waiting. Unless this
    test's own polls are waiting, first wait for earlier tests' abandoned polls to end."""
    before = metric(server, "chat_polls_waiting") if others_waiting else no_polls_waiting(server)
    started = Background(lambda: user.get(poll_path(slug), params=params, timeout=40))
    wait_until(lambda: started.finished_at or metric(server, "chat_polls_waiting") > before, what="the poll waits")
    assert started.finished_at is None, "the poll answered instead of waiting"
    return started


def assert_api_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.json()["error"]["code"] == code, response.json()


def test_answers_at_once_with_existing_events(live):
    user = live.user()
    slug = user.create_room()
    start = cursor_of(user, slug)
    messages = [posted(user, slug) for _ in range(3)]
    started = time.monotonic()
    response = user.get(poll_path(slug), params={"cursor": start, "timeout": 20})
    assert time.monotonic() - started < 3
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["events"] == [{"id": message["id"], "event": "message", "data": message} for message in messages]
    assert body["cursor"] == messages[-1]["id"]
    assert body["online"] == [user.user["username"]]
    # From its cursor, the next poll has nothing yet: it waits, then answers as it found things.
    again = user.get(poll_path(slug), params={"cursor": body["cursor"], "timeout": 0}).json()
    assert again["events"] == [] and again["cursor"] == body["cursor"]


def test_at_most_100_events_per_answer_in_order(live):
    # The default rate limit is 10 messages per 10 s per user and room: twelve posters.
    posters = [live.user() for _ in range(12)]
    slug = posters[0].create_room()
    start = cursor_of(posters[0], slug)
    ids = [posted(poster, slug, f"{index}-{n}")["id"] for index, poster in enumerate(posters) for n in range(10)]
    first = posters[0].get(poll_path(slug), params={"cursor": start, "timeout": 0}).json()
    assert [event["id"] for event in first["events"]] == ids[:100]
    assert first["cursor"] == ids[99]
    second = posters[0].get(poll_path(slug), params={"cursor": first["cursor"], "timeout": 0}).json()
    assert [event["id"] for event in second["events"]] == ids[100:]
    assert second["cursor"] == ids[-1]


def test_waits_then_wakes_on_a_new_durable_event(live):
    user, other = live.user(), live.user()
    slug = user.create_room()
    start = cursor_of(user, slug)
    waiting = waiting_poll(live, user, slug, cursor=start, timeout=20)
    message = posted(other, slug)
    posted_at = time.monotonic()
    response = waiting.result(timeout=5)
    assert waiting.finished_at - posted_at < 2
    assert response.status_code == 200
    body = response.json()
    assert body["events"] == [{"id": message["id"], "event": "message", "data": message}]
    assert body["cursor"] == message["id"]
    assert user.user["username"] in body["online"]


def test_no_cursor_waits_for_what_comes_next(live):
    user = live.user()
    slug = user.create_room()
    posted(user, slug)
    waiting = waiting_poll(live, user, slug, timeout=20)
    message = posted(user, slug)
    body = waiting.result(timeout=5).json()
    assert [event["id"] for event in body["events"]] == [message["id"]]


def test_times_out_with_no_events_and_the_cursor_unchanged(live):
    user = live.user()
    slug = user.create_room()
    cursor = posted(user, slug)["id"]
    started = time.monotonic()
    response = user.get(poll_path(slug), params={"cursor": cursor, "timeout": 1})
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 4, elapsed
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["events"] == [] and body["cursor"] == cursor
    assert isinstance(body["online"], list) and user.user["username"] in body["online"]


def test_timeout_is_capped_at_25_seconds(live):
    user = live.user()
    slug = user.create_room()
    cursor = posted(user, slug)["id"]
    started = time.monotonic()
    response = user.get(poll_path(slug), params={"cursor": cursor, "timeout": 300}, timeout=60)
    elapsed = time.monotonic() - started
    assert 24.5 <= elapsed < 29, elapsed
    assert response.status_code == 200
    assert response.json()["events"] == [] and response.json()["cursor"] == cursor


def test_logout_during_a_waiting_poll_answers_401_within_2_seconds(live):
    user = live.user()
    other_session = HttpUser(live.url)
    assert other_session.login(user.user["username"]).status_code == 200
    slug = user.create_room()
    cursor = cursor_of(user, slug)
    mine = waiting_poll(live, user, slug, cursor=cursor, timeout=20)
    theirs = waiting_poll(live, other_session, slug, cursor=cursor, timeout=20, others_waiting=True)
    logged_out_at = time.monotonic()
    assert user.post("/api/auth/logout").status_code == 204
    assert_api_error(mine.result(timeout=2.5), 401, "not_authenticated")
    assert mine.finished_at - logged_out_at < 2
    print(f"logout answered the waiting poll in {mine.finished_at - logged_out_at:.3f} s")
    # The other session of the same user keeps waiting, and gets what comes next.
    assert theirs.finished_at is None
    message = posted(other_session, slug)
    assert [event["id"] for event in theirs.result(timeout=5).json()["events"]] == [message["id"]]


def test_ban_during_a_waiting_poll_answers_403_banned_within_2_seconds(live):
    moderator = live_moderator(live)
    victim, bystander = live.user(), live.user()
    slug = victim.create_room()
    cursor = cursor_of(victim, slug)
    victims = [waiting_poll(live, victim, slug, cursor=cursor, timeout=20, others_waiting=bool(n)) for n in range(2)]
    watching = waiting_poll(live, bystander, slug, cursor=cursor, timeout=20, others_waiting=True)
    banned_at = time.monotonic()
    assert moderator.post("/api/bans", json={"username": victim.user["username"]}).status_code == 201
    for poll in victims:
        assert_api_error(poll.result(timeout=2.5), 403, "banned")
        assert poll.finished_at - banned_at < 2
    print(f"a ban answered the waiting polls in {max(p.finished_at for p in victims) - banned_at:.3f} s")
    assert watching.finished_at is None
    assert_api_error(victim.get(poll_path(slug), params={"cursor": cursor, "timeout": 0}), 403, "banned")


@pytest.mark.parametrize("bad", ["abc", "1-2-3", "-5-0", "1-", "99999999999999999999999-1"])
def test_invalid_cursor_is_400(live, bad):
    user = live.user()
    slug = user.create_room()
    assert_api_error(user.get(poll_path(slug), params={"cursor": bad, "timeout": 0}), 400, "invalid_cursor")


def test_without_a_session_401_and_unknown_room_404(live):
    user = live.user()
    slug = user.create_room()
    assert_api_error(HttpUser(live.url).get(poll_path(slug)), 401, "not_authenticated")
    assert_api_error(user.get(poll_path("no-such-room"), params={"timeout": 0}), 404, "not_found")


def test_only_durable_events_wake_a_poll_and_presence_rides_along(live):
    user, newcomer = live.user(), live.user()
    slug = user.create_room()
    cursor = cursor_of(user, slug)
    waiting = waiting_poll(live, user, slug, cursor=cursor, timeout=3)
    stream = newcomer.events(f"/api/rooms/{slug}/events")  # someone arrives: presence changes
    try:
        assert stream.next(timeout=3).event == "ready"
        body = waiting.result(timeout=6).json()
        assert body["events"] == [] and body["cursor"] == cursor
        assert newcomer.user["username"] in body["online"]
    finally:
        stream.close()
