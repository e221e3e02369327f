"""The long-polling fast lane: a WSGI middleware that answers the poll endpoints from the hub's memory
before Flask's request handling, the way Discourse's message_bus answers its polls in a Rack
middleware ahead of Rails. Polls are the most frequent request a corporate office sends (a buffering
proxy puts every desk on them), and for them Flask's routing, context and hooks cost more than the
answer itself.

It answers only what the view would answer the same way (live.poll_from_memory); everything else
goes on to Flask untouched.
"""
import re
import time

from . import live, metrics
from .http import send_lane_answer

_ROOM_POLL = re.compile(r"/api/rooms/([a-z0-9-]{1,64})/poll\Z")
_FEED_POLL = "/api/poll"


class PollFastLane:
    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            path = environ.get("PATH_INFO", "")
            room_poll = _ROOM_POLL.match(path)
            if room_poll or path == _FEED_POLL:
                started = time.perf_counter()
                with self.app.app_context():
                    response = live.poll_from_memory(environ, room_poll[1] if room_poll else None, self.app.config)
                if response is not None:
                    metrics.observe_request("live.room_poll" if room_poll else "live.feed_poll", started)
                    return send_lane_answer(response, environ, start_response)
        return self.wsgi_app(environ, start_response)
