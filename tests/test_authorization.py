"""The authorization matrix: every /api/ route the app has (read from its URL map, so a new route is covered
the day it is added), called by each kind of caller, gets the answer API.md's check order promises:
anonymous 401, a banned account 403 banned, a user on a moderators' route 403 forbidden, anyone else past
the authorization checks (whatever the route then says about the request itself)."""
import re

import pytest

from tests.support import AuthActions, assert_error

PUBLIC = {"/api/auth/register", "/api/auth/login", "/api/openapi.json"}


def routes(app) -> list[tuple[str, str, str]]:
    """(method, rule, endpoint) of every /api/ route that needs a session."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and rule.rule not in PUBLIC:
            found += [(method, rule.rule, rule.endpoint) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def moderators_only(rule: str) -> bool:
    """API.md's "Moderation" rows that are for moderators (reporting a message is for everyone)."""
    return rule.startswith(("/api/moderation/", "/api/bans")) or \
        re.search(r"/(mutes|mutes/<[^>]+>|lock|unlock|slow_mode)$", rule) is not None


def path_for(rule: str, values: dict) -> str:
    """The rule with each `<name>` filled in from `values` (a real room, message, user), plus what a live
    endpoint needs to answer at once."""
    path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda match: str(values.get(match[1], 1)), rule)
    if path.endswith("/poll"):
        path += f"?timeout=0&rooms={values['slug']}"
    elif path.endswith("/events"):
        path += f"?rooms={values['slug']}"
    return path


@pytest.fixture
def world(app, make_client, make_moderator):
    """A moderator, a user with a message in a room, another user, a banned user and an anonymous client."""
    author, other, banned = make_client(), make_client(), make_client()
    for client in (author, other, banned):
        client.register()
    moderator = make_moderator()
    slug = author.create_room()
    message = author.send(slug, "the matrix").json["message"]
    assert moderator.ban(banned.username).status_code == 201
    values = {"slug": slug, "message_id": message["id"], "username": other.username}
    return {"anonymous": AuthActions(app.test_client()), "author": author, "other": other, "banned": banned,
            "moderator": moderator}, values


def answer(caller: AuthActions, method: str, path: str):
    """The route's answer to `caller` (with its CSRF token); a stream is asked with HEAD, which answers
    what a GET would without opening anything."""
    if method == "GET" and "/events" in path:
        method = "HEAD"
    response = caller.client.open(path, method=method, json={}, headers=caller.headers())
    response.close()
    return response


def refused(response, status: int, code: str) -> None:
    """The refusal, by status and (but for a HEAD, which has no body) code."""
    if response.request.method == "HEAD":
        assert response.status_code == status, (response.request.path, response.status_code)
    else:
        assert_error(response, status, code)


SIGNING_OUT = {"api.logout", "api.logout_all"}  # past the checks, these would end the caller's session


def test_every_route_answers_each_caller_as_the_check_order_says(app, world):
    callers, values = world
    checked = 0
    for method, rule, endpoint in routes(app):
        path = path_for(rule, values)
        refused(answer(callers["anonymous"], method, path), 401, "not_authenticated")
        refused(answer(callers["banned"], method, path), 403, "banned")
        for name in ("other", "author", "moderator"):
            forbidden = moderators_only(rule) and name != "moderator"
            forbidden |= endpoint == "api.delete_message" and name == "other"  # only its author or a moderator
            if endpoint in SIGNING_OUT and not forbidden:
                continue
            response = answer(callers[name], method, path)
            if forbidden:
                refused(response, 403, "forbidden")
            else:  # past authorization: what follows is about the request (404, 422, muted, locked...)
                code = (response.get_json(silent=True) or {}).get("error", {}).get("code")
                assert response.status_code != 401 and code not in ("forbidden", "banned", "csrf_failed"), \
                    (name, method, path, response.status_code, code)
        checked += 1
    assert checked >= 25, "the URL map lists every route"
