"""What the bench measures besides its own counts: CPU and memory of process groups, the machine, /metrics."""
import os
import platform
import re
import time

import psutil
import requests


class Group:
    """A named set of processes (the server's, the generator's); pids that exit keep their last reading."""

    def __init__(self, name: str, pids):
        self.name = name
        self.pids = set(pids)
        self.last = {}

    def add(self, pids) -> None:
        self.pids.update(pids)

    def cpu(self) -> tuple[float, float]:
        """Seconds of user and of system CPU these processes have used so far."""
        for pid in list(self.pids):
            try:
                times = psutil.Process(pid).cpu_times()
                self.last[pid] = (times.user, times.system)
            except psutil.Error:
                pass  # exited: keep its last reading
        return sum(u for u, _ in self.last.values()), sum(s for _, s in self.last.values())

    def memory(self) -> dict:
        """RSS and USS (pages only this process holds: forked workers share the master's) in KiB."""
        rss = uss = 0
        for pid in self.pids:
            try:
                info = psutil.Process(pid).memory_full_info()
                rss, uss = rss + info.rss, uss + info.uss
            except psutil.Error:
                pass
        return {"rss_kib": rss // 1024, "uss_kib": uss // 1024}


def server_pids(master_pid: int) -> list[int]:
    try:
        master = psutil.Process(master_pid)
        return [master_pid] + [child.pid for child in master.children(recursive=True)]
    except psutil.Error:
        return [master_pid]


class Window:
    """CPU of each group, and of the whole machine, between start() and stop()."""

    def __init__(self, groups: dict):
        self.groups = groups

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.machine0 = psutil.cpu_times()
        self.cpu0 = {name: group.cpu() for name, group in self.groups.items()}

    def stop(self) -> dict:
        elapsed = time.monotonic() - self.t0
        machine = psutil.cpu_times()
        busy = _busy(machine) - _busy(self.machine0)
        total = _total(machine) - _total(self.machine0)
        split = {name: [a - b for a, b in zip(group.cpu(), self.cpu0[name])] for name, group in self.groups.items()}
        used = {name: user + system for name, (user, system) in split.items()}
        out = {"window_s": round(elapsed, 2)}
        for name, seconds in used.items():
            out[f"{name}_cpu_s"] = round(seconds, 3)
            out[f"{name}_system_cpu_s"] = round(split[name][1], 3)
            out[f"{name}_cores"] = round(seconds / elapsed, 3) if elapsed else None
        ncpu = psutil.cpu_count() or 1
        out["machine_busy_cores"] = round(busy / total * ncpu, 3) if total else None
        out["other_processes_cores"] = round(max(0.0, busy / total * ncpu - sum(used.values()) / elapsed), 3) \
            if total and elapsed else None
        return out


def _busy(times) -> float:
    # guest time is already inside user time; steal is time the hypervisor gave to someone else
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _total(times) -> float:
    return _busy(times) + times.idle + getattr(times, "iowait", 0.0)


def percentiles(values, scale: float = 1.0) -> dict:
    """p50/p90/p99/p99.9/max of integer samples, divided by `scale` (µs -> ms: 1000)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(q):
        return round(ordered[min(n - 1, int(q * n))] / scale, 2)

    return {"n": n, "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999),
            "max": round(ordered[-1] / scale, 2), "mean": round(sum(ordered) / n / scale, 2)}


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(base_url: str) -> dict:
    """The server's /metrics as {(name, labels): value}; {} if it does not answer."""
    try:
        text = requests.get(base_url + "/metrics", timeout=10).text
    except requests.RequestException:
        return {}
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            try:
                found[(match[1], match[2] or "")] = float(match[3])
            except ValueError:
                pass
    return found


def metric_delta(before: dict, after: dict, name: str, label_part: str = "") -> float:
    return sum(value - before.get(key, 0.0) for key, value in after.items()
               if key[0] == name and label_part in key[1])


def request_durations(before: dict, after: dict) -> dict:
    """Mean server-side time per endpoint over the window, from chat_request_duration_seconds."""
    out = {}
    for (name, labels), value in after.items():
        if name != "chat_request_duration_seconds_count":
            continue
        count = value - before.get((name, labels), 0.0)
        if count <= 0:
            continue
        total = after.get(("chat_request_duration_seconds_sum", labels), 0.0) - \
            before.get(("chat_request_duration_seconds_sum", labels), 0.0)
        endpoint = re.search(r'endpoint="([^"]*)"', labels)
        out[endpoint[1] if endpoint else labels] = {"count": int(count), "mean_ms": round(total / count * 1000, 3)}
    return out


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
