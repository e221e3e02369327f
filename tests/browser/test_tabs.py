"""Many tabs of one browser: one shared live connection, hand-over when the leading tab closes, the rooms
sidebar with unread counts and mentions, the per-tab fallback without Web Locks, and polling when the
server refuses streams."""
import re
import threading

import pytest

from playwright.sync_api import expect

from tests.browser.helpers import bodies, expect_live, id_key, ids, message_with, messages, send, until
from tests.support import LiveServer, SSEClient

FEED = re.compile(r"/api/events\?")
ROOM_STREAM = re.compile(r"/api/rooms/[^/]+/events")


class StreamWatch:
    """Which event streams a browser context has open now: started and neither finished nor failed."""

    def __init__(self, context):
        self.started = []
        self.ended = set()
        context.on("request", lambda request: self.started.append(request)
                   if FEED.search(request.url) or ROOM_STREAM.search(request.url) else None)
        # Keep the objects themselves: an id() of a collected one can come back for a new request.
        context.on("requestfinished", lambda request: self.ended.add(request))
        context.on("requestfailed", lambda request: self.ended.add(request))

    def open(self, pattern=None):
        return [request.url for request in self.started
                if request not in self.ended and request.method == "GET"
                and (pattern is None or pattern.search(request.url))]


def live_role(page) -> str:
    return page.evaluate("() => document.documentElement.dataset.live")


def test_nine_tabs_share_one_feed_and_each_shows_its_own_room(people, live):
    alice = people()
    bob = live.user()
    watch = StreamWatch(alice.context)
    slugs = [alice.http.create_room() for _ in range(9)]
    pages = [alice.page] + [alice.new_page() for _ in range(8)]
    for page, slug in zip(pages, slugs):
        alice.open_room(slug, page=page)
    for page in pages:  # the first tabs are still live after the later ones joined
        expect_live(page)
    assert live_role(pages[0]) == "leader"
    assert [live_role(page) for page in pages[1:]] == ["follower"] * 8

    # The whole browser holds one stream: the feed, listing all nine rooms (the leader replans a moment
    # after each tab joins).
    def listed(url):
        return sorted(re.search(r"rooms=([^&]+)", url).group(1).replace("%2C", ",").split(","))

    until(pages[0], lambda: len(watch.open()) == 1 and listed(watch.open()[0]) == sorted(slugs))
    assert FEED.search(watch.open()[0]) and watch.open(ROOM_STREAM) == []
    assert not any(ROOM_STREAM.search(request.url) for request in watch.started)

    send(pages[8], "from the ninth tab")
    expect(message_with(pages[8], "from the ninth tab")).to_have_attribute("data-state", "sent")
    assert bob.send(slugs[4], "for room five only").status_code == 201
    expect(message_with(pages[4], "for room five only")).to_have_count(1)
    for number, page in enumerate(pages):
        expected = {4: ["for room five only"], 8: ["from the ninth tab"]}.get(number, [])
        expect(messages(page)).to_have_count(len(expected))
        assert bodies(page) == expected
    expect(pages[4].get_by_test_id("online-list")).to_contain_text(alice.username)


@pytest.mark.parametrize("leaving", ["closes", "vanishes"])
def test_closing_the_leading_tab_hands_over_without_losing_or_repeating(people, live, leaving):
    """`vanishes`: the leader's last words (`bye`, with its position) never arrive, as after a crash;
    the next tab waits a moment, then resumes from the last feed id it saw itself."""
    alice = people()
    posters = [live.user(), live.user()]
    rooms = [alice.http.create_room() for _ in range(3)]
    pages = [alice.page, alice.new_page(), alice.new_page()]
    for page, slug in zip(pages, rooms):
        alice.open_room(slug, page=page)
    assert live_role(pages[0]) == "leader"
    for page in pages[1:]:
        expect_live(page)

    sent = {slug: [] for slug in rooms[1:]}

    def burst(label, turns):
        for turn in range(turns):
            for poster_number, poster in enumerate(posters):
                for slug in rooms[1:]:
                    body = f"{label} {turn} from {poster_number}"
                    assert poster.send(slug, body).status_code == 201
                    sent[slug].append(body)

    # The leader goes mid-burst; the next tab's feed request is then held while more is posted, so that
    # only a resume from the last feed id the tabs saw can bring those messages.
    held = []
    alice.context.route(FEED, lambda route: held.append(route))
    posting = threading.Thread(target=burst, args=("during", 4))
    posting.start()
    until(pages[1], lambda: len(sent[rooms[1]]) >= 2)
    if leaving == "vanishes":
        pages[0].evaluate("""() => {
            const post = BroadcastChannel.prototype.postMessage;
            BroadcastChannel.prototype.postMessage = function (message) {
                if (message?.type !== 'bye') post.call(this, message);
            };
        }""")
    pages[0].close()
    posting.join(60)
    assert not posting.is_alive()
    until(pages[1], lambda: held)
    burst("meanwhile", 2)
    for route in held:
        route.continue_()
    alice.context.unroute(FEED)
    until(pages[1], lambda: "leader" in (live_role(pages[1]), live_role(pages[2])))
    for page, slug in zip(pages[1:], rooms[1:]):
        expect(messages(page)).to_have_count(len(sent[slug]), timeout=15_000)
        history = alice.http.get(f"/api/rooms/{slug}/messages", params={"limit": 100}).json()["messages"]
        assert ids(page) == [message["id"] for message in history]  # each once, in the room's order
        assert ids(page) == sorted(ids(page), key=id_key)
        assert sorted(bodies(page)) == sorted(sent[slug])
        expect_live(page)

    # And the new leader keeps the feed going.
    assert posters[0].send(rooms[2], "after the hand-over").status_code == 201
    expect(message_with(pages[2], "after the hand-over")).to_have_count(1)


def test_unread_counts_and_mentions_in_the_sidebar(people, live, artifacts):
    alice = people(viewport={"width": 1200, "height": 720})
    bob = live.user()
    garden, kitchen, hall = (alice.http.create_room(name) for name in ("Garden", "Kitchen", "Hall"))
    page = alice.page
    for slug in (kitchen, garden, hall):  # opened in this browser: the sidebar's recent rooms
        alice.open_room(slug)
    sidebar = page.get_by_test_id("recent-rooms")
    link = lambda slug: sidebar.locator(f"[data-testid=room-link][data-room={slug}]")  # noqa: E731
    expect(link(hall)).to_have_attribute("aria-current", "page")
    expect(link(garden).get_by_test_id("unread-count")).to_be_hidden()

    assert bob.send(garden, "the roses are out").status_code == 201
    assert bob.send(garden, "and the tulips").status_code == 201
    expect(link(garden).get_by_test_id("unread-count")).to_have_text("2")
    expect(link(garden).get_by_test_id("mention-mark")).to_be_hidden()
    assert bob.send(kitchen, f"@{alice.username.upper()} the kettle is on").status_code == 201
    expect(link(kitchen).get_by_test_id("unread-count")).to_have_text("1")
    expect(link(kitchen).get_by_test_id("mention-mark")).to_be_visible()
    assert bob.send(kitchen, f"not a mention: {alice.username}, nor x@{alice.username}").status_code == 201
    expect(link(kitchen).get_by_test_id("unread-count")).to_have_text("2")
    expect(page).to_have_title(re.compile(r"^\(4\) Hall · Chat$"))
    # In the room shown, a mention is marked in the message itself, as text.
    assert bob.send(hall, f"welcome @{alice.username}!").status_code == 201
    mention = message_with(page, f"welcome @{alice.username}!").locator("mark[data-testid=mention]")
    expect(mention).to_have_text(f"@{alice.username}")
    expect(link(hall).get_by_test_id("unread-count")).to_be_hidden()  # looked at while shown
    page.screenshot(path=str(artifacts / "chat-sidebar.png"))

    # Opening a room resets its count, in this tab and in the others of this browser.
    other_tab = alice.new_page()
    alice.open_room(hall, page=other_tab)
    expect(other_tab.get_by_test_id("recent-rooms").locator(f"[data-room={garden}]")
           .get_by_test_id("unread-count")).to_have_text("2")
    link(garden).click()
    expect(page).to_have_url(re.compile(f"/rooms/{garden}$"))
    expect_live(page)
    expect(messages(page)).to_have_count(2)
    expect(link(garden).get_by_test_id("unread-count")).to_be_hidden()
    expect(link(kitchen).get_by_test_id("unread-count")).to_have_text("2")
    expect(other_tab.get_by_test_id("recent-rooms").locator(f"[data-room={garden}]")
           .get_by_test_id("unread-count")).to_be_hidden()
    expect(page).to_have_title(re.compile(r"^\(2\) Garden · Chat$"))

    # The rooms page shows the same sidebar, live.
    other_tab.goto("/")
    rooms_sidebar = other_tab.get_by_test_id("recent-rooms")
    expect(rooms_sidebar.locator(f"[data-room={kitchen}]").get_by_test_id("unread-count")).to_have_text("2")
    assert bob.send(hall, "anyone in the hall?").status_code == 201
    expect(rooms_sidebar.locator(f"[data-room={hall}]").get_by_test_id("unread-count")).to_have_text("1")


def test_without_web_locks_each_tab_keeps_its_own_stream(people, live):
    alice = people(share_tabs=False)
    bob = live.user()
    watch = StreamWatch(alice.context)
    first, second = alice.http.create_room(), alice.http.create_room()
    pages = [alice.open_room(first), alice.open_room(second, page=alice.new_page())]
    assert [live_role(page) for page in pages] == ["tab", "tab"]
    until(pages[0], lambda: len(watch.open(ROOM_STREAM)) == 2)
    assert watch.open(FEED) == []
    assert bob.send(second, "to the second tab").status_code == 201
    expect(message_with(pages[1], "to the second tab")).to_have_count(1)
    send(pages[0], "from the first tab")
    expect(message_with(pages[0], "from the first tab")).to_have_attribute("data-state", "sent")
    expect(messages(pages[0])).to_have_count(1)
    expect(messages(pages[1])).to_have_count(1)


def test_when_the_server_refuses_streams_the_page_polls(people, live, services):
    """503 for every stream (CHAT_MAX_STREAMS_PER_PROCESS=0): EventSource cannot see the status; the page asks
    with HEAD, and polls after Retry-After instead of retrying the stream forever."""
    server = LiveServer(services, workers=1, CHAT_MAX_STREAMS_PER_PROCESS=0)
    server.start()
    try:
        alice = people(base_url=server.url)
        bob = live.user()
        heads = []
        alice.context.on("request", lambda request: heads.append(request.url) if request.method == "HEAD" else None)
        slug = alice.http.create_room()
        page = alice.page
        page.goto(f"/rooms/{slug}")
        expect_live(page, "poll", timeout=20_000)
        expect(page.get_by_test_id("connection-status")).to_contain_text("server is busy")
        assert any(FEED.search(url) for url in heads)
        assert bob.send(slug, "heard through polling").status_code == 201
        expect(message_with(page, "heard through polling")).to_have_count(1)
        send(page, "and sent while polling")
        expect(message_with(page, "and sent while polling")).to_have_attribute("data-state", "sent")
        # Not remembered as a buffering proxy: the next visit tries streaming again.
        assert page.evaluate("() => localStorage.getItem('chat.transport.poll-until')") is None
    finally:
        server.stop()


def test_a_remembered_room_that_no_longer_exists_is_left_out_of_the_feed(people, live):
    """The feed answers 404 for the whole list when one room is unknown (a room remembered by this browser
    from another database, or removed): the leader finds which, leaves it out, and goes live."""
    alice = people()
    bob = live.user()
    slug = alice.http.create_room()
    memory = f"chat.rooms.{alice.http.user['id']}"
    alice.context.add_init_script(
        f"localStorage.setItem('{memory}', JSON.stringify({{recent: ['gone-room-{slug}'], seen: {{}}}}))")
    refused = []
    alice.context.on("response", lambda response: refused.append(response.status)
                     if FEED.search(response.url) and response.status == 404 else None)
    page = alice.open_room(slug)
    assert refused  # the first list was refused
    assert bob.send(slug, "still live").status_code == 201
    expect(message_with(page, "still live")).to_have_count(1)
    expect(page.get_by_test_id("recent-rooms").locator(f"[data-room=gone-room-{slug}]")).to_have_count(0)


def test_a_ban_reaches_every_tab_through_the_leader(people, promote):
    moderator, alice = people(2)
    promote(moderator.username)
    first, second = alice.http.create_room(), alice.http.create_room()
    pages = [alice.open_room(first), alice.open_room(second, page=alice.new_page())]
    assert [live_role(page) for page in pages] == ["leader", "follower"]
    assert moderator.http.post("/api/bans", json={"username": alice.username}).status_code == 201
    for page in pages:
        status = page.get_by_test_id("connection-status")
        expect(status).to_have_attribute("data-state", "offline")
        expect(status).to_contain_text("banned")
        expect(page.get_by_role("alert").filter(has_text="banned")).to_be_visible()


def test_past_the_users_stream_limit_the_page_waits_then_polls(people, live, services):
    """429 too_many_streams (CHAT_MAX_STREAMS_PER_USER=1, held by another client of the same user): the page
    neither hammers the stream nor claims to be live; once the other client hangs up, it polls."""
    server = LiveServer(services, workers=1, CHAT_MAX_STREAMS_PER_USER=1, CHAT_HEARTBEAT_SECONDS=1)
    server.start()
    try:
        alice = people(base_url=server.url)
        bob = live.user()
        slug = alice.http.create_room()
        held = []

        def hold_the_one_place():
            # Places are counted across processes through Redis: once in a full run this first stream was
            # itself refused (429, not reproduced since), so take the place as soon as it is given.
            client = SSEClient(alice.http.http, f"{server.url}/api/rooms/{slug}/events")
            if client.status == 200:
                held.append(client)
            else:
                client.response.close()
            return bool(held)

        until(alice.page, hold_the_one_place, timeout=10)
        elsewhere = held[0]
        streams = []
        alice.context.on("request", lambda request: streams.append(request.url)
                         if request.method == "GET" and FEED.search(request.url) else None)
        page = alice.page
        page.goto(f"/rooms/{slug}")
        status = page.get_by_test_id("connection-status")
        expect(status).to_have_attribute("data-transport", "poll")  # refused once, then it asks by polling
        expect(status).not_to_have_attribute("data-state", "live")
        assert len(streams) <= 3  # EventSource once (then the peek after HEAD), not a retry loop
        elsewhere.close()
        expect_live(page, "poll", timeout=15_000)
        expect(status).to_contain_text("server is busy")
        assert bob.send(slug, "through the freed place").status_code == 201
        expect(message_with(page, "through the freed place")).to_have_count(1)
    finally:
        server.stop()
