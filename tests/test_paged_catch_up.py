"""Catch-up in pages (issue 11): a subscriber far behind gets every event exactly once and in order, while
the server holds one page of its backlog at a time, even when Redis trims what the catch-up still needs
midway through it."""
import socket
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from chat import resume
from chat.caches import CachedRoom
from chat.ids import ZERO
from chat.models import find_room
from tests.support import UNLIMITED_POSTING, AuthActions, LiveServer, events_path, history_ids, same_session

BIG_BODY = "€" * 2000  # the longest message, 6 KB of UTF-8


def test_a_catch_up_raced_by_trims_midway_still_delivers_every_event_once(make_app):
    """A page at a time from the record, then Redis; Redis trims what the rest of the catch-up needed
    between two pages, and the catch-up plans again from where it stands instead of skipping it."""
    app = make_app(CHAT_STREAM_MAXLEN=10, **UNLIMITED_POSTING)
    poster = AuthActions(app.test_client())
    assert poster.register().status_code == 201
    slug = poster.create_room()
    sent = [poster.send(slug, f"m{n}").json["message"]["id"] for n in range(250)]
    with app.app_context():
        room = CachedRoom(find_room(slug).id, slug)
        catch = resume.CatchUp(lambda position: resume.plan_room(room, position), ZERO, slug)
        got = [str(event.id) for event in catch.page()]
    assert got == sent[:resume.PAGE]  # one page, not the whole backlog

    sent += [poster.send(slug, f"later {n}").json["message"]["id"] for n in range(300)]
    with app.app_context():
        while not catch.done:
            got += [str(event.id) for event in catch.page()]
    assert catch.plan.reset is None and catch.replans >= 1  # the trim did race the catch-up
    assert got == sent


def test_a_catch_up_passed_by_trims_again_and_again_keeps_going_while_it_makes_progress(make_app):
    """On a busy room Redis's trim can pass a slow catch-up many times; each time it plans again from where it
    stands and reads on, and only a catch-up that makes no progress at all between trims is told to reload."""
    app = make_app(CHAT_STREAM_MAXLEN=10, **UNLIMITED_POSTING)
    poster = AuthActions(app.test_client())
    assert poster.register().status_code == 201
    slug = poster.create_room()
    sent = [poster.send(slug, f"m{n}").json["message"]["id"] for n in range(20)]
    got = []
    with app.app_context():
        room = CachedRoom(find_room(slug).id, slug)
        catch = resume.CatchUp(lambda position: resume.plan_room(room, position), ZERO, slug)
        for round_ in range(resume.RESUME_ATTEMPTS + 2):
            got += [str(event.id) for event in catch.page(5)]  # from Redis, the window's start
            sent += [poster.send(slug, f"r{round_} {n}").json["message"]["id"] for n in range(150)]
            got += [str(event.id) for event in catch.page(5)]  # the trim passed it: from the record
            got += [str(event.id) for event in catch.page(1000)]  # the rest of the record's part
        while not catch.done:
            got += [str(event.id) for event in catch.page()]
    assert catch.plan.reset is None
    assert got == sent


def test_the_feed_catches_up_across_rooms_page_by_page(make_app):
    """The several-rooms feed's catch-up from the start of the firehose: the listed rooms' events, every
    one, in order, over several pages (other rooms' events read and passed over)."""
    app = make_app(**UNLIMITED_POSTING)
    poster = AuthActions(app.test_client())
    assert poster.register().status_code == 201
    followed, other = poster.create_room(), poster.create_room()
    with app.app_context():
        start = resume.plan_firehose(None).after
    sent = []
    for n in range(150):
        sent.append(poster.send(followed, f"f{n}").json["message"]["id"])
        poster.send(other, f"o{n}")
    with app.app_context():
        catch = resume.CatchUp(resume.plan_firehose, start, None, rooms={followed})
        pages = []
        while not catch.done:
            pages.append([event.data["id"] for event in catch.page()])
    assert [message_id for page in pages for message_id in page] == sent
    assert max(len(page) for page in pages) <= resume.PAGE and len([page for page in pages if page]) >= 2


@pytest.mark.parametrize("maxlen", [10, 10000], ids=["from-the-record", "from-redis"])
def test_streams_far_behind_hold_one_page_each_and_still_get_everything(services, maxlen):
    """30 streams resuming 1,000 big messages back, whose clients do not read: the worker's peak memory
    grows by about a page each (measured: 35–38 MiB for all 30; read whole, 660–680 MiB), and a client that does read gets
    every message, once, in order."""
    server = LiveServer(services, workers=1, CHAT_STREAM_MAXLEN=maxlen, CHAT_MAX_STREAMS_PER_USER=100,
                        CHAT_RESUME_MAX_EVENTS=2000, CHAT_SEND_TIMEOUT_SECONDS=120, **UNLIMITED_POSTING)
    server.start()
    stalled = []
    try:
        user = server.user()
        slug = user.create_room()
        with ThreadPoolExecutor(4) as pool:
            for response in pool.map(lambda _: same_session(user, server).send(slug, BIG_BODY), range(1000)):
                assert response.status_code == 201, response.text
        sent = history_ids(user, slug)
        worker = psutil.Process(server.process.pid).children()[0]
        before = _peak_kib(worker)

        cookie = "; ".join(f"{cookie.name}={cookie.value}" for cookie in user.http.cookies)
        for _ in range(30):
            stalled.append(_stalled_stream(server.port, events_path(slug), cookie, last_event_id=sent[0]))
        grown_mib = (_peak_kib(worker) - before) / 1024
        assert grown_mib < 60, f"the worker's peak memory grew {grown_mib:.0f} MiB for 30 stalled catch-ups"

        stream = user.events(events_path(slug), last_event_id=sent[0])
        try:
            assert stream.next(timeout=10).event == "ready"
            got = [stream.next_durable(timeout=20).json()["id"] for _ in sent[1:]]
        finally:
            stream.close()
        assert got == sent[1:]
    finally:
        for client in stalled:
            client.close()
        server.stop()


def _peak_kib(process: psutil.Process) -> int:
    """The process's peak resident memory so far (VmHWM): it keeps every burst, however brief."""
    with open(f"/proc/{process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def _stalled_stream(port: int, path: str, cookie: str, last_event_id: str) -> socket.socket:
    """A stream opened by a client that reads its answer's first bytes, then nothing more."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.settimeout(30)
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                   f"Cookie: {cookie}\r\nLast-Event-ID: {last_event_id}\r\n\r\n".encode())
    assert client.recv(64).startswith(b"HTTP/1.1 200")
    return client
