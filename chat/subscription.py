"""One client's subscription, from the hub's side and the stream's: the bounded queue the hub fills, the
direct writes it makes to an idle stream's socket, and the loop that drains it into the stream. The
hand-over between the two (who writes, who finishes a chunk the socket would not take) is all here.
"""
import os
import select
import socket
import threading
import time
import uuid
from collections import deque

from . import events, metrics
from .ids import EventId, FeedPosition


class Subscription:
    """One client's feed: a bounded buffer the hub fills and the client's request drains."""

    # Thousands are held per process: no per-instance dict.
    __slots__ = ("rooms", "feed", "sees_reports", "present", "presence", "session_id", "user_id", "username",
                 "presence_member", "max_queue", "is_stream", "items", "wakeup", "ended", "position", "direct_fd",
                 "unsent", "written", "__weakref__")

    def __init__(self, *, rooms, feed, present, presence, session_id, user_id, username, max_queue, is_stream,
                 sees_reports=False):
        # A room's own stream follows one room in its own positions; a feed (several rooms, or the
        # moderators') follows its rooms (None: every room) in firehose positions.
        self.rooms = rooms  # frozenset of slugs, or None
        self.feed = feed
        self.sees_reports = sees_reports  # the moderators' feed: it alone is delivered reports (events.reaches)
        self.present = present  # the rooms this client counts as online in
        self.presence = presence  # whether it is sent its rooms' presence
        self.session_id, self.user_id, self.username = session_id, user_id, username
        # Only streams count as presence by connection (a poller is counted per session).
        self.presence_member = f"{username}|{uuid.uuid4().hex[:12]}" if is_stream else None
        self.max_queue = max_queue
        self.is_stream = is_stream
        self.items = None  # a deque once anything is queued: most streams never need one (direct writes)
        self.wakeup = threading.Event()
        self.ended = None  # why the hub ended it: overflow, logout, banned, shutdown
        self.position = None  # where this client stands: the last durable event it was sent (ids: EventId, FeedPosition)
        # Direct writing: while its stream is idle and caught up, the hub writes an event's chunk
        # straight to the socket (one non-blocking write) instead of waking the stream's greenlet.
        self.direct_fd = None
        self.unsent = b""  # the rest of a chunk the socket would not take; the stream writes it
        self.written = 0  # events the hub wrote directly, for the delivery counter

    def deliver(self, item) -> None:
        """Queue an event without ever blocking the hub; a client too far behind is cut off,
        and resumes from its last id."""
        if self.ended:
            return
        if isinstance(item, events.LiveEvent) and not events.reaches(item.type, self.sees_reports):
            return  # neither queued nor written: the stream and the poll never see it
        if self.direct_fd is not None and isinstance(item, events.LiveEvent):
            self._write_directly(item)
            return
        if self.items is None:
            self.items = deque()
        elif len(self.items) >= self.max_queue:
            self.end("overflow")
            metrics.QUEUE_OVERFLOWS.inc()
            return
        self.items.append(item)
        self.wakeup.set()

    def _write_directly(self, event) -> None:
        if self.position.has_seen(event):
            return
        chunk = event.chunk
        try:
            written = os.write(self.direct_fd, chunk)
        except BlockingIOError:
            written = 0
        except OSError:  # the client is gone
            self.end("gone")
            return
        self.position = self.position.past(event)
        self.written += 1
        if written < len(chunk):  # a full socket buffer: the stream's greenlet takes over, and waits
            self.unsent = chunk[written:]
            self.direct_fd = None
            self.wakeup.set()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.wakeup.set()

    def take(self, timeout: float, direct_fd: int | None = None) -> list:
        """Everything queued, waiting up to `timeout` seconds for something. With `direct_fd`, the hub
        writes events straight to that socket while this waits (the caller then checks `unsent`)."""
        if not self.items and not self.ended:
            self.direct_fd = direct_fd
            self.wakeup.wait(timeout)
            self.direct_fd = None
        self.wakeup.clear()
        taken = []
        while self.items:
            taken.append(self.items.popleft())
        return taken


class Presence:
    """An ephemeral item for one subscriber's queue."""

    __slots__ = ("room", "online", "sse")

    def __init__(self, room: str, online: list[str]):
        self.room = room
        self.sse = events.presence(room, online)
        self.online = online


def unsent(items: list, position: EventId | FeedPosition, sent_online: dict) -> list:
    """What a stream has not sent yet: durable events after `position`, and presence that differs
    from the list this client was last sent for that room (the hub re-sends a room's list to everyone
    in it); `sent_online` is updated."""
    fresh = []
    for item in items:
        if isinstance(item, Presence):
            if sent_online.get(item.room) == item.online:
                continue
            sent_online[item.room] = item.online
        elif position.has_seen(item):
            continue
        fresh.append(item)
    return fresh


def hung_up(client) -> bool:
    """Whether the client closed its end of the stream's socket (gunicorn's, if any). Checked before a
    ping: writing alone notices only at the second write after the close, two heartbeats late, which
    would keep a departed user in presence past its 30 s (select and recv are gevent's: no blocking)."""
    if client is None:
        return False
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except OSError:  # reset by the peer
        return True
    except ValueError:  # a descriptor plain select() cannot watch (no gevent): leave it to the writes
        return False


def direct_fd(environ) -> int | None:
    """The socket the hub may write an idle stream's events to itself: gunicorn's plain TCP socket on
    a chunked (HTTP/1.1) response, whose chunk framing the hub then writes too. None otherwise
    (TLS, HTTP/1.0, other servers): the stream's greenlet writes everything."""
    client = environ.get("gunicorn.socket")
    if client is None or hasattr(client, "cipher") or environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return None
    return client.fileno()


def stream_events(subscription: Subscription, catch, first_page: list, next_page, online: dict[str, list[str]],
                  ready_rooms: list[str] | None, *, client, direct_fd: int | None, retry_ms: int, heartbeat: int,
                  lifetime: tuple[float, str], send_timeout: float, on_end):
    """The SSE body of a subscription: the first chunk, the catch-up (resume.CatchUp: `first_page`, read in
    the view, then `next_page()` until it is done, or None if it failed), then live events (written by the hub directly while
    idle), pings and presence, until the subscription ends, its lifetime (seconds, and the reason it gives)
    runs out, or the client leaves or stops reading. `on_end(reason, events sent)` last."""
    metrics.STREAMS_OPEN.inc()
    sent = 0  # durable events written to this client, for its `stream ended` line

    def delivered(count: int) -> None:
        nonlocal sent
        sent += count
        metrics.EVENTS_DELIVERED_HERE.add(count)

    reason = "closed by the client"  # unless one of the ends below says otherwise
    if client is not None:
        # Every write of this stream (gunicorn's and ours) gives up after this long without progress;
        # the hub's direct writes never wait at all. The server then drops the connection.
        client.settimeout(send_timeout)
    try:
        yield events.first_chunk(retry_ms, catch.cursor, heartbeat, ready_rooms)
        sent_online = dict(online)
        if online:
            yield b"".join(events.presence(slug, names) for slug, names in online.items())
        page, first_page = first_page, None
        while page:  # one page in memory at a time, however far behind the client starts
            delivered(len(page))
            chunk, page = b"".join(event.sse for event in page), None  # only its bytes wait on the socket
            yield chunk
            chunk, page = None, next_page()
            if page is None:
                reason = "catch-up failed"
                return  # the client resumes from the last event it got
        if catch.plan.reset:  # at the start, or a trim that raced the catch-up too often
            metrics.RESETS_SENT.inc()
            yield events.reset(catch.plan.reset)
        position = catch.position  # past what the catch-up read, shown to this client or not
        max_age, max_age_reason = lifetime
        deadline = time.monotonic() + max_age
        subscription.position = position
        while not subscription.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = max_age_reason
                break
            items = subscription.take(min(heartbeat, remaining), direct_fd)
            if subscription.written:  # what the hub wrote to the socket meanwhile
                delivered(subscription.written)
                subscription.written, position = 0, subscription.position
            if subscription.unsent:  # finish the chunk the socket would not take at once
                try:
                    client.sendall(subscription.unsent)
                except TimeoutError:
                    reason = "not reading"
                    break
                subscription.unsent = b""
            if subscription.ended and subscription.ended != "shutdown":
                reason = subscription.ended
                break  # logout, ban or overflow: stop now; the client resumes from its last id
            fresh = unsent(items, position, sent_online)
            if fresh:
                durable = [item for item in fresh if isinstance(item, events.LiveEvent)]
                if durable:
                    position = subscription.position = position.past(durable[-1])
                    delivered(len(durable))
                yield b"".join(item.sse for item in fresh)
            elif not subscription.ended:
                if hung_up(client):
                    reason = "hung up"
                    break  # the client left: free its place and its presence now
                yield events.ping()
        else:
            reason = subscription.ended
    finally:
        metrics.STREAMS_OPEN.dec()
        on_end(reason, sent)

