"""Optional: py-spy samples every gunicorn worker during a scenario's window; summarised as the hottest frames.

py-spy is not a project dependency: `pip install --target /tmp/pyspy py-spy` and pass
`--profile --py-spy /tmp/pyspy/bin/py-spy` (or put py-spy on PATH). Idle stacks are not sampled,
so the shares are of the workers' CPU time. Profiled runs cost CPU on the same cores: measure without.
"""
import shutil
import subprocess
from collections import Counter
from pathlib import Path


def find(explicit: str | None) -> str | None:
    for candidate in (explicit, shutil.which("py-spy"), "/tmp/pyspy/bin/py-spy"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Profiler:
    def __init__(self, binary: str, pids: list[int], seconds: float, workdir: Path, rate: int = 200):
        self.outputs = []
        self.processes = []
        for pid in pids:
            output = workdir / f"py-spy-{pid}.txt"
            self.outputs.append(output)
            self.processes.append(subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(rate),
                 "--format", "raw", "--nonblocking", "--output", str(output)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def finish(self, top: int = 25) -> dict:
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        leaf, inclusive, packages, total = Counter(), Counter(), Counter(), 0
        for output in self.outputs:
            try:
                lines = output.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                n = int(count)
                frames = [_short(frame) for frame in stack.split(";") if "(" in frame]
                if not frames:
                    continue
                total += n
                leaf[frames[-1]] += n
                packages[_package(frames[-1])] += n
                for frame in set(frames):
                    inclusive[frame] += n
        if not total:
            return {"samples": 0}
        share = lambda counter: [[frame, round(100 * n / total, 1)] for frame, n in counter.most_common(top)]  # noqa: E731
        return {"samples": total, "self_by_package_percent": share(packages), "self_percent": share(leaf),
                "inclusive_percent": share(inclusive)}


def _package(frame: str) -> str:
    """`send (gevent/_socketcommon.py)` -> `gevent`; the stdlib's modules by file name."""
    where = frame.rpartition(" (")[2].rstrip(")")
    return where.split("/", 1)[0] if "/" in where else where.removesuffix(".py")


def _short(frame: str) -> str:
    """`deliver (chat/hub.py:42)` -> `deliver (chat/hub.py)`: aggregate a function's lines."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})"
