"""The soak's subscribers: `python -m bench.soak_clients CONFIG.json`, one gevent process for all of them.

Each subscriber follows one room, over SSE or long-polling, from the room's history cursor taken before
any post. It hangs up at random (a stream mid-read, a poll mid-wait, whose answer is then lost) and
resumes from the last id it kept (`Last-Event-ID`, `cursor`), as a browser on a flaky network does. It
stops once it holds the room's last message (named in the config's `final_path` file when the posters
are done) and writes every message id it kept, in order, to `result_path`: the orchestrator compares
them with the room's history (no loss, no repeat, in order). Prints `{"type": "ready"}` once every
subscriber has connected once, and `{"type": "final"}` at the end.
"""
from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from urllib.parse import quote  # noqa: E402

import gevent  # noqa: E402


def event_key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


class Subscriber:
    def __init__(self, config: dict, index: int, shared: dict):
        self.config, self.shared = config, shared
        self.slug = config["rooms"][index % len(config["rooms"])]
        self.transport = "sse" if index % 2 == 0 else "poll"
        self.cookie = config["cookies"][index // config["per_account"]]
        self.cursor = config["starts"][self.slug]
        self.start = self.cursor
        self.random = random.Random(index)
        self.ids, self.statuses, self.errors = [], Counter(), Counter()
        self.sessions = self.resets = 0
        self.connected_once = False

    def done(self) -> bool:
        final = self.shared.get("final")
        return final is not None and event_key(self.cursor) >= event_key(final[self.slug])

    def run(self) -> None:
        low, high = self.config["session_seconds"]
        while not self.done() and time.monotonic() < self.config["hard_deadline"]:
            self.sessions += 1
            connection = http.client.HTTPConnection(self.config["host"], self.config["port"], timeout=60)
            try:
                with gevent.Timeout(self.random.uniform(low, high), False):  # hang up at a random moment
                    (self.follow_stream if self.transport == "sse" else self.follow_polls)(connection)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self.errors[type(error).__name__] += 1
                if sum(self.errors.values()) == 1:  # the first of each subscriber, for the run's stderr file
                    traceback.print_exc()
            finally:
                connection.close()
            if not self.done():
                gevent.sleep(self.random.uniform(0, self.config["pause_seconds"]))

    def _get(self, connection, path: str, headers: dict):
        connection.request("GET", path, headers={"Cookie": f"chat_session={self.cookie}", **headers})
        self.connected_once = True
        response = connection.getresponse()
        self.statuses[str(response.status)] += 1
        if response.status != 200:
            response.read()
            gevent.sleep(float(response.getheader("Retry-After") or 1))
            return None
        return response

    def follow_stream(self, connection) -> None:
        response = self._get(connection, f"/api/rooms/{self.slug}/events",
                             {"Accept": "text/event-stream", "Last-Event-ID": self.cursor})
        fields, data = {}, []
        while response is not None and not self.done():
            line = response.readline()
            if not line:
                return  # the server ended the stream: resume
            line = line.decode("utf-8").rstrip("\r\n")
            if line:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name in ("event", "id"):
                    fields[name] = value
                continue
            if data or fields:  # a blank line after a comment or `retry:` dispatches nothing (HTML standard)
                self.take(fields.get("event", "message"), fields.get("id"), "\n".join(data))
            fields, data = {}, []

    def follow_polls(self, connection) -> None:
        while not self.done():
            response = self._get(connection, f"/api/rooms/{self.slug}/poll?cursor={quote(self.cursor)}&timeout=10", {})
            if response is None:
                return
            answer = json.loads(response.read())
            for event in answer["events"]:
                self.take(event["event"], event["id"], event["data"])
            self.cursor = answer["cursor"]

    def take(self, name: str, event_id: str | None, data) -> None:
        if name == "reset":
            self.resets += 1  # no reset is expected: resumes stay well within CHAT_RESUME_MAX_EVENTS
        if name == "message":
            message = json.loads(data) if isinstance(data, str) else data
            self.ids.append(message["id"])
        if event_id:
            self.cursor = event_id

    def summary(self) -> dict:
        return {"slug": self.slug, "transport": self.transport, "start": self.start, "ids": self.ids,
                "sessions": self.sessions, "resets": self.resets, "statuses": dict(self.statuses),
                "errors": dict(self.errors)}


def main() -> None:
    config = json.loads(open(sys.argv[1]).read())
    shared = {}
    subscribers = [Subscriber(config, index, shared) for index in range(config["count"])]
    greenlets = []
    for subscriber in subscribers:  # connect in a ramp, not all in one instant
        greenlets.append(gevent.spawn(subscriber.run))
        gevent.sleep(config["ramp_seconds"] / len(subscribers))
    while not all(s.connected_once for s in subscribers) and time.monotonic() < config["hard_deadline"]:
        gevent.sleep(0.2)
    print(json.dumps({"type": "ready", "connected": sum(s.connected_once for s in subscribers)}), flush=True)
    while not os.path.exists(config["final_path"]):  # written once the posters stop
        gevent.sleep(0.2)
    shared["final"] = json.loads(open(config["final_path"]).read())
    # Every subscriber is at most a hang-up's pause and a resume away from the last message.
    gevent.joinall(greenlets, timeout=config["catch_up_seconds"])
    with open(config["result_path"], "w") as f:
        json.dump([subscriber.summary() for subscriber in subscribers], f)
    print(json.dumps({"type": "final", "unfinished": sum(1 for g in greenlets if not g.dead)}), flush=True)


if __name__ == "__main__":
    main()
