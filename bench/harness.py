"""One scenario's run: services, server and generators started together and always stopped together."""
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from . import measure
from .clients import Generator
from .server import Server, Services

RESULTS = Path(__file__).resolve().parent / "results"


class Run:
    """`with Run(options, settings) as run:` gives a started server; everything stops on exit, failure included."""

    def __init__(self, options, settings: dict | None = None, database_url: str | None = None):
        self.options = options
        self.services = Services(options.redis_url, database_url if database_url is not None else options.database_url)
        settings = {**(settings or {}), **options.settings}
        if options.worker_connections:
            settings["CHAT_WORKER_CONNECTIONS"] = options.worker_connections
        self.settings = settings
        self.server = None
        self.generators: list[Generator] = []
        self.started = time.monotonic()

    def __enter__(self) -> "Run":
        try:
            self.services.start()
            self.server = Server(self.services, self.options.workers, self.settings,
                                 gc_log=getattr(self.options, "gc_log", False)).start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        self.server_group = measure.Group("server", measure.server_pids(self.server.process.pid))
        self.generator_group = measure.Group("generator", [os.getpid()])
        groups = {"server": self.server_group, "generator": self.generator_group}
        if self.services.redis_process:
            groups["redis"] = measure.Group("redis", [self.services.redis_process.pid])
        self.window = measure.Window(groups)
        log(f"server up at {self.server.url} ({self.options.workers} workers, {self.services.database_kind}, "
            f"redis {'given' if self.services.given_redis else 'private'})")
        return self

    def __exit__(self, *exc_info) -> None:
        for generator in self.generators:
            generator.kill()
        if exc_info[0] is not None and self.server is not None:
            log("server log tail:\n" + self.server.log_tail())
        if self.server is not None:
            self.server.stop()
        self.services.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def workdir(self) -> Path:
        return self.services.tmp

    def spawn(self, config: dict, name: str) -> Generator:
        config = {"host": "127.0.0.1", "port": self.server.port, **config}
        generator = Generator(config, self.workdir, name)
        self.generators.append(generator)
        self.generator_group.add([generator.pid])
        return generator

    def refresh_server_pids(self) -> None:
        self.server_group.add(measure.server_pids(self.server.process.pid))

    def describe(self) -> dict:
        return {"workers": self.options.workers, "database": self.services.database_kind,
                "redis": "given" if self.services.given_redis else "private",
                "settings": {key: value for key, value in self.server.settings.items()
                             if key not in ("CHAT_PASSWORD_METHOD",)},
                "worker_pids": self.server.worker_pids()}


def code_version() -> dict:
    """The commit, and a hash of the server's code as it ran (the working tree may differ from the commit)."""
    import hashlib  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    root = RESULTS.parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.glob("chat/*.py"), root / "gunicorn.conf.py", root / "requirements.txt"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "chat", "gunicorn.conf.py"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "server_code_modified": dirty, "server_code_sha256": digest.hexdigest()[:16]}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report(result: dict, save: bool = True) -> dict:
    """Print the scenario's one JSON line and append it to bench/results/<scenario>.jsonl."""
    facts = {key: value for key, value in measure.machine().items() if key != "loadavg_before"}
    result = {"scenario": result.pop("scenario"), "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              **result, "machine": facts, "code": code_version()}
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    if save:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / f"{result['scenario']}.jsonl", "a") as f:
            f.write(line + "\n")
    return result


def read_latencies(paths) -> list[int]:
    import array  # noqa: PLC0415

    values = array.array("q")
    for path in paths:
        try:
            with open(path, "rb") as f:
                values.frombytes(f.read())
        except OSError:
            pass
    return values.tolist()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def worker_connections(run: Run) -> dict:
    """Established client connections to the server's port, per worker process."""
    counts = {}
    for pid in run.server.worker_pids():
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        counts[str(pid)] = sum(1 for c in connections if c.status == psutil.CONN_ESTABLISHED and c.laddr
                               and c.laddr.port == run.server.port)
    return counts
