"""Operations endpoints (API.md, "Operations"): liveness, and readiness that means it."""
import subprocess
import time

import pytest
import redis
import requests

from chat import create_app, hub
from tests.support import metric, wait_until


def test_healthz_touches_nothing(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_ready_when_redis_and_the_database_answer_and_this_process_reads(client):
    answer = client.get("/readyz")
    assert (answer.status_code, answer.json) == (200, {"redis": "ok", "database": "ok"})


@pytest.fixture
def evicting_redis(tmp_path):
    """A private Redis configured as a cache: it would evict keys (streams) under memory pressure."""
    socket_path = tmp_path / "evicting.sock"
    process = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--save", "",
                                "--appendonly", "no", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
                               stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(socket_path))
        for _ in range(200):  # until it listens (a process start has no event to await)
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield f"unix://{socket_path}"
    finally:
        process.terminate()
        process.wait(10)


def test_not_ready_on_a_redis_that_would_evict_keys(make_app, evicting_redis):
    answer = make_app(REDIS_URL=evicting_redis).test_client().get("/readyz")
    assert answer.status_code == 503 and "allkeys-lru" in answer.json["redis"] and answer.json["database"] == "ok"


def test_not_ready_once_this_processs_reader_has_stopped(app, client):
    assert client.get("/readyz").status_code == 200
    with app.app_context():
        hub.current().shutdown(window=0)
    answer = client.get("/readyz")
    assert answer.status_code == 503 and "not running" in answer.json["redis"]


def test_metrics_can_be_restricted_to_a_token(make_app):
    client = make_app(CHAT_METRICS_TOKEN="s3cret-token").test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 401 and answer.json["error"]["code"] == "not_authenticated"
    answer = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and b"chat_streams_open" in answer.data


def metric_value(client, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_metrics_count_resets_and_the_hubs_lag(member, client):
    slug = member.create_room()
    member.get(f"/api/rooms/{slug}/poll", query_string={"timeout": 0})  # starts this process's hub
    resets, handed_out = metric_value(client, "chat_resets_total"), metric_value(client, "chat_hub_lag_seconds_count")
    member.send(slug, "counted")
    member.get(f"/api/rooms/{slug}/poll", query_string={"cursor": f"{2**62}-0", "timeout": 0})  # unknown: a reset
    assert metric_value(client, "chat_resets_total") == resets + 1
    wait_until(lambda: metric_value(client, "chat_hub_lag_seconds_count") > handed_out, what="the hub's lag observed")


def test_a_shared_database_needs_a_secret_key_set(monkeypatch, tmp_path):
    """Several machines must sign with one key: with PostgreSQL, a key generated on one machine is refused."""
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY must be set"):
        create_app({"SQLALCHEMY_DATABASE_URI": "postgresql://chat@127.0.0.1:5432/chat"}, instance_path=str(tmp_path))
    # SQLite is one machine: a key is generated once and kept in instance/, private.
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/one.sqlite3"}, instance_path=str(tmp_path))
    assert app.config["SECRET_KEY"] == (tmp_path / "secret_key").read_text().strip()
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_metrics_add_up_over_both_workers(live):
    """/metrics answers for the whole server, whichever worker serves the scrape: posts and open streams
    that both gunicorn workers handled are all counted (prometheus_client's multiprocess mode)."""
    user = live.user()
    slug = user.create_room()
    accepted, streams_before = metric(live, "chat_messages_accepted_total"), metric(live, "chat_streams_open")
    for n in range(10):  # a new connection each time: the kernel hands them to either worker
        response = requests.post(f"{live.url}/api/rooms/{slug}/messages", json={"body": f"m{n}"},
                                 headers={"X-CSRF-Token": user.csrf, "Connection": "close"},
                                 cookies=user.http.cookies, timeout=10)
        assert response.status_code == 201
    opened = [user.events(f"/api/rooms/{slug}/events") for _ in range(4)]
    try:
        for stream in opened:
            assert stream.next(timeout=5).event == "ready"
        for _ in range(3):  # any worker may answer the scrape: each must see the whole server
            assert metric(live, "chat_messages_accepted_total") - accepted == 10
            assert metric(live, "chat_streams_open") - streams_before == 4
    finally:
        for stream in opened:
            stream.close()
