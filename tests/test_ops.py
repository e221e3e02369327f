"""Operations endpoints (API.md, "Operations"): liveness, and readiness that means it."""
import subprocess
import time

import pytest
import redis

from chat import hub


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
