"""The load generator: one process drives thousands of HTTP connections from a bare epoll loop.

Run by the orchestrator as `python -m bench.loadgen CONFIG.json`; it writes JSON lines to stdout
(`ready` once every connection is set up, `final` with its counts) and reads commands from stdin
(`mark` starts the measurement window, `stop` ends the run). No greenlets and no HTTP library: each readable socket costs one recv() and a few bytes
operations, so one core reads tens of thousands of events a second. Every loop is bounded by the
config's `hard_deadline` (a CLOCK_MONOTONIC time, the same clock in every process of the machine).

Modes: `sse` (subscribers reading a room's event stream), `poll` (long-pollers), `post` (closed-loop
posters for the ingest scenario) and `publish` (one paced publisher whose bodies carry their send time).
"""
import array
import errno
import json
import resource
import select
import socket
import sys
import time

MARK = b'"bench:'  # bench bodies: bench:<k, 8 digits>:<send time in µs, 16 digits>:xxxx...
READ_SIZE = 65536  # larger reads allocate above malloc's mmap threshold: an mmap+munmap per recv
CONNECTING, SENDING, HEADERS, BODY = range(4)


def now_us() -> int:
    return time.monotonic_ns() // 1000


def bench_body(k: int, size: int, sent_us: int | None = None) -> str:
    head = f"bench:{k:08d}:{sent_us if sent_us is not None else now_us():016d}:"
    return head + "x" * max(0, size - len(head))


def event_key(raw) -> int:
    """An event id `<ms>-<seq>` as one int that compares in stream order (seq stays far below 2**20)."""
    dash = raw.find(b"-" if isinstance(raw, bytes) else "-")
    return (int(raw[:dash]) << 20) | int(raw[dash + 1:])


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def emit(kind: str, **fields) -> None:
    sys.stdout.write(json.dumps({"type": kind, **fields}) + "\n")
    sys.stdout.flush()


_ONLINE = b',"online":['  # a poll answer's last member (chat/events.py, poll_answer)


def poll_answer_events(body: bytes) -> dict:
    """A poll answer's events and cursor, what the scenario checks. Its `online` list comes last and is most of a
    big room's answer (1,000 names: 19 KB, 37 µs of json.loads, over half of this process's CPU per answer on the
    cores it shares with the server), so it is checked to be there and not parsed."""
    cut = body.rfind(_ONLINE)
    if cut < 0 or not body.endswith(b"]}"):
        return json.loads(body)  # not the usual shape: all of it
    return json.loads(body[:cut] + b"}")


class Conn:
    __slots__ = ("index", "sock", "fd", "state", "request", "raw", "chunk_left", "sse", "ready", "last_key",
                 "seen", "received", "attempts", "cursor", "sent_at", "clen", "close_after", "headers_done")

    def __init__(self, index: int, max_k: int):
        self.index, self.sock, self.fd, self.state = index, None, -1, CONNECTING
        self.request, self.raw, self.chunk_left, self.sse = b"", b"", 0, b""
        self.ready, self.last_key, self.received, self.attempts = False, -1, 0, 0
        self.seen = bytearray(max_k + 1) if max_k else None
        self.cursor, self.sent_at, self.clen, self.close_after, self.headers_done = "", 0, -1, False, False


class Engine:
    """Connections in one epoll set; `run()` returns when stopped or at the hard deadline."""

    def __init__(self, config: dict):
        self.config = config
        self.mode = config["mode"]
        self.host, self.port = config["host"], config["port"]
        self.hard_deadline = config["hard_deadline"]
        self.count = config["count"]
        self.max_k = config.get("max_k", 0)
        self.concurrency = config.get("connect_concurrency", 200)
        self.max_attempts = config.get("max_attempts", 5)
        self.ep = select.epoll()
        self.conns = [Conn(i, self.max_k) for i in range(self.count)]
        self.by_fd = {}
        self.waiting = list(range(self.count - 1, -1, -1))  # to connect, popped from the end
        self.retry_at = []  # (monotonic time, index)
        self.opening = 0  # connections set up but not yet ready
        self.failed, self.statuses, self.errors = 0, {}, {}
        self.lost = 0  # ready connections the server closed before the stop
        self.latencies = array.array("q")
        # From the Redis append (the event id's milliseconds, Redis's wall clock) to the read: the
        # fan-out's share of each delivery, 0-1 ms high because ids are truncated to the millisecond.
        self.after_append = array.array("q")
        self.recv_wall = 0
        # Time from epoll reporting a batch of readable sockets to this socket's read: the part of
        # the measured latency spent queued inside this process (a lower bound).
        self.in_generator = array.array("q")
        self.message_of = array.array("q")  # which message (k) each latency sample belongs to
        self.batch_at = 0
        self.delivered = self.duplicates = self.order_violations = self.unknown = 0
        self.other_durable = self.presence_events = self.presence_bytes = self.pings = 0
        self.bytes_in = 0
        self.requests_done = self.empty_polls = self.posted = 0
        self.window = (config.get("window_start", 0), config.get("window_end", float("inf")))
        self.ready_sent = False
        self.coalesce = config.get("coalesce_ms", 0) / 1000
        self.mark = None
        self.reconnects = 0
        self.stopping = False
        self.ready_at = None

    # Setup

    def _request_for(self, conn: Conn) -> bytes:
        cfg, i = self.config, conn.index
        cookie = cfg["cookies"][i % len(cfg["cookies"])]
        path = cfg["paths"][i % len(cfg["paths"])]
        head = f"Host: {self.host}:{self.port}\r\nCookie: chat_session={cookie}\r\n"
        if self.mode == "sse":
            return f"GET {path} HTTP/1.1\r\n{head}Accept: text/event-stream\r\n\r\n".encode()
        if self.mode == "poll":
            timeout = cfg.get("poll_timeout", 25) if conn.ready else 0
            return f"GET {path}?cursor={conn.cursor}&timeout={timeout} HTTP/1.1\r\n{head}\r\n".encode()
        # post: a fresh client_id each time, so nothing is deduplicated
        csrf = cfg["csrf"][i % len(cfg["csrf"])]
        self.posted += 1
        body = json.dumps({"body": bench_body(0, cfg.get("body_bytes", 128)),
                           "client_id": f"{cfg.get('tag', 'p')}-{self.posted}"}).encode()
        return (f"POST {path} HTTP/1.1\r\n{head}X-CSRF-Token: {csrf}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def _open(self, index: int) -> None:
        conn = self.conns[index]
        conn.attempts += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed_attempt(conn, f"connect:{errno.errorcode.get(code, code)}")
            return
        conn.sock, conn.fd, conn.state = sock, sock.fileno(), CONNECTING
        conn.raw, conn.chunk_left, conn.sse, conn.headers_done, conn.clen = b"", 0, b"", False, -1
        self.by_fd[conn.fd] = conn
        self.ep.register(conn.fd, select.EPOLLOUT)
        self.opening += not conn.ready

    def _close(self, conn: Conn) -> None:
        if conn.sock is not None:
            self.by_fd.pop(conn.fd, None)
            try:
                self.ep.unregister(conn.fd)
            except OSError:
                pass
            conn.sock.close()
            conn.sock, conn.fd = None, -1

    def _failed_attempt(self, conn: Conn, why: str, retry_after: float = 0.5) -> None:
        """A connection that never became ready: retry (bounded), else count it failed."""
        self.errors[why] = self.errors.get(why, 0) + 1
        if conn.sock is not None:
            self._close(conn)
            self.opening -= not conn.ready
        if conn.ready or (conn.attempts < self.max_attempts and not self.stopping):
            self.retry_at.append((time.monotonic() + retry_after, conn.index))
        else:
            self.failed += 1

    def _lost(self, conn: Conn, why: str, retry_after: float = 0.0) -> None:
        if not conn.ready or self.mode in ("poll", "post"):
            # Not set up yet: retry (bounded). A poller or poster whose keep-alive connection ended
            # reconnects and carries on from its cursor.
            if conn.ready and why == "closed":
                self.reconnects += 1
                self._close(conn)
                if not self.stopping:
                    self._open(conn.index)
                return
            self._failed_attempt(conn, why, retry_after)
            return
        self._close(conn)
        self.lost += 1
        self.errors[why] = self.errors.get(why, 0) + 1

    def _send(self, conn: Conn) -> None:
        conn.request = self._request_for(conn)
        conn.sent_at = now_us()
        try:
            sent = conn.sock.send(conn.request)
        except OSError as error:
            self._lost(conn, f"send:{error.errno}")
            return
        if sent < len(conn.request):
            conn.request = conn.request[sent:]
            conn.state = SENDING
            self.ep.modify(conn.fd, select.EPOLLOUT)
        else:
            conn.state = HEADERS
            self.ep.modify(conn.fd, select.EPOLLIN)

    # Reading

    def _readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._lost(conn, f"recv:{error.errno}")
            return
        if not data:
            self._lost(conn, "closed")
            return
        now = self.recv_now = now_us()
        self.recv_wall = time.time_ns() // 1000
        self.bytes_in += len(data)
        if conn.state == HEADERS:
            data = conn.raw + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                conn.raw = data
                return
            head, data = data[:end].decode("latin-1"), data[end + 4:]
            conn.raw = b""
            lines = head.split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            conn.clen = int(fields.get("content-length", -1))
            conn.close_after = fields.get("connection", "").lower() == "close"
            if status != 200 and self.mode != "post":
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self._lost(conn, f"status:{status}", min(float(fields.get("retry-after") or 0.5), 5.0))
                return
            conn.state = BODY
            conn.chunk_left = 0
            conn.headers_done = status  # the status of the response being read
            if not data:
                return
        if self.mode == "sse":
            if not conn.raw and conn.chunk_left == 0 and data[-2:] == b"\r\n":
                # The common case: exactly one whole chunk in this read (gunicorn writes one per yield).
                line_end = data.find(b"\r\n")
                size = int(data[:line_end], 16) if 0 < line_end <= 8 else -1
                if size > 0 and line_end + 4 + size == len(data):
                    self._sse_body(conn, data[line_end + 2:-2], now)
                    return
            self._sse_body(conn, self._dechunk(conn, data), now)
        elif self.mode == "poll":
            self._poll_body(conn, data, now)
        else:
            self._post_body(conn, data, now, conn.headers_done)

    def _dechunk(self, conn: Conn, data: bytes) -> bytes:
        buf = conn.raw + data if conn.raw else data
        out, pos, end = [], 0, len(buf)
        while pos < end:
            left = conn.chunk_left
            if left > 0:
                stop = pos + left
                if stop <= end:
                    out.append(buf[pos:stop])
                    pos, conn.chunk_left = stop, -2
                else:
                    out.append(buf[pos:])
                    conn.chunk_left, pos = left - (end - pos), end
            elif left == -2:  # the CRLF after a chunk's data
                if end - pos < 2:
                    break
                pos, conn.chunk_left = pos + 2, 0
            else:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(buf[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    pos = end
                    break
                conn.chunk_left = size
        conn.raw = buf[pos:] if pos < end else b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _sse_body(self, conn: Conn, payload: bytes, now: int) -> None:
        text = conn.sse + payload if conn.sse else payload
        parts = text.split(b"\n\n")
        conn.sse = parts.pop()
        for event in parts:
            if event[:4] == b"id: ":
                line_end = event.find(b"\n")
                at = event.find(MARK, line_end)
                if at < 0:
                    self.other_durable += 1
                    continue
                k = int(event[at + 7:at + 15])
                key = event_key(event[4:line_end])
                self._delivery(conn, k, key, now - int(event[at + 16:at + 32]), True)
            elif event.startswith(b"event: ping"):
                self.pings += 1
            elif event.startswith(b"event: presence"):
                self.presence_events += 1
                self.presence_bytes += len(event)
            elif event.startswith(b"event: ready"):
                self._became_ready(conn)

    def _delivery(self, conn: Conn, k: int, key: int, latency: int, in_window: bool) -> None:
        if key <= conn.last_key:
            if key == conn.last_key or (conn.seen is not None and k < len(conn.seen) and conn.seen[k]):
                self.duplicates += 1
                return
            self.order_violations += 1
        else:
            conn.last_key = key
        if conn.seen is not None:
            if k >= len(conn.seen):
                self.unknown += 1
                return
            conn.seen[k] = 1
        conn.received += 1
        self.delivered += 1
        if in_window:
            self.latencies.append(latency)
            self.after_append.append(self.recv_wall - (key >> 20) * 1000)
            self.in_generator.append(self.recv_now - self.batch_at)
            self.message_of.append(k)

    def _became_ready(self, conn: Conn) -> None:
        if not conn.ready:
            conn.ready = True
            self.opening -= 1

    def _response_complete(self, conn: Conn, data: bytes):
        """For Content-Length responses: the body once it is all there, else None."""
        body = conn.raw + data if conn.raw else data
        if conn.clen < 0 or len(body) < conn.clen:
            conn.raw = body
            return None
        conn.raw = b""
        return body[:conn.clen]

    def _next_request(self, conn: Conn) -> None:
        if conn.close_after:
            self._lost(conn, "closed")
            return
        conn.state = HEADERS
        self._send(conn)

    def _poll_body(self, conn: Conn, data: bytes, now: int) -> None:
        body = self._response_complete(conn, data)
        if body is None:
            return
        reply = poll_answer_events(body)
        in_window = self.window[0] <= now / 1e6 <= self.window[1]
        self.requests_done += 1
        if not reply["events"]:
            self.empty_polls += 1
        for event in reply["events"]:
            text = event["data"].get("body", "") if event["event"] == "message" else ""
            if text.startswith("bench:"):
                self._delivery(conn, int(text[6:14]), event_key(event["id"]), now - int(text[15:31]), in_window)
            elif event["id"] is not None:
                self.other_durable += 1
        conn.cursor = reply["cursor"]
        self._became_ready(conn)
        if not self.stopping:
            self._next_request(conn)

    def _post_body(self, conn: Conn, data: bytes, now: int, status: int) -> None:
        body = self._response_complete(conn, data)
        if body is None:
            return
        if self.window[0] <= now / 1e6 <= self.window[1]:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 201:
                self.latencies.append(now - conn.sent_at)
                self.delivered += 1
        conn.received += 1
        self._became_ready(conn)
        if not self.stopping and time.monotonic() < self.window[1]:
            self._next_request(conn)

    # The loop

    def _counters(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_s": usage.ru_utime + usage.ru_stime, "delivered": self.delivered, "bytes_in": self.bytes_in,
                "presence_events": self.presence_events, "presence_bytes": self.presence_bytes,
                "pings": self.pings, "requests": self.requests_done, "at": time.monotonic()}

    def _command(self) -> None:
        line = sys.stdin.readline()
        if line.strip() == "mark":  # the measurement window starts: counts since now are reported apart
            self.mark = self._counters()
        elif not line or line.strip() == "stop":
            self.stopping = True

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        self.ep.register(stdin, select.EPOLLIN)
        while not self.stopping and time.monotonic() < self.hard_deadline:
            now = time.monotonic()
            if self.retry_at:
                due = [index for when, index in self.retry_at if when <= now]
                if due:
                    self.retry_at = [(when, index) for when, index in self.retry_at if when > now]
                    for index in due:
                        self._open(index)
            while self.waiting and self.opening < self.concurrency:
                self._open(self.waiting.pop())
            if not self.ready_sent and not self.waiting and not self.retry_at and self.opening == 0:
                self.ready_sent, self.ready_at = True, time.monotonic()
                emit("ready", ready=sum(conn.ready for conn in self.conns), failed=self.failed,
                     errors=self.errors, statuses=self.statuses)
            if self.mode == "post" and now > self.window[1] and self.ready_sent:
                break
            ready = self.ep.poll(0.2 if self.ready_sent else 0.05, 2048)
            self.batch_at = now_us()
            if self.coalesce and 0 < len(ready) < 256:
                # Let more sockets become readable before reading: far fewer wake-ups and epoll calls
                # for at most `coalesce` seconds more measured latency (reported with the results).
                time.sleep(self.coalesce)
                ready = self.ep.poll(0, 2048)
            for fd, mask in ready:
                if fd == stdin:
                    self._command()
                    continue
                conn = self.by_fd.get(fd)
                if conn is None:
                    continue
                if conn.state == BODY or conn.state == HEADERS:
                    self._readable(conn)
                elif conn.state == CONNECTING:
                    code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        self._failed_attempt(conn, f"connect:{errno.errorcode.get(code, code)}")
                    else:
                        self._send(conn)
                elif conn.state == SENDING:
                    try:
                        sent = conn.sock.send(conn.request)
                    except OSError as error:
                        self._lost(conn, f"send:{error.errno}")
                        continue
                    conn.request = conn.request[sent:]
                    if not conn.request:
                        conn.state = HEADERS
                        self.ep.modify(conn.fd, select.EPOLLIN)
        self.stopping = True

    def finish(self) -> dict:
        since_mark = None
        if self.mark:
            now = self._counters()
            since_mark = {key: round(now[key] - self.mark[key], 3) for key in now}
            since_mark["seconds"] = since_mark.pop("at")
        open_at_stop = sum(1 for conn in self.conns if conn.sock is not None and conn.ready)
        for conn in self.conns:
            self._close(conn)
        received = {}
        for conn in self.conns:
            if conn.ready:
                received[conn.received] = received.get(conn.received, 0) + 1
        out = self.config.get("latency_file")
        if out:
            with open(out, "wb") as f:
                self.latencies.tofile(f)
            with open(out + ".after-append", "wb") as f:
                self.after_append.tofile(f)
            with open(out + ".in-generator", "wb") as f:
                self.in_generator.tofile(f)
            with open(out + ".message", "wb") as f:
                self.message_of.tofile(f)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"ready": sum(conn.ready for conn in self.conns), "failed": self.failed, "lost": self.lost,
                "open_at_stop": open_at_stop, "errors": self.errors,
                "statuses": {str(k): v for k, v in self.statuses.items()}, "delivered": self.delivered,
                "duplicates": self.duplicates, "order_violations": self.order_violations, "unknown": self.unknown,
                "other_durable": self.other_durable, "presence_events": self.presence_events,
                "presence_bytes": self.presence_bytes, "pings": self.pings, "bytes_in": self.bytes_in,
                "requests": self.requests_done, "empty_polls": self.empty_polls, "reconnects": self.reconnects,
                "received_histogram": {str(k): v for k, v in received.items()},
                "latencies": len(self.latencies), "cpu_s": usage.ru_utime + usage.ru_stime, "since_mark": since_mark}


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    raise_nofile()
    if config["mode"] == "publish":
        from .publisher import Publisher  # noqa: PLC0415

        emit("final", **Publisher(config).run())
        return
    engine = Engine(config)
    try:
        engine.run()
    finally:
        emit("final", **engine.finish())


if __name__ == "__main__":
    main()
