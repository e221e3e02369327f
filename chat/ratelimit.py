"""The posts' rate limits, taken for the writer's whole group in one Redis round trip.

A post let through by memory (caches.PostCache) takes its allowance here, as the writer gathers it with the
posts that arrived with it (writer.py), instead of one round trip per request: the same script, windows and
answers as Streams.post_allowed, for the whole group (Streams.posts_allowed).
"""
from flask import current_app

from . import streams


def take_post_allowances(posts: list[tuple[int, int, int]]) -> list[int]:
    """For each post `(user_id, room_id, nbytes)`, in order: 0 if the three windows took it, else the seconds
    until the first that refuses it frees up (and nothing was counted for it), as Streams.post_allowed."""
    config = current_app.config
    return streams.current().posts_allowed(posts, config["CHAT_RATE_LIMIT_PARSED"],
                                           config["CHAT_USER_RATE_LIMIT_PARSED"], config["CHAT_USER_BYTES_LIMIT_PARSED"])


def give_back(user_id: int, room_id: int, nbytes: int) -> None:
    """Uncount a post whose allowance was taken but that was not recorded as a new message."""
    streams.current().post_give_back(user_id, room_id, nbytes)
