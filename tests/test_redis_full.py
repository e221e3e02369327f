"""Redis memory bounded (issue 11): the embedded Redis runs with `maxmemory` and `noeviction`, and a Redis
that is full answers a post with a clear `503` + Retry-After (never a 5xx of another kind, never a silently
dropped event); once there is room again, the retry with the same client_id yields exactly one message.
On a private redis-server: filling it must not touch the machine's Redis."""
import pytest
import redis

from chat import embedded_redis
from tests.faults import PrivateRedis
from tests.support import unique
from tests.test_write_path_faults import history, new_room, post_ok, running_app, send, signed_in


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


def test_the_embedded_redis_is_bounded_and_refuses_rather_than_evicts(tmp_path):
    url = embedded_redis.ensure_running(str(tmp_path / "instance"), "64mb")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    finally:
        client.shutdown(nosave=True)  # this test's own server; the session's embedded Redis is another


def test_a_full_redis_answers_503_and_the_retry_yields_one_message(services, private_redis):
    with running_app(services, private_redis.url) as app:
        alice = signed_in(app)
        slug = new_room(alice)
        post_ok(alice, slug, "before Redis filled up")
        admin = private_redis.client()
        # Full: it holds more than its bound, and noeviction has nothing it may drop (a bound just above the
        # usage would come and go as client buffers are freed).
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)

        client_id = unique("c")
        refused = send(alice, slug, "while Redis is full", client_id)
        assert refused.status_code == 503, refused.json
        assert refused.json["error"]["code"] == "unavailable" and int(refused.headers["Retry-After"]) > 0

        admin.config_set("maxmemory", 0)  # room again (an operator raised the bound, or trimming freed some)
        retried = send(alice, slug, "while Redis is full", client_id)
        assert retried.status_code in (200, 201), retried.json
        bodies = [message["body"] for message in history(alice, slug)["messages"]]
        assert bodies == ["before Redis filled up", "while Redis is full"]
