"""Reports in the browser: a user reports a message from the room page and it appears on an open dashboard at
once, in context; the moderator deletes it from the queue and it vanishes from the user's page."""
from playwright.sync_api import expect

from tests.browser.helpers import expect_live, message_with, send


def test_a_report_reaches_the_dashboard_live_and_its_deletion_reaches_the_room(people, promote, artifacts):
    moderator, alice, bob = people(3)
    promote(moderator.username)
    slug = alice.http.create_room("Harbour")
    for body in ("morning all", "anyone seen the ferry times?", "it leaves at nine"):
        assert alice.http.send(slug, body).status_code == 201
    assert bob.http.send(slug, "BUY CHEAP WATCHES at spam dot example").status_code == 201
    assert alice.http.send(slug, "ignore that").status_code == 201
    assert bob.http.send(slug, "last chance for cheap watches").status_code == 201

    dashboard = moderator.page
    dashboard.set_viewport_size({"width": 1440, "height": 1000})
    dashboard.goto("/moderate")
    expect_live(dashboard)
    queue = dashboard.get_by_test_id("reports-queue")
    expect(queue.get_by_test_id("reports-empty")).to_have_text("No open reports.")

    chat = alice.open_room(slug)
    spam = message_with(chat, "BUY CHEAP WATCHES at spam dot example")
    expect(message_with(chat, "ignore that").get_by_test_id("report")).to_have_count(0)  # not on one's own
    spam.hover()
    spam.get_by_test_id("report").click()
    spam.get_by_test_id("report-send").click()  # no reason yet: asked for one, nothing sent
    expect(spam.get_by_test_id("report-error")).not_to_be_empty()
    spam.get_by_test_id("report-reason").fill("spam link")
    spam.get_by_test_id("report-send").click()
    expect(spam.get_by_test_id("report-outcome")).to_contain_text("Reported")
    expect(spam.get_by_test_id("report")).to_be_disabled()

    # The open dashboard shows it at once, from the feed, with the messages before and after it.
    item = queue.get_by_test_id("report-item")
    expect(item).to_have_count(1)
    expect(item.get_by_test_id("report-reason")).to_have_text("spam link")
    expect(item.get_by_test_id("report-reporter")).to_have_text(alice.username)
    expect(item.get_by_test_id("report-room")).to_have_text(f"#{slug}")
    context = item.get_by_test_id("report-context-message")
    expect(context).to_have_count(6)
    expect(context.nth(3)).to_have_attribute("data-reported", "true")
    expect(context.nth(3)).to_contain_text("BUY CHEAP WATCHES")
    expect(item.locator("[data-reported=true]")).to_have_count(1)  # the reported one alone is marked
    expect(context.first).to_contain_text("morning all")
    expect(context.nth(4)).to_contain_text("ignore that")
    expect(context.last).to_contain_text("last chance for cheap watches")
    expect(dashboard.get_by_test_id("reports-count")).to_have_text("1 open")
    # Live traffic on the feed, and a mute in the lists and the log, for the picture.
    send(chat, "back to the ferry: nine it is")
    expect(dashboard.get_by_test_id("mod-feed").get_by_text("back to the ferry: nine it is")).to_be_visible()
    muted = moderator.http.post(f"/api/rooms/{slug}/mutes", json={"username": bob.username, "minutes": 30,
                                                                   "reason": "spam while the report is open"})
    assert muted.status_code == 201
    expect(dashboard.get_by_test_id("mutes-list").get_by_test_id("mute-entry")).to_have_count(1)
    expect(dashboard.get_by_test_id("audit-log")).to_contain_text("mute")
    chat.screenshot(path=str(artifacts / "chat-report.png"))
    dashboard.screenshot(path=str(artifacts / "moderate-reports.png"), full_page=True)

    # Delete from the queue: the report leaves it, and the message leaves alice's page (message_deleted).
    item.get_by_test_id("report-delete").click()
    expect(queue.get_by_test_id("report-item")).to_have_count(0)
    expect(queue.get_by_test_id("reports-empty")).to_be_visible()
    expect(spam).to_have_count(0)
    expect(message_with(chat, "ignore that")).to_have_count(1)
    log = dashboard.get_by_test_id("audit-log")
    expect(log).to_contain_text("resolve report")
