"""The fan-out's publisher: one keep-alive connection, paced, blocking (the only thing in its process).

Each body carries its number and the monotonic time taken just before the request is written.
"""
import array
import json
import resource
import socket
import time

from .loadgen import bench_body, now_us


class Publisher:
    def __init__(self, config: dict):
        self.config = config
        self.sock = None
        self.sent, self.statuses, self.latencies = 0, {}, array.array("q")
        self.reconnects = 0

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.reconnects += 1
        self.sock = socket.create_connection((self.config["host"], self.config["port"]), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def _response(self) -> tuple[int, bytes, bool]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(fields.get("content-length", 0))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        self.buffer = rest[length:]
        return status, rest[:length], fields.get("connection", "").lower() == "close"

    def run(self) -> dict:
        cfg = self.config
        rate, count, size = cfg["rate"], cfg["messages"], cfg.get("body_bytes", 128)
        head = (f"POST {cfg['path']} HTTP/1.1\r\nHost: {cfg['host']}:{cfg['port']}\r\n"
                f"Cookie: chat_session={cfg['cookie']}\r\nX-CSRF-Token: {cfg['csrf']}\r\n"
                "Content-Type: application/json\r\n")
        self._connect()
        started = time.monotonic()
        first_id = last_id = None
        for k in range(count):
            due = started + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() > cfg["hard_deadline"]:
                break
            sent_us = now_us()
            body = json.dumps({"body": bench_body(k, size, sent_us), "client_id": f"pub{k}"}).encode()
            request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
            try:
                self.sock.sendall(request)
                status, reply, close = self._response()
            except (OSError, ConnectionError):
                self.statuses["error"] = self.statuses.get("error", 0) + 1
                self._connect()
                continue
            self.latencies.append(now_us() - sent_us)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 201:
                self.sent += 1
                last_id = json.loads(reply)["message"]["id"]
                first_id = first_id or last_id
            if close:
                self._connect()
        elapsed = time.monotonic() - started
        self.sock.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        lat = sorted(self.latencies)
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000) if lat else (lambda q: None)
        return {"accepted": self.sent, "attempted": sum(v for v in self.statuses.values()),
                "statuses": {str(k): v for k, v in self.statuses.items()}, "elapsed_s": round(elapsed, 3),
                "target_rate": rate, "achieved_rate": round(self.sent / elapsed, 3) if elapsed else None,
                "post_ms_p50": pick(0.5), "post_ms_p99": pick(0.99), "post_ms_max": lat[-1] / 1000 if lat else None,
                "reconnects": self.reconnects, "first_id": first_id, "last_id": last_id,
                "cpu_s": usage.ru_utime + usage.ru_stime}
