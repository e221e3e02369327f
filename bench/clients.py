"""The bench's side of the wire: accounts and rooms made over the API, and load-generator processes."""
import json
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from .server import ROOT, _die_with_parent

PASSWORD = "bench password"


@dataclass
class Account:
    username: str
    cookie: str
    csrf: str


def register(base_url: str, username: str, attempts: int = 5) -> Account:
    for attempt in range(attempts):
        try:
            response = requests.post(base_url + "/api/auth/register", json={"username": username, "password": PASSWORD},
                                     timeout=30)
            if response.status_code == 201:
                return Account(username, response.cookies["chat_session"], response.json()["csrf_token"])
            if response.status_code == 409:  # an earlier attempt went through after all
                response = requests.post(base_url + "/api/auth/login",
                                         json={"username": username, "password": PASSWORD}, timeout=30)
                response.raise_for_status()
                return Account(username, response.cookies["chat_session"], response.json()["csrf_token"])
        except requests.RequestException:
            pass
        time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not register {username}")


def register_many(base_url: str, prefix: str, count: int, threads: int = 8) -> list[Account]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda i: register(base_url, f"{prefix}{i:05d}"), range(count)))


def create_room(base_url: str, account: Account, name: str) -> str:
    response = requests.post(base_url + "/api/rooms", json={"name": name}, timeout=30,
                             cookies={"chat_session": account.cookie}, headers={"X-CSRF-Token": account.csrf})
    response.raise_for_status()
    return response.json()["room"]["slug"]


def post_message(base_url: str, account: Account, slug: str, body: str) -> float:
    """One POST; returns its latency in ms (raises on a non-201)."""
    started = time.perf_counter()
    response = requests.post(f"{base_url}/api/rooms/{slug}/messages", json={"body": body}, timeout=30,
                             cookies={"chat_session": account.cookie}, headers={"X-CSRF-Token": account.csrf})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


class Generator:
    """One `python -m bench.loadgen` process; its JSON lines arrive on a queue."""

    def __init__(self, config: dict, workdir: Path, name: str):
        self.name = name
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(config))
        self.stderr = open(workdir / f"{name}.stderr", "w+b")
        self.process = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(self.config_path)], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        preexec_fn=_die_with_parent)
        self.lines = queue.Queue()
        self.final = None
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self):
        for raw in self.process.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                pass
        self.lines.put(None)

    def wait_for(self, kind: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no '{kind}' within {timeout:.0f} s") from None
            if line is None:
                self.lines.put(None)
                raise RuntimeError(f"{self.name} exited (rc={self.process.poll()}): {self.error_tail()}")
            if line.get("type") == "final":
                self.final = line
            if line.get("type") == kind:
                return line

    def error_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    def send(self, command: str) -> None:
        try:
            self.process.stdin.write(command.encode() + b"\n")
            self.process.stdin.flush()
        except OSError:
            pass

    def stop(self, timeout: float = 60) -> dict:
        """Ask it to stop and return its final counts."""
        if self.final is None and self.process.poll() is None:
            try:
                self.process.stdin.write(b"stop\n")
                self.process.stdin.flush()
            except OSError:
                pass
        if self.final is None:
            self.wait_for("final", timeout)
        return self.final

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.close()


def wait_all_ready(generators: list[Generator], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    total = {"ready": 0, "failed": 0, "errors": {}, "statuses": {}}
    for generator in generators:
        line = generator.wait_for("ready", max(1.0, deadline - time.monotonic()))
        total["ready"] += line["ready"]
        total["failed"] += line["failed"]
        for key in ("errors", "statuses"):
            for name, count in line[key].items():
                total[key][name] = total[key].get(name, 0) + count
    return total


def split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]
