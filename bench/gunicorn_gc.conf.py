"""gunicorn.conf.py plus one diagnostic (bench `--gc-log`): each worker logs its garbage-collector pauses.

A full collection stops the whole gevent worker, every stream included; this shows whether the
fan-out's slowest deliveries line up with them. Everything else is the project's gunicorn.conf.py.
Two experiments, through the bench's `--set`: BENCH_GC_FREEZE=1 calls gc.freeze() once the worker has
loaded the app (what is loaded by then is never scanned again), BENCH_GC_THRESHOLD=700,10,10 sets
gc.set_threshold().
"""
import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_OWN_FILE, __file__ = __file__, str(_ROOT / "gunicorn.conf.py")  # its paths are relative to its own file
exec(compile((_ROOT / "gunicorn.conf.py").read_text(), __file__, "exec"))  # noqa: S102
__file__ = _OWN_FILE

_project_post_worker_init = post_worker_init  # noqa: F821 - defined by the exec above


def post_worker_init(worker):  # noqa: F811
    import gc  # noqa: PLC0415
    import time  # noqa: PLC0415

    log = open(Path(os.environ["BENCH_GC_LOG_DIR"]) / f"gc-{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115
    started = {}

    def callback(phase, info):
        if phase == "start":
            started["at"] = time.perf_counter()
        elif "at" in started:
            pause = time.perf_counter() - started.pop("at")
            log.write(f"{time.time():.6f} {info['generation']} {pause * 1000:.3f} {info['collected']}\n")

    gc.callbacks.append(callback)
    _project_post_worker_init(worker)
    if os.environ.get("BENCH_GC_THRESHOLD"):
        gc.set_threshold(*(int(part) for part in os.environ["BENCH_GC_THRESHOLD"].split(",")))
    if os.environ.get("BENCH_GC_FREEZE"):
        gc.collect()
        gc.freeze()
