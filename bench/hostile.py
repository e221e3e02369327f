"""The soak's load besides its subscribers: steady posters, and the hostile clients of issue 11 (a client
cycling `HEAD`s on live endpoints, slow readers that stop reading a stream, oversized and stalled bodies).
Each runs in a thread until `stop` is set and counts the statuses it got; none may ever be a 5xx."""
import json
import socket
import threading
import time
from collections import Counter

import requests

from .clients import Account


def _session(account: Account) -> requests.Session:
    http = requests.Session()
    http.cookies.set("chat_session", account.cookie)
    http.headers["X-CSRF-Token"] = account.csrf
    return http


class Activity(threading.Thread):
    """A loop in a thread with a Counter of what it met; `errors` counts exceptions by type."""

    def __init__(self, name: str, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.stop, self.statuses, self.errors = stop, Counter(), Counter()

    def run(self):
        while not self.stop.is_set():
            try:
                self.once()
            except (requests.RequestException, OSError) as error:
                self.errors[type(error).__name__] += 1
                self.stop.wait(0.5)


class Poster(Activity):
    """Posts round-robin over the rooms at `rate` a second, each message with its own client_id; a post
    that fails in transit is retried with the same client_id (API.md: exactly one message)."""

    def __init__(self, stop, base_url: str, account: Account, rooms: list, rate: float, name: str):
        super().__init__(name, stop)
        self.base_url, self.http, self.rooms, self.interval = base_url, _session(account), rooms, 1 / rate
        self.sent, self.next_at = 0, time.monotonic()

    def once(self):
        slug = self.rooms[self.sent % len(self.rooms)]
        client_id = f"{self.name}-{self.sent}"
        for _ in range(5):
            try:
                body = f"soak {client_id} \u2028 caf\u00e9 \U0001F600"  # framing and UTF-8 on every path
                answer = self.http.post(f"{self.base_url}/api/rooms/{slug}/messages", timeout=30,
                                        json={"body": body, "client_id": client_id})
                self.statuses[str(answer.status_code)] += 1
                if answer.status_code in (200, 201):
                    break
            except requests.RequestException as error:
                self.errors[type(error).__name__] += 1
            self.stop.wait(0.5)
        self.sent += 1
        self.next_at += self.interval  # a steady rate: a slow answer does not push the schedule back
        self.stop.wait(max(0.0, self.next_at - time.monotonic()))


class HeadCycler(Activity):
    """`HEAD` on every live endpoint, over and over: each must open nothing (API.md), so this account
    never reaches its stream cap (429) and holds no stream or poll when the soak ends."""

    def __init__(self, stop, base_url: str, account: Account, rooms: list):
        super().__init__("heads", stop)
        feed = ",".join(rooms)
        self.http, self.urls = _session(account), [
            *(f"{base_url}/api/rooms/{slug}/{kind}" for slug in rooms[:3] for kind in ("events", "poll")),
            f"{base_url}/api/events?rooms={feed}", f"{base_url}/api/poll?rooms={feed}",
            f"{base_url}/api/moderation/events", f"{base_url}/api/moderation/poll"]
        self.sent = 0

    def once(self):
        answer = self.http.head(self.urls[self.sent % len(self.urls)], timeout=10)
        self.statuses[str(answer.status_code)] += 1
        self.sent += 1
        self.stop.wait(0.02)


class BadBodies(Activity):
    """Oversized bodies (`413`, refused before reading) and, now and then, a body that never arrives
    (`408` at CHAT_BODY_TIMEOUT_SECONDS); nothing of either may be saved."""

    def __init__(self, stop, base_url: str, account: Account, slug: str, port: int):
        super().__init__("bodies", stop)
        self.base_url, self.account, self.slug, self.port = base_url, account, slug, port
        self.http, self.rounds = _session(account), 0

    def once(self):
        self.rounds += 1
        if self.rounds % 20 == 0:
            self.statuses[self._stalled()] += 1
        else:
            answer = self.http.post(f"{self.base_url}/api/rooms/{self.slug}/messages", timeout=30,
                                    data=json.dumps({"body": "x" * 70000}),
                                    headers={"Content-Type": "application/json"})
            self.statuses[str(answer.status_code)] += 1
        self.stop.wait(0.2)

    def _stalled(self) -> str:
        """Headers promising 10,000 bytes, then silence; returns the status line's code."""
        head = (f"POST /api/rooms/{self.slug}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000\r\n"
                f"Content-Type: application/json\r\nCookie: chat_session={self.account.cookie}\r\n"
                f"X-CSRF-Token: {self.account.csrf}\r\n\r\n{{\"body\": \"")
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(head.encode())
            answer = sock.recv(4096)
        return answer.split(b" ", 2)[1].decode() if answer else "closed"


def slow_readers(port: int, account: Account, rooms: list, count: int) -> list:
    """Streams of every room whose client never reads a byte (a tiny receive buffer, so the server's
    writes back up): they must not slow anyone else. The caller closes them at the end."""
    sockets = []
    for index in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall((f"GET /api/events?rooms={','.join(rooms)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Accept: text/event-stream\r\nCookie: chat_session={account.cookie}\r\n\r\n").encode())
        sockets.append(sock)
    return sockets
