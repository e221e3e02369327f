"""Operations endpoints (API.md, "Operations"): liveness, and readiness that means it."""
import subprocess
import time

import pytest
import redis

from chat import hub
from tests.support import wait_until


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
