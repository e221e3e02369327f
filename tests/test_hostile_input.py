"""Input a hostile or broken client sends: never a 5xx, never half-saved (DESIGN.md, "What bad input gets")."""
import json

import pytest
import redis

from chat.streams import Streams
from tests.support import assert_error


HUGE = [f"{2**63}-0", f"0-{2**63}", f"{2**64 - 1}-{2**64 - 1}"]  # well-formed, past what the database stores


@pytest.mark.parametrize("huge", HUGE)
def test_huge_event_ids_get_answers_not_errors(member, huge):
    slug = member.create_room()
    member.send(slug, "one")
    history = member.history(slug, before=huge)
    expected = ["one"] if not huge.startswith("0-") else []  # everything is before it, or nothing
    assert history.status_code == 200 and [m["body"] for m in history.json["messages"]] == expected
    assert_error(member.delete(f"/api/rooms/{slug}/messages/{huge}"), 404, "not_found")
    for path, params in ((f"/api/rooms/{slug}/poll", {}), ("/api/poll", {"rooms": slug})):
        answer = member.get(path, query_string={"cursor": huge, "timeout": 0, **params})
        # Past every event: reset (the position is unknown); `0-<huge>` is before the first one: the
        # room's message, or for the feed a reset if this Redis restarted since (its positions start over).
        expected = [["reset"]] if not huge.startswith("0-") else [["message"]] if path != "/api/poll" else \
            [["message"], ["reset"]]
        assert answer.status_code == 200 and [e["event"] for e in answer.json["events"]] in expected, answer.json


def test_deeply_nested_json_is_400_and_saves_nothing(member):
    slug = member.create_room()
    nested = '{"body": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = member.post(f"/api/rooms/{slug}/messages", data=nested, content_type="application/json")
    assert_error(answer, 400, "invalid_json")
    assert member.history(slug).json["messages"] == []


def test_line_separators_are_escaped_on_the_wire_and_text_kept_as_utf8(app, member, services):
    slug = member.create_room()
    body = "one\u2028two\u2029three é 😀"
    cursor = member.history(slug).json["cursor"]
    sent = member.send(slug, body).json["message"]
    answer = member.get(f"/api/rooms/{slug}/poll", query_string={"cursor": cursor, "timeout": 5})
    raw = answer.get_data()
    assert "\u2028".encode() not in raw and "\u2029".encode() not in raw and b"\\u2028" in raw
    assert json.loads(raw)["events"][0]["data"]["body"] == body == sent["body"]
    # Stored in Redis as UTF-8 (an emoji is 4 bytes there, not a 12-byte escape), in the room's log and the firehose.
    client = redis.Redis.from_url(services["redis_url"])
    entry = client.xrevrange(Streams(client, services["prefix"], 1).room_stream_key(slug), count=1)[0][1]
    assert "😀".encode() in entry[b"data"] and b"\\ud83d" not in entry[b"data"]
    client.close()
