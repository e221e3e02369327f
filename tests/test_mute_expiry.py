"""API.md "Moderation": a mute that runs out broadcasts `user_unmuted` ("by": null) within 5 s of its `until`,
once, from the job each gunicorn worker runs (gunicorn.conf.py), to room streams and polls alike."""
import threading
import time
from datetime import datetime, timedelta, timezone

from tests.support import events_path, live_moderator, operator_context, poll_path

GRACE = 5  # seconds after `until` by which API.md wants the event out


def short_mute(live, moderator, slug, username, seconds=2) -> dict:
    """A mute of a few seconds. The API takes whole minutes, so the test calls the action the endpoint
    calls, as an operator's command would: the live server's workers must notice it running out."""
    from chat import actions  # noqa: PLC0415
    from chat.models import find_room, find_user  # noqa: PLC0415

    with operator_context(live):
        return actions.mute(find_user(moderator.user["username"]), find_room(slug), username,
                            timedelta(seconds=seconds), None)


def timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def poll_until(user, slug, cursor, event_name, timeout=15) -> list[tuple[float, dict]]:
    """Poll from `cursor` until an event of that name comes; every event polled, with when it arrived."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline and not any(event["event"] == event_name for _, event in seen):
        body = user.get(poll_path(slug), params={"cursor": cursor, "timeout": 5}).json()
        seen += [(time.time(), event) for event in body["events"]]
        cursor = body["cursor"]
    return seen


def nothing_after(user, slug, cursor, seconds) -> list:
    """The durable events after `cursor` within the next `seconds` (a waiting poll answers as soon as one comes)."""
    return user.get(poll_path(slug), params={"cursor": cursor, "timeout": seconds}).json()["events"]


def test_a_mute_that_runs_out_is_announced_once_to_streams_and_polls(live):
    moderator, target, watcher, poller = live_moderator(live), live.user(), live.user(), live.user()
    slug = watcher.create_room()
    username = target.user["username"]
    stream = watcher.events(events_path(slug))
    try:
        cursor = stream.wait_for(lambda event: event.event == "ready", timeout=5).json()["cursor"]
        polled = []
        polling = threading.Thread(target=lambda: polled.extend(poll_until(poller, slug, cursor, "user_unmuted")),
                                   daemon=True)
        polling.start()
        muted = short_mute(live, moderator, slug, username)
        until = timestamp(muted["until"])
        assert target.send(slug, "while muted").status_code == 403

        first = stream.next_durable(timeout=5)
        assert (first.event, first.json()["by"]) == ("user_muted", moderator.user["username"])
        ended = stream.next_durable(timeout=until + GRACE + 1 - time.time())
        streamed_at = time.time()
        assert ended.event == "user_unmuted"
        assert ended.json() == {"room": slug, "username": username, "until": None, "by": None}
        assert streamed_at <= until + GRACE, streamed_at - until

        polling.join(timeout=GRACE + 5)
        assert [(event["id"], event["event"]) for _, event in polled] == [(first.id, "user_muted"),
                                                                          (ended.id, "user_unmuted")]
        polled_at, polled_end = polled[-1]
        assert polled_end["data"] == ended.json() and polled_at <= until + GRACE, polled_at - until

        # Once, though both workers run the job every second: nothing follows for several runs.
        assert nothing_after(watcher, slug, ended.id, 3) == []
        assert target.send(slug, "free again").status_code == 201
        assert stream.next_durable(timeout=5).event == "message"
    finally:
        stream.close()


def test_an_unmute_before_the_end_is_the_only_one_and_a_re_mute_runs_out_again(live):
    moderator, target, watcher = live_moderator(live), live.user(), live.user()
    slug = watcher.create_room()
    username = target.user["username"]
    cursor = watcher.get(poll_path(slug), params={"timeout": 0}).json()["cursor"]

    until = timestamp(short_mute(live, moderator, slug, username)["until"])
    assert moderator.delete(f"/api/rooms/{slug}/mutes/{username}").status_code == 204
    events = poll_until(watcher, slug, cursor, "user_unmuted")
    assert [(event["event"], event["data"]["by"]) for _, event in events] == [
        ("user_muted", moderator.user["username"]), ("user_unmuted", moderator.user["username"])]
    cursor = events[-1][1]["id"]
    # Past the mute's end and a few runs of the job: no second user_unmuted.
    assert nothing_after(watcher, slug, cursor, max(1, round(until + 3 - time.time()))) == []

    until = timestamp(short_mute(live, moderator, slug, username)["until"])
    assert target.send(slug, "muted again").status_code == 403
    events = poll_until(watcher, slug, cursor, "user_unmuted")
    assert [(event["event"], event["data"]["by"]) for _, event in events] == [
        ("user_muted", moderator.user["username"]), ("user_unmuted", None)]
    assert events[-1][0] <= until + GRACE
