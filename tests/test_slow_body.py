"""A slow request body (issue 11): headers announce 10,000 bytes, then the client dribbles a byte at a time
or stops. The body must be cut off at CHAT_BODY_TIMEOUT_SECONDS with 408, nothing saved, and the worker
must go on answering everyone else meanwhile (gevent). Raw sockets against a live gunicorn."""
import json
import socket
import threading
import time

import pytest

from tests.support import LiveServer, history_ids, posted, unique

DEADLINE = 2  # seconds: short, so the test is quick; the default is 10


@pytest.fixture(scope="module")
def server(services):
    # One worker: the slow client and the others share its event loop, so "unaffected" means something.
    server = LiveServer(services, workers=1, CHAT_BODY_TIMEOUT_SECONDS=DEADLINE)
    server.start()
    yield server
    server.stop()


def _open_post(server, user, path: str, length: int) -> socket.socket:
    """A POST whose headers promise `length` bytes of JSON; no byte of the body is sent yet."""
    cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in user.http.cookies)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nCookie: {cookies}\r\nX-CSRF-Token: {user.csrf}\r\n\r\n")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE + 5)
    sock.sendall(head.encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict, bool]:
    """Status and JSON of the one answer, and whether the server closed the connection after it."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    try:
        closed = sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        closed = False
    return status, json.loads(body[:length]), closed


def _dribble(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    for byte in data:
        if stop.wait(every):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return  # the server hung up: what the test expects


@pytest.mark.parametrize("dribbling", [True, False], ids=["a byte a second", "stops after the headers"])
def test_a_body_not_in_by_the_deadline_gets_408_and_saves_nothing(server, dribbling):
    user = server.user()
    slug = user.create_room()
    path = f"/api/rooms/{slug}/messages"
    body = json.dumps({"body": "x" * 9000, "client_id": unique("c")}).encode()
    sock, stop = _open_post(server, user, path, len(body)), threading.Event()
    if dribbling:
        threading.Thread(target=_dribble, args=(sock, body, 1.0, stop), daemon=True).start()
    started = time.monotonic()
    try:
        status, answer, closed = _answer(sock)
    finally:
        stop.set()
        sock.close()
    assert (status, answer["error"]["code"]) == (408, "request_timeout")
    assert DEADLINE - 0.5 <= time.monotonic() - started <= DEADLINE + 3
    assert closed  # the rest of the body is never read on this connection
    assert history_ids(user, slug) == []


def test_other_requests_of_the_worker_are_answered_meanwhile(server):
    user = server.user()
    slug = user.create_room()
    body = json.dumps({"body": "slow"}).encode()
    slow, stop = _open_post(server, user, f"/api/rooms/{slug}/messages", len(body) + 100), threading.Event()
    try:
        for _ in range(5):
            started = time.monotonic()
            posted(user, slug)
            assert time.monotonic() - started < 1  # not queued behind the slow body
        status, _, _ = _answer(slow)
        assert status == 408
    finally:
        stop.set()
        slow.close()
    assert len(history_ids(user, slug)) == 5


def test_a_body_sent_in_pieces_within_the_deadline_is_taken(server):
    user = server.user()
    slug = user.create_room()
    body = json.dumps({"body": "in three pieces", "client_id": unique("c")}).encode()
    sock = _open_post(server, user, f"/api/rooms/{slug}/messages", len(body))
    try:
        third = len(body) // 3
        for piece in (body[:third], body[third:2 * third], body[2 * third:]):
            sock.sendall(piece)
            time.sleep(DEADLINE / 6)  # the pauses are the point: a slow but finished body is fine
        status, answer, _ = _answer(sock)
    finally:
        sock.close()
    assert status == 201, answer
    assert answer["message"]["body"] == "in three pieces"


def test_a_chunked_body_has_the_same_deadline(server):
    """No Content-Length: the body's end is its last chunk, which this client never sends."""
    user = server.user()
    slug = user.create_room()
    cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in user.http.cookies)
    head = (f"POST /api/rooms/{slug}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\nCookie: {cookies}\r\nX-CSRF-Token: {user.csrf}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE + 5) as sock:
        sock.sendall(head.encode() + b"a\r\n{\"body\": \"\r\n")  # one chunk of ten bytes, then nothing
        status, answer, closed = _answer(sock)
    assert (status, answer["error"]["code"], closed) == (408, "request_timeout", True)
    assert history_ids(user, slug) == []


@pytest.mark.parametrize("size, status", [(100, 201), (70000, 413)])
def test_a_whole_chunked_body_is_taken_and_an_oversized_one_refused(server, size, status):
    user = server.user()
    slug = user.create_room()
    body = json.dumps({"body": "c" * size}).encode()
    answer = user.post(f"/api/rooms/{slug}/messages", data=iter([body[:50], body[50:]]),  # an iterator: chunked
                       headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert len(history_ids(user, slug)) == (1 if status == 201 else 0)
