"""Two instances sharing one Redis and one database (DESIGN.md, "Scale"): any process serves any client."""
import threading
import time

import pytest

from tests.support import LiveServer, events_path, history_ids, same_session


@pytest.fixture(scope="module")
def other_server(services):
    """A second instance next to the session's `live` server: same Redis, same database, another port."""
    server = LiveServer(services, workers=2)
    server.start()
    yield server
    server.stop()


def test_messages_posted_on_one_instance_reach_subscribers_of_the_other_in_order(live, other_server):
    # Three posters (the rate limit is per user and room): one on each instance, one alternating.
    alice, bob, carol = live.user(), other_server.user(), live.user()
    carol_there = same_session(carol, other_server)
    slug = alice.create_room()
    reader = other_server.user()
    streams = [reader.events(events_path(slug)) for _ in range(3)]  # likely spread over both workers
    cursor = reader.get(f"/api/rooms/{slug}/messages").json()["cursor"]
    polled, poll_errors = [], []

    def poll_on_the_other_instance():
        position = cursor
        try:
            while len(polled) < 24:
                body = reader.get(f"/api/rooms/{slug}/poll", params={"cursor": position, "timeout": 5}).json()
                polled.extend(event["id"] for event in body["events"])
                position = body["cursor"]
        except Exception as error:  # noqa: BLE001 - reported below
            poll_errors.append(error)

    try:
        for stream in streams:
            assert stream.next(timeout=5).event == "ready"
        poller = threading.Thread(target=poll_on_the_other_instance, daemon=True)
        poller.start()
        for n in range(24):
            poster = (alice, bob, carol if n % 2 else carol_there)[n % 3]
            response = poster.send(slug, f"message {n}")
            assert response.status_code == 201, response.text
        expected = history_ids(alice, slug)
        assert len(expected) == 24
        for stream in streams:
            assert [stream.next_durable().id for _ in range(24)] == expected
        poller.join(20)
        assert not poll_errors, poll_errors
        assert polled == expected
    finally:
        for stream in streams:
            stream.close()


def test_a_message_reaches_a_subscriber_of_the_other_instance_quickly(live, other_server):
    sender = live.user()
    slug = sender.create_room()
    receiver = other_server.user()
    stream = receiver.events(events_path(slug))
    try:
        assert stream.next(timeout=5).event == "ready"
        started = time.monotonic()
        message = sender.send(slug, "across instances").json()["message"]
        event = stream.next_durable(timeout=5)
        assert event.id == message["id"] and event.json() == message
        print(f"delivered across instances in {time.monotonic() - started:.3f} s")
    finally:
        stream.close()


def test_logout_on_one_instance_ends_the_stream_held_on_the_other(live, other_server):
    user = live.user()
    slug = user.create_room()
    elsewhere = same_session(user, other_server)
    streams = [elsewhere.events(events_path(slug)) for _ in range(2)]
    try:
        for stream in streams:
            assert stream.next(timeout=5).event == "ready"
        started = time.monotonic()
        assert user.post("/api/auth/logout").status_code == 204
        for stream in streams:
            assert stream.wait_closed(2), "logout on one instance did not end the stream on the other within 2 s"
        print(f"logout ended the other instance's streams in {time.monotonic() - started:.3f} s")
        refused = elsewhere.get(events_path(slug))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "not_authenticated"
    finally:
        for stream in streams:
            stream.close()
