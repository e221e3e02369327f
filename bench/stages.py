"""The write path's stages, timed in-process: the app on the run's own database and Redis, the Flask test
client as the caller, and timers wrapped around the functions each stage runs (chat/ is not modified;
the wrappers live only in the bench's process). Single-threaded, no gevent, no network to the app:
it shows where a POST's time goes, not what the server sustains."""
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager

from .loadgen import bench_body


@contextmanager
def _timed(owner, name: str, label: str, totals: dict, counts: dict):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - started
            totals["cpu:" + label] += time.thread_time() - cpu_started
            counts[label] += 1

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def measure(run, account, slug: str, requests: int, body_bytes: int) -> dict:
    import sqlalchemy.orm  # noqa: PLC0415

    from chat import actions, api, create_app, outbox, streams  # noqa: PLC0415
    from chat.extensions import db  # noqa: PLC0415

    app = create_app({"SQLALCHEMY_DATABASE_URI": run.services.database_url, "REDIS_URL": run.services.redis_url,
                      "CHAT_REDIS_PREFIX": run.services.prefix, "SECRET_KEY": "bench",
                      "CHAT_RATE_LIMIT": "1000000/10", "CHAT_USER_RATE_LIMIT": "1000000/10",
                      "CHAT_USER_BYTES_LIMIT": "1000000000000/10"}, instance_path=str(run.workdir / "instance"))
    client = app.test_client()
    client.set_cookie("chat_session", account.cookie)
    headers = {"X-CSRF-Token": account.csrf}
    stages = [  # (label, owner, attribute)
        ("auth: session (from memory)", api, "check_request"),
        ("room (from memory)", api, "known_room"),
        ("validation: JSON + schema", api, "json_body"),
        ("post_message (all below)", actions, "post_message"),
        ("  lock, slow mode, mute, repeat: one query", actions, "posting_state"),
        ("  rate limit (Redis script)", streams.Streams, "rate_limited"),
        ("  the room's counter (UPDATE ... RETURNING)", actions, "allocate_event_id"),
        ("  insert", actions, "insert_message"),
        ("  database commit", sqlalchemy.orm.Session, "commit"),
        ("  publish (Redis script, after the commit)", outbox, "publish"),
    ]
    totals, counts = defaultdict(float), defaultdict(int)

    def post(k):
        response = client.post(f"/api/rooms/{slug}/messages", headers=headers,
                               json={"body": bench_body(k, body_bytes), "client_id": f"stage{k}"})
        if response.status_code != 201:
            raise RuntimeError(f"stage timing: POST answered {response.status_code}: {response.get_data(as_text=True)}")

    for k in range(min(50, requests)):  # warm caches and connections first
        post(1_000_000 + k)
    with ExitStack() as stack:
        for label, owner, name in stages:
            stack.enter_context(_timed(owner, name, label, totals, counts))
        started, cpu_started = time.perf_counter(), time.thread_time()
        for k in range(requests):
            post(k)
        whole, whole_cpu = time.perf_counter() - started, time.thread_time() - cpu_started
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    per = lambda seconds: round(seconds / requests * 1e6, 1)  # noqa: E731
    out = {"requests": requests, "whole_request": {"wall_us": per(whole), "cpu_us": per(whole_cpu)}}
    for label, _, _ in stages:
        out[label] = {"wall_us": per(totals[label]), "cpu_us": per(totals["cpu:" + label]),
                      "calls": round(counts[label] / requests, 2)}
    top = ("auth: session + ban lookup", "room lookup", "validation: JSON + schema", "post_message (all below)",
           "response: message to_api")
    out["flask/werkzeug/test client, the rest"] = {
        "wall_us": per(whole - sum(totals[label] for label in top)),
        "cpu_us": per(whole_cpu - sum(totals["cpu:" + label] for label in top))}
    out["note"] = ("in-process, one thread, no gevent: per POST by stage, wall and CPU time in µs (wall minus CPU "
                   "is waiting: fsync, network round trips); nested stages indented")
    return out
