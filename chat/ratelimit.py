"""The posts' rate limits, taken for the writer's whole group in one Redis round trip.

A post let through by memory (caches.PostCache) takes its allowance here, as the writer gathers it with the
posts that arrived with it (writer.py), instead of one round trip per request: the same script as
Streams.post_allowed, the same windows and answers, in one pipeline. The script is called by its hash alone
(no SCRIPT EXISTS round trip per pipeline, which redis-py adds for Script objects); a Redis that does not
know it (restarted, flushed) gets the calls that failed again one by one, which load it.
"""
from flask import current_app
from redis.exceptions import NoScriptError

from . import streams


def take_post_allowances(posts: list[tuple[int, int, int]]) -> list[int]:
    """For each post `(user_id, room_id, nbytes)`, in order: 0 if the three windows took it, else the seconds
    until the first that refuses it frees up (and nothing was counted for it), as Streams.post_allowed."""
    config, room_streams = current_app.config, streams.current()
    windows = (config["CHAT_RATE_LIMIT_PARSED"], config["CHAT_USER_RATE_LIMIT_PARSED"],
               config["CHAT_USER_BYTES_LIMIT_PARSED"])
    if len(posts) == 1:
        return [room_streams.post_allowed(*posts[0], *windows)]
    # The script and its keys are the streams module's (it owns every key name and script); only the
    # round trip is gathered here.
    sha, pipe = room_streams._post_allowance.sha, room_streams.redis.pipeline(transaction=False)
    per_room, per_user, bytes_per_user = windows
    for user_id, room_id, nbytes in posts:
        pipe.evalsha(sha, 3, *room_streams._post_keys(user_id, room_id), *per_room, 1, *per_user, 1,
                     *bytes_per_user, nbytes)
    answers = pipe.execute(raise_on_error=False)
    for index, answer in enumerate(answers):
        if isinstance(answer, NoScriptError):
            answers[index] = room_streams.post_allowed(*posts[index], *windows)
        elif isinstance(answer, Exception):
            raise answer
    return [int(answer) for answer in answers]


def give_back(user_id: int, room_id: int, nbytes: int) -> None:
    """Uncount a post whose allowance was taken but that was not recorded as a new message."""
    streams.current().post_give_back(user_id, room_id, nbytes)
