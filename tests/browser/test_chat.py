"""The chat page in a real Chromium: conversation, sending states, history, safety and rejections."""
import re
import time

from playwright.sync_api import expect

from tests.browser.helpers import (bodies, expect_live, id_key, ids, message_with, messages, scroll_metrics, send,
                                   until)


def test_two_people_chat_both_ways_at_once_in_order(people, artifacts):
    alice, bob = people(2)
    slug = alice.http.create_room("Tea and biscuits")
    a, b = alice.open_room(slug), bob.open_room(slug)
    expect(a.get_by_test_id("online-list")).to_contain_text(bob.username)
    expect(b.get_by_test_id("online-list")).to_contain_text(alice.username)

    send(a, "Hello Bob, kettle's on")
    # "Instant": well inside a second or two, with no reload.
    expect(message_with(b, "Hello Bob, kettle's on")).to_have_count(1, timeout=2_000)
    sender = message_with(b, "Hello Bob, kettle's on").locator(".message-sender")
    expect(sender).to_have_text(alice.username)
    expect(message_with(b, "Hello Bob, kettle's on").locator("time")).to_have_text(re.compile(r"\d{1,2}[:.]\d{2}"))
    # Screen readers hear it through the live region.
    expect(b.locator("[aria-live=polite][data-role=announcer]")).to_contain_text(f"{alice.username}: Hello Bob")

    composer = b.locator("textarea[name=body]")
    composer.fill("Lovely!")
    composer.press("Shift+Enter")  # a new line, not a send
    composer.type("Two sugars please")
    expect(message_with(a, "Lovely!")).to_have_count(0)
    composer.press("Enter")
    expect(messages(a)).to_have_count(2, timeout=2_000)
    assert bodies(a)[1] == "Lovely!\nTwo sugars please"
    expect(b.locator("textarea[name=body]")).to_have_value("")

    # A quick back-and-forth: both pages show every message once, in the stream's order.
    for turn in range(4):
        send(a, f"alice {turn}")
        send(b, f"bob {turn}")
    expect(messages(a)).to_have_count(10)
    expect(messages(b)).to_have_count(10)
    expect(a.locator("[data-testid=message][data-state=pending]")).to_have_count(0)
    expect(b.locator("[data-testid=message][data-state=pending]")).to_have_count(0)
    for page in (a, b):
        shown = ids(page)
        assert None not in shown and len(set(shown)) == 10
        assert shown == sorted(shown, key=id_key)
    assert ids(a) == ids(b) and bodies(a) == bodies(b)
    history = alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]
    assert [message["id"] for message in history] == ids(a)

    b.set_viewport_size({"width": 1100, "height": 640})
    b.screenshot(path=str(artifacts / "chat.png"))


def test_a_message_is_pending_then_sent_once_whichever_confirmation_comes_first(people):
    alice = people()
    slug = alice.http.create_room()
    page = alice.open_room(slug)
    held = []

    def hold_answer(route):
        if route.request.method != "POST":
            return route.continue_()
        held.append((route, route.fetch()))  # the server has it (and broadcasts it); the answer waits

    page.route(re.compile(r".*/api/rooms/[^/]+/messages$"), hold_answer)
    send(page, "confirmed by my own event")
    mine = message_with(page, "confirmed by my own event")
    # The event arrives while the POST's answer is held back: sent by the event, shown once.
    expect(mine).to_have_attribute("data-state", "sent")
    expect(mine).to_have_attribute("data-id", re.compile(r"^\d+-\d+$"))
    until(page, lambda: held)  # the handler's fetch may still be returning when the event has arrived
    route, response = held.pop()
    route.fulfill(response=response)
    page.unroute(re.compile(r".*/api/rooms/[^/]+/messages$"))

    # Now hold the request itself: the message shows at once as pending, then sent by the answer.
    requests = []
    page.route(re.compile(r".*/api/rooms/[^/]+/messages$"),
               lambda route: requests.append(route) if route.request.method == "POST" else route.continue_())
    send(page, "confirmed by the answer")
    pending = message_with(page, "confirmed by the answer")
    expect(pending).to_have_attribute("data-state", "pending")
    expect(pending).not_to_have_attribute("data-id", re.compile(".+"))
    until(page, lambda: requests)
    requests.pop().continue_()
    expect(pending).to_have_attribute("data-state", "sent")
    page.unroute(re.compile(r".*/api/rooms/[^/]+/messages$"))
    expect(messages(page)).to_have_count(2)
    assert len(set(ids(page))) == 2
    stored = alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]
    assert [m["body"] for m in stored] == ["confirmed by my own event", "confirmed by the answer"]


def test_a_failed_send_offers_retry_with_the_same_client_id(people):
    alice = people()
    slug = alice.http.create_room()
    page = alice.open_room(slug)
    client_ids = []

    def fail_once(route):
        if route.request.method != "POST":
            return route.continue_()
        client_ids.append(route.request.post_data_json["client_id"])
        if len(client_ids) == 1:
            return route.abort("connectionreset")
        return route.continue_()

    page.route(re.compile(r".*/api/rooms/[^/]+/messages$"), fail_once)
    started = time.monotonic()
    send(page, "first try fails")
    failed = message_with(page, "first try fails")
    expect(failed).to_have_attribute("data-state", "failed", timeout=10_000)
    assert time.monotonic() - started < 10
    expect(page.get_by_test_id("composer-feedback")).to_contain_text("Retry")
    failed.get_by_test_id("retry").click()
    expect(failed).to_have_attribute("data-state", "sent")
    expect(failed.get_by_test_id("retry")).to_have_count(0)
    assert len(client_ids) == 2 and client_ids[0] == client_ids[1]
    stored = alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]
    assert [(m["body"], m["client_id"]) for m in stored] == [("first try fails", client_ids[0])]
    expect(messages(page)).to_have_count(1)


def test_history_at_once_older_on_scroll_and_new_arrivals_never_yank_the_reader(people, live):
    alice = people()
    slug = alice.http.create_room("Long history")
    # 60 messages from 6 posters (the rate limit is per user and room).
    posters = [live.user() for _ in range(6)]
    for number in range(1, 61):
        response = posters[(number - 1) // 10].send(slug, f"history {number:02d}")
        assert response.status_code == 201, response.text
    page = alice.open_room(slug)
    expect(messages(page)).to_have_count(50)
    shown = bodies(page)
    assert shown[0] == "history 11" and shown[-1] == "history 60"
    expect(message_with(page, "history 60")).to_be_in_viewport()
    expect(page.get_by_test_id("load-older")).to_be_visible()

    # Scrolling up loads the older ones above, keeping the reader's place.
    page.locator("[data-role=scroller]").evaluate("el => el.scrollTo(0, 0)")
    expect(messages(page)).to_have_count(60)
    expect(message_with(page, "history 11")).to_be_in_viewport()  # still where the reader was looking
    assert bodies(page) == [f"history {number:02d}" for number in range(1, 61)]
    assert ids(page) == sorted(ids(page), key=id_key)
    expect(page.get_by_text("This is the start of Long history.")).to_be_visible()
    expect(page.get_by_test_id("load-older")).to_be_hidden()

    # Reading old messages: a new arrival below does not move the view; a divider and a counter appear.
    message_with(page, "history 05").scroll_into_view_if_needed()
    before = scroll_metrics(page)
    assert before["height"] - before["top"] - before["client"] > 200
    latecomer = live.user()  # the posters have used up their rate limit
    assert latecomer.send(slug, "a new one while you read").status_code == 201
    jump = page.get_by_test_id("jump-to-latest")
    expect(jump).to_be_visible()
    expect(jump).to_contain_text("1")
    divider = page.get_by_test_id("new-messages-divider")
    expect(divider).to_have_count(1)
    assert divider.evaluate("el => el.nextElementSibling.textContent.includes('a new one while you read')")
    assert scroll_metrics(page)["top"] == before["top"]
    expect(message_with(page, "history 05")).to_be_in_viewport()
    assert latecomer.send(slug, "and another").status_code == 201
    expect(jump).to_contain_text("2")
    jump.click()
    expect(message_with(page, "and another")).to_be_in_viewport()
    expect(jump).to_be_hidden()
    expect(page.locator("textarea[name=body]")).to_be_focused()


def test_message_text_is_shown_as_text_and_never_runs(people):
    alice, bob = people(2)
    slug = alice.http.create_room()
    payloads = ['<img src=x onerror="window.__pwned = 1; alert(1)">',
                '<script>window.__pwned = 2</script><b>bold?</b>',
                '"><svg onload="window.__pwned=3">']
    for payload in payloads[:2]:
        assert alice.http.send(slug, payload).status_code == 201
    dialogs = []
    page = bob.page
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    bob.open_room(slug)
    send(page, payloads[2])  # also live, through the page's own composer
    expect(messages(page)).to_have_count(3)
    assert bodies(page) == payloads
    message_list = page.get_by_test_id("message-list")
    assert message_list.locator("img, script, b, svg").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []


def test_the_moderator_feed_opens_with_recent_messages_then_goes_live(people, promote):
    moderator, alice = people(2)
    promote(moderator.username)
    garden, kitchen = alice.http.create_room("Garden"), alice.http.create_room("Kitchen")
    assert alice.http.send(garden, "posted before the dashboard opened").status_code == 201
    assert alice.http.send(kitchen, "also earlier, elsewhere").status_code == 201
    page = moderator.page
    page.goto("/moderate")
    expect_live(page)
    feed = page.get_by_test_id("mod-feed").get_by_test_id("message")
    expect(feed).to_have_count(2)
    assert alice.http.send(garden, "and one live").status_code == 201
    expect(feed).to_have_count(3)
    expect(feed.nth(0)).to_have_attribute("data-room", garden)
    expect(feed.nth(1)).to_have_attribute("data-room", kitchen)
    expect(feed.nth(2)).to_contain_text("and one live")


def test_deleted_messages_vanish_live_and_the_moderator_feed_sees_every_room(people, promote, artifacts):
    moderator, alice = people(2)
    promote(moderator.username)
    slug = alice.http.create_room("Garden")
    other = alice.http.create_room("Kitchen")
    feed_page = moderator.page
    feed_page.goto("/moderate")
    expect_live(feed_page)
    chat = alice.open_room(slug)

    send(chat, "buy cheap pills here")
    alice.http.send(other, "dinner at eight")
    feed = feed_page.get_by_test_id("mod-feed")
    spam = feed.get_by_test_id("message").filter(has_text="buy cheap pills here")
    expect(spam).to_have_attribute("data-room", slug)
    expect(feed.get_by_test_id("message").filter(has_text="dinner at eight")).to_have_attribute("data-room", other)
    feed_page.set_viewport_size({"width": 1200, "height": 760})
    feed_page.screenshot(path=str(artifacts / "moderate.png"))

    spam.get_by_test_id("delete").click()
    expect(message_with(chat, "buy cheap pills here")).to_have_count(0)
    expect(spam).to_have_count(0)
    expect(feed).to_contain_text("deleted by " + moderator.username)
    stored = alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]
    assert stored[0]["deleted"] is True

    # The dashboard's simple controls.
    mute = feed_page.locator("[data-role=mute-form]")
    mute.get_by_label("Room").select_option(slug)
    mute.get_by_label("Username").fill(alice.username)
    mute.get_by_label("Minutes").fill("15")
    mute.get_by_test_id("mute").click()
    expect(chat.get_by_test_id("message-list")).to_contain_text(f"{alice.username} was muted by {moderator.username}")
    lock = feed_page.locator("[data-role=lock-form]")
    lock.get_by_label("Room").select_option(slug)
    lock.get_by_test_id("lock").click()
    expect(chat.get_by_test_id("message-list")).to_contain_text("The room was locked")
    expect(feed_page.locator("[data-role=action-log]")).to_contain_text("lock")

    feed_page.get_by_test_id("logout").click()
    expect(feed_page).to_have_url(re.compile(r"/$"))
    expect(feed_page.get_by_test_id("login")).to_be_visible()


def test_a_503_is_sent_again_by_the_page_with_the_same_client_id(people):
    """The server answered 503 (or its answer was lost): the page posts again by itself, after Retry-After,
    with the same client_id, also when the message's own event already showed it; one message results.
    The 503s here stand for a proxy or a server that failed after the commit: the first is a real post
    whose answer is replaced, the second never reaches the server."""
    alice = people()
    slug = alice.http.create_room()
    page = alice.open_room(slug)
    posts = []
    unavailable = {"status": 503, "headers": {"Retry-After": "1", "Content-Type": "application/json"},
                   "body": '{"error": {"code": "unavailable", "message": "try again"}}'}

    def answer(route):
        if route.request.method != "POST":
            return route.continue_()
        posts.append(route.request.post_data_json)
        if len(posts) == 1:
            route.fetch()  # the server records and broadcasts it; the page is told 503
            return route.fulfill(**unavailable)
        if len(posts) == 2:
            return route.fulfill(**unavailable)
        return route.continue_()

    page.route(re.compile(r".*/api/rooms/[^/]+/messages$"), answer)
    send(page, "sent through a flaky proxy")
    mine = message_with(page, "sent through a flaky proxy")
    expect(mine).to_have_attribute("data-state", "sent")  # by its own event, while the page posts again
    until(page, lambda: len(posts) == 3, timeout=15)
    expect(mine).to_have_attribute("data-state", "sent")
    expect(mine.get_by_test_id("retry")).to_have_count(0)
    assert len({post["client_id"] for post in posts}) == 1 and {post["body"] for post in posts} == \
        {"sent through a flaky proxy"}
    stored = alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]
    assert [(m["body"], m["client_id"]) for m in stored] == [("sent through a flaky proxy", posts[0]["client_id"])]
    expect(messages(page)).to_have_count(1)

    # Before the server has it at all: pending through the 503, then sent by the retry.
    posts.clear()
    page.unroute(re.compile(r".*/api/rooms/[^/]+/messages$"))
    page.route(re.compile(r".*/api/rooms/[^/]+/messages$"),
               lambda route: (posts.append(route.request.post_data_json), route.fulfill(**unavailable)
                              if len(posts) == 1 else route.continue_()) if route.request.method == "POST"
               else route.continue_())
    send(page, "refused once")
    second = message_with(page, "refused once")
    expect(second).to_have_attribute("data-state", "pending")
    expect(second).to_have_attribute("data-state", "sent", timeout=10_000)
    assert len(posts) == 2 and posts[0]["client_id"] == posts[1]["client_id"]
    assert [m["body"] for m in alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]] == \
        ["sent through a flaky proxy", "refused once"]


def test_clear_feedback_for_each_rejection(people, promote):
    moderator, alice = people(2)
    promote(moderator.username)
    slug = alice.http.create_room()
    page = alice.open_room(slug)
    feedback = page.get_by_test_id("composer-feedback")

    send(page, "x" * 2001)  # too long: said at once, nothing sent, the text kept for editing
    expect(feedback).to_contain_text("too long")
    expect(messages(page)).to_have_count(0)
    expect(page.locator("textarea[name=body]")).to_have_value("x" * 2001)
    page.locator("textarea[name=body]").fill("")

    for _ in range(10):
        assert alice.http.send(slug, "filler").status_code == 201
    expect(messages(page)).to_have_count(10)
    send(page, "one too many")
    expect(message_with(page, "one too many")).to_have_attribute("data-state", "failed")
    expect(feedback).to_contain_text(re.compile(r"too fast\. Wait \d+ seconds?"))

    assert moderator.http.post(f"/api/rooms/{slug}/mutes", json={"username": alice.username, "minutes": 5}).status_code == 201
    expect(feedback).to_contain_text("You have been muted")
    expect(page.get_by_test_id("message-list")).to_contain_text(f"{alice.username} was muted by {moderator.username}")
    send(page, "can you hear me")  # refused on the page, which knows of the mute: nothing posted, the text kept
    expect(feedback).to_contain_text(f"You are muted by {moderator.username} until")
    expect(page.locator("textarea[name=body]")).to_have_value("can you hear me")
    expect(message_with(page, "can you hear me")).to_have_count(0)
    page.locator("textarea[name=body]").fill("")
    assert moderator.http.delete(f"/api/rooms/{slug}/mutes/{alice.username}").status_code == 204

    assert moderator.http.post(f"/api/rooms/{slug}/lock").status_code == 200
    expect(page.get_by_text("locked", exact=True)).to_be_visible()
    send(page, "knock knock")
    expect(message_with(page, "knock knock")).to_have_attribute("data-state", "failed")
    expect(feedback).to_contain_text("locked")

    # A ban ends the stream; the page says why instead of reconnecting forever.
    assert moderator.http.post("/api/bans", json={"username": alice.username}).status_code == 201
    expect(page.get_by_role("alert").filter(has_text="banned")).to_be_visible()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "offline")
    expect(page.get_by_test_id("connection-status")).to_contain_text("banned")
