"""Group commit: a process's posts are recorded several to a transaction when they arrive together.

A post's costly part is its commit (SQLite's journal write, PostgreSQL's WAL flush), and a room's posts
queue on its row lock anyway. So a request that passed every check queues its message; if no commit is
under way in this process, it leads: it takes every message waiting, gives each room's its ids in one
statement, inserts them, commits once, publishes them in id order, and answers their requests (on
PostgreSQL all of that but the publishing is one statement that commits itself: one round trip for the
group, where a transaction took four or more; models.record_posts_at_once). Posts that
arrive meanwhile wait for the next commit, led by the first of them. A post that arrives alone is recorded
by its own request at once, with no hand-off (a hand-off to a writer greenlet waited behind every other
greenlet the worker had to run: the publisher's posts took 150 ms at 1,000 pollers).

A post let through by a process's memory (caches.PostCache) carries the post rules' version its checks
read, and takes its rate-limit allowance here, with the rest of its group, in one Redis round trip
(ratelimit.py); the statement that gives its room's posts their ids returns the version as it reads it,
and a post whose version differs is left out of the transaction (Stale): its request checks again from
the database.

The database stays the order (docs/ARCHITECTURE.md, "The write path"): ids come from the room's counter in
the transaction that records the events, rooms are locked in id order (two processes cannot deadlock), and
the commit is the acknowledgement. One commit at a time per process also keeps this process's publishing in
commit order, which a per-room lock did before.
"""
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby

from flask import current_app
from sqlalchemy.exc import IntegrityError, OperationalError

from . import failpoints, outbox, ratelimit
from .extensions import REDIS_ERRORS, SQLITE_BUSY_TIMEOUT_MS, db
from .ids import EventId, utcnow
from .models import allocate_post_ids, insert_messages, message_api, record_posts_at_once

MAX_BATCH = 64  # messages per transaction: bounds the time a room's row stays locked
LOCK_WAIT_SECONDS = SQLITE_BUSY_TIMEOUT_MS / 1000  # SQLite: the writer waits for another's write lock as long


class Stale(Exception):
    """Something a post's checks read from memory changed before the post was recorded: nothing was."""

    def __init__(self, version: int, posts: list | None = None):
        super().__init__("the post's checks are out of date")
        self.version = version  # the post rules' version the writer read
        self.posts = posts or []


class RateLimited(Exception):
    """A post let through by memory that the rate limits refused (nothing counted, nothing recorded)."""

    def __init__(self, retry_after: int):
        super().__init__(f"rate limited for {retry_after} s")
        self.retry_after = retry_after


@dataclass(slots=True, eq=False)
class Post:
    room_id: int
    slug: str
    user_id: int
    username: str
    body: str
    client_id: str | None
    version: int | None = None  # the post rules' version its checks read from memory; None: read from the database
    turn: threading.Event = field(default_factory=threading.Event)  # set when answered, or when it is to lead
    leads: bool = False
    answer: tuple | None = None  # (the API's message, whether it was created)
    error: BaseException | None = None

    def settle(self, answer: tuple | None = None, error: BaseException | None = None) -> None:
        self.answer, self.error = answer, error
        self.turn.set()

    def outcome(self) -> tuple[dict, bool]:
        if self.error is not None:
            raise self.error
        return self.answer

    def stale_at(self, version: int) -> bool:
        """Whether its checks read the post rules from memory at a version other than `version` (Stale)."""
        return self.version is not None and self.version != version


Recorded = tuple[Post, EventId, dict]  # a post recorded: its event id and the API's message


class Writer:
    def __init__(self):
        self.waiting = deque()
        self.committing = False
        self._lock = threading.Lock()

    def record(self, post: Post) -> tuple[dict, bool]:
        """Record and publish a message. Raises what recording it raised: IntegrityError when its client_id
        was recorded meanwhile by another request, Stale when its checks are out of date (nothing recorded), a
        database failure (503) otherwise."""
        with self._lock:
            self.waiting.append(post)
            post.leads = not self.committing
            self.committing = True
        if not post.leads:
            post.turn.wait()  # answered by the commit that took it, or told to lead the next one
            if not post.leads:
                return post.outcome()
            post.turn.clear()  # from here, set means answered
        with self._lock:  # this post is first in the queue: the batch holds it
            batch = [self.waiting.popleft() for _ in range(min(MAX_BATCH, len(self.waiting)))]
        try:
            _record(batch)
        except BaseException as error:  # noqa: BLE001  (every request waiting must get an answer)
            db.session.rollback()
            for waiting in batch:
                if not waiting.turn.is_set():
                    waiting.settle(error=error)
        finally:
            with self._lock:
                if self.waiting:
                    self.waiting[0].leads = True
                    self.waiting[0].turn.set()
                else:
                    self.committing = False
        return post.outcome()


def _allowed(batch: list[Post]) -> list[Post]:
    """The batch without the posts that the rate limits refuse now: those let through by memory take their
    allowances here, in one round trip (the others took theirs in their requests). Each refused one is
    answered RateLimited, or with the Redis failure that kept it from being counted."""
    asking = [post for post in batch if post.version is not None]
    if asking:
        try:
            waits = ratelimit.take_post_allowances([(post.user_id, post.room_id, len(post.body.encode()))
                                                    for post in asking])
        except REDIS_ERRORS as error:
            waits = [error] * len(asking)
        for post, wait in zip(asking, waits):
            if wait:
                post.settle(error=wait if isinstance(wait, Exception) else RateLimited(wait))
    return [post for post in batch if not post.turn.is_set()]


def _record(batch: list[Post]) -> None:
    batch = _allowed(batch)
    if not batch:
        return
    postgresql = db.engine.dialect.name == "postgresql"
    recorded = _record_on_postgresql(batch) if postgresql else _record_in_one_transaction(batch)
    failpoints.hit("after_commit")
    for (room_id, slug), of_room in groupby(recorded, key=lambda each: (each[0].room_id, each[0].slug)):
        of_room = list(of_room)  # in id order
        outbox.publish_many(room_id, slug, [(event_id, "message", data) for _, event_id, data in of_room])
        for post, _, data in of_room:
            post.settle((data, True))


def _record_in_one_transaction(batch: list[Post]) -> list[Recorded]:
    try:
        return _commit_current(batch)
    except IntegrityError:  # a client_id recorded meanwhile by another request: one by one, to find which
        db.session.rollback()
        recorded = []
        for post in batch:
            if post.turn.is_set():
                continue  # answered already (Stale)
            try:
                recorded += _commit_current([post])
            except IntegrityError as error:  # the request answers with the message recorded before
                db.session.rollback()
                post.settle(error=error)
            except Exception as error:
                db.session.rollback()
                return _answer_the_rest(error, recorded, batch)
        return recorded


def _answer_the_rest(error: Exception, recorded: list[Recorded], posts: list[Post]) -> list[Recorded]:
    """A failure after part of a batch was committed: that part goes on to be published and answered as recorded
    (a 503 must mean that nothing was), every other post still waiting gets the failure; re-raised if nothing
    was recorded (the caller answers everyone)."""
    if not recorded:
        raise error
    answered_later = {id(post) for post, _, _ in recorded}
    for post in posts:
        if not post.turn.is_set() and id(post) not in answered_later:
            post.settle(error=error)
    return recorded


def _record_on_postgresql(batch: list[Post]) -> list[Recorded]:
    """PostgreSQL: the batch in one statement (models.record_posts_at_once). A room whose posts' checks are out
    of date is written again without them (each answered Stale); when a client_id was recorded meanwhile
    (nothing of that statement was written), its posts are recorded one by one, to find which."""
    recorded, groups = [], deque([batch])
    while groups:
        waiting, created_at = groups.popleft(), utcnow()
        while waiting:
            try:
                ids, version = record_posts_at_once([(post.room_id, post.user_id, post.client_id, post.body,
                                                      post.version) for post in waiting], created_at)
            except IntegrityError as error:
                if len(waiting) == 1:  # the request answers with the message recorded before
                    waiting[0].settle(error=error)
                else:  # one by one, each a group of its own
                    groups.extend([post] for post in waiting)
                break
            except Exception as error:  # each statement commits itself: earlier ones' posts are recorded
                return _answer_the_rest(error, recorded, batch)
            stale = [post for post in waiting if post.room_id not in ids and post.stale_at(version)]
            if not stale and len(ids) < len({post.room_id for post in waiting}):
                return _answer_the_rest(LookupError("a room of these posts is gone"), recorded, batch)
            for post in stale:
                post.settle(error=Stale(version))
            for room_id, posts in _by_room(waiting):
                recorded += _recorded_messages(posts, ids.get(room_id, ()), created_at)
            waiting = [post for post in waiting if post.room_id not in ids and not post.turn.is_set()]
    return recorded


def _commit_current(batch: list[Post]) -> list[Recorded]:
    """_commit, without the posts whose checks are out of date: each of those is answered Stale (its
    request checks again), and the transaction is made again without them (each round leaves one out)."""
    while batch:
        try:
            return _commit(batch)
        except Stale as stale:
            db.session.rollback()
            for post in stale.posts:
                post.settle(error=Stale(stale.version))
            batch = [post for post in batch if post not in stale.posts]
    return []


def _commit(batch: list[Post]) -> list[Recorded]:
    """_record_batch, waiting for SQLite's write lock cooperatively. SQLite's own busy wait sleeps in C,
    which stops every greenlet of the worker (every stream and poll in it) while another process writes:
    the writer takes the write lock first (BEGIN IMMEDIATE) without waiting, and on "locked" sleeps a
    millisecond or more the gevent way; once it holds the lock, nothing in the transaction waits."""
    if db.engine.dialect.name != "sqlite":
        return _record_batch(batch)
    deadline, pause = time.monotonic() + LOCK_WAIT_SECONDS, 0.001
    while True:
        connection = db.session.connection().connection.dbapi_connection  # this session's, until it ends
        try:
            connection.execute("PRAGMA busy_timeout=0")
            try:
                if not connection.in_transaction:
                    connection.execute("BEGIN IMMEDIATE")
            finally:
                connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        except sqlite3.OperationalError as error:
            db.session.rollback()
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise OperationalError("BEGIN IMMEDIATE", None, error) from error
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
            continue
        return _record_batch(batch)


def _record_batch(batch: list[Post]) -> list[Recorded]:
    """One transaction for the batch: each room's ids in one statement (rooms in id order, the order every
    writer locks them in), every message inserted, one commit. Raises Stale, before inserting anything,
    if the post rules changed since a post's checks read them from memory."""
    recorded, created_at = [], utcnow()
    for room_id, posts in _by_room(batch):
        event_ids, version = allocate_post_ids(room_id, len(posts))
        # The version as the statement that allocates the posts' ids read it (on PostgreSQL, as of its start,
        # which is after each of these posts began): a change that answered before a post began is seen.
        stale = [post for post in posts if post.stale_at(version)]
        if stale:
            raise Stale(version, stale)
        recorded += _recorded_messages(posts, event_ids, created_at)
    insert_messages([(post.room_id, post.user_id, post.client_id, post.body, created_at, event_id)
                     for post, event_id, _ in recorded])
    db.session.commit()  # acknowledged: from here on the messages exist, whatever Redis does
    return recorded


def _by_room(posts: list[Post]) -> list[tuple[int, list[Post]]]:
    """The posts of each room, rooms in id order (the order every writer locks them in), a room's posts in
    the order given."""
    by_room = sorted(posts, key=lambda post: post.room_id)  # stable: a room's posts keep their order
    return [(room_id, list(of_room)) for room_id, of_room in groupby(by_room, key=lambda post: post.room_id)]


def _recorded_messages(posts: list[Post], event_ids: Sequence[EventId], created_at: datetime) -> list[Recorded]:
    """A room's posts as recorded with their event ids (in the same order) at `created_at`, each with the
    API's message: what _record publishes and answers the posts' requests with."""
    return [(post, event_id, message_api(event_id, post.slug, post.body, post.user_id, post.username, created_at,
                                         post.client_id))
            for post, event_id in zip(posts, event_ids)]


def current() -> Writer:
    """This app's writer in this process."""
    app = current_app._get_current_object()
    writer = app.extensions.get("chat_writer")
    if writer is None:
        with _starting:
            writer = app.extensions.setdefault("chat_writer", Writer())
    return writer


_starting = threading.Lock()
