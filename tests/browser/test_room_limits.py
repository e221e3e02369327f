"""The room page under slow mode and mutes, in a real Chromium: the composer counts down to when the user can
post again, holds their text until then, and says why; a mute that runs out or is lifted ends it at once."""
import re
from datetime import datetime

from playwright.sync_api import expect

from tests.browser.helpers import message_with, messages, send

COUNTDOWN = re.compile(r"^Slow mode: you can post again in \d+ (s|min)$")


def a_room_with_a_moderator(people, promote):
    moderator, alice = people(2)
    promote(moderator.username)
    return moderator, alice, moderator.http.create_room()


def slow_mode(moderator, slug, seconds):
    response = moderator.http.post(f"/api/rooms/{slug}/slow_mode", json={"seconds": seconds})
    assert response.status_code == 200, response.text
    assert response.json()["room"]["slow_mode_seconds"] == seconds


def test_slow_mode_counts_down_after_a_post_and_holds_the_next_until_it_ends(people, promote):
    moderator, alice, slug = a_room_with_a_moderator(people, promote)
    page = alice.open_room(slug)
    badge, countdown = page.get_by_test_id("slow-mode-badge"), page.get_by_test_id("composer-countdown")
    expect(badge).to_be_hidden()

    slow_mode(moderator, slug, 4)  # the room_updated event tells the open page
    expect(badge).to_have_text("Slow mode: one message every 4 s")
    expect(page.get_by_test_id("message-list")).to_contain_text("Slow mode is on: one message every 4 s.")
    expect(countdown).to_be_hidden()  # nothing posted yet: nothing to wait for

    send(page, "first")
    expect(message_with(page, "first")).to_have_attribute("data-state", "sent")
    expect(countdown).to_be_visible()
    expect(countdown).to_have_text(COUNTDOWN)

    # Held here, not queued: nothing is posted, the text stays, and the page says why.
    send(page, "second")
    expect(page.get_by_test_id("composer-feedback")).to_contain_text("Slow mode")
    expect(page.locator("textarea[name=body]")).to_have_value("second")
    expect(messages(page)).to_have_count(1)
    expect(page.get_by_test_id("send")).to_have_attribute("aria-disabled", "true")

    expect(countdown).to_be_hidden(timeout=10_000)  # the wait ends by itself...
    expect(page.get_by_test_id("send")).to_have_attribute("aria-disabled", "false")
    page.locator("textarea[name=body]").press("Enter")  # ...and the kept text goes, accepted by the server
    expect(message_with(page, "second")).to_have_attribute("data-state", "sent")
    expect(countdown).to_be_visible()

    # A page opened while slow mode is on shows it from the server's render.
    page.reload()
    expect(badge).to_be_visible()
    expect(badge).to_have_text("Slow mode: one message every 4 s")

    # Moderators are not held.
    moderator_page = moderator.open_room(slug)
    send(moderator_page, "mod one")
    send(moderator_page, "mod two")
    expect(message_with(moderator_page, "mod two")).to_have_attribute("data-state", "sent")
    expect(moderator_page.get_by_test_id("composer-countdown")).to_be_hidden()


def test_turning_slow_mode_off_ends_the_countdown_at_once(people, promote):
    moderator, alice, slug = a_room_with_a_moderator(people, promote)
    slow_mode(moderator, slug, 600)
    page = alice.open_room(slug)
    expect(page.get_by_test_id("slow-mode-badge")).to_have_text("Slow mode: one message every 10 min")

    send(page, "before")
    expect(message_with(page, "before")).to_have_attribute("data-state", "sent")
    countdown = page.get_by_test_id("composer-countdown")
    expect(countdown).to_have_text("Slow mode: you can post again in 10 min")
    send(page, "held")
    expect(page.locator("textarea[name=body]")).to_have_value("held")

    slow_mode(moderator, slug, 0)
    expect(countdown).to_be_hidden()
    expect(page.get_by_test_id("slow-mode-badge")).to_be_hidden()
    expect(page.get_by_test_id("message-list")).to_contain_text("Slow mode is off.")
    page.locator("textarea[name=body]").press("Enter")
    expect(message_with(page, "held")).to_have_attribute("data-state", "sent")


def test_a_429_slow_mode_starts_the_countdown_from_its_retry_after(people, promote):
    moderator, alice, slug = a_room_with_a_moderator(people, promote)
    slow_mode(moderator, slug, 600)
    assert alice.http.send(slug, "from elsewhere").status_code == 201
    page = alice.open_room(slug)  # opened after that post: it cannot know the wait until the server says
    expect(page.get_by_test_id("composer-countdown")).to_be_hidden()

    send(page, "too soon")
    expect(message_with(page, "too soon")).to_have_attribute("data-state", "failed")
    expect(page.get_by_test_id("composer-feedback")).to_contain_text(re.compile(r"Slow mode: wait \d+ seconds"))
    expect(page.get_by_test_id("composer-countdown")).to_have_text(
        re.compile(r"^Slow mode: you can post again in (9|10) min$"))


def test_a_post_from_another_tab_starts_the_countdown_here(people, promote):
    moderator, alice, slug = a_room_with_a_moderator(people, promote)
    slow_mode(moderator, slug, 600)
    page = alice.open_room(slug)
    assert alice.http.send(slug, "from my phone").status_code == 201  # the server counts the user, not the tab
    expect(message_with(page, "from my phone")).to_be_visible()
    expect(page.get_by_test_id("composer-countdown")).to_have_text(COUNTDOWN)


def expect_muted_notice(page, moderator_name):
    notice = page.get_by_test_id("mute-notice")
    expect(notice).to_be_visible()
    expect(notice).to_have_text(re.compile(
        rf"^You are muted by {re.escape(moderator_name)} until .*\d.* \((5|4) min\)\.$"))
    return notice


def test_a_muted_user_sees_why_and_until_when_cannot_post_and_can_again_after_unmute(people, promote):
    moderator, alice, slug = a_room_with_a_moderator(people, promote)
    page = alice.open_room(slug)
    expect(page.get_by_test_id("mute-notice")).to_be_hidden()

    response = moderator.http.post(f"/api/rooms/{slug}/mutes",
                                   json={"username": alice.username, "minutes": 5, "reason": "secret-reason"})
    assert response.status_code == 201
    notice = expect_muted_notice(page, moderator.username)  # page loaded before the mute: from user_muted
    until = response.json()["until"]
    assert datetime.fromisoformat(notice.get_attribute("data-until").replace("Z", "+00:00")) == \
        datetime.fromisoformat(until.replace("Z", "+00:00"))
    expect(page.locator("form[data-role=composer]")).not_to_contain_text("secret-reason")  # a moderator's note

    send(page, "let me speak")  # refused here with the same words, the text kept
    expect(page.get_by_test_id("composer-feedback")).to_contain_text(f"You are muted by {moderator.username} until")
    expect(page.locator("textarea[name=body]")).to_have_value("let me speak")
    expect(messages(page)).to_have_count(0)

    page.reload()  # page loaded after the mute: the server's render carries it
    notice = expect_muted_notice(page, moderator.username)
    expect(page.locator("form[data-role=composer]")).not_to_contain_text("secret-reason")
    send(page, "still here")
    expect(page.get_by_test_id("composer-feedback")).to_contain_text("You are muted")
    expect(messages(page)).to_have_count(0)

    assert moderator.http.delete(f"/api/rooms/{slug}/mutes/{alice.username}").status_code == 204
    expect(notice).to_be_hidden()
    expect(page.get_by_test_id("message-list")).to_contain_text(f"{alice.username} was unmuted by {moderator.username}.")
    expect(page.get_by_test_id("composer-feedback")).to_have_text("You can post in this room again.")
    page.locator("textarea[name=body]").press("Enter")
    expect(message_with(page, "still here")).to_have_attribute("data-state", "sent")


def test_a_mute_that_runs_out_clears_the_notice_and_says_so(people, promote, run_out):
    moderator, alice, slug = a_room_with_a_moderator(people, promote)
    page = alice.open_room(slug)
    watcher = moderator.open_room(slug)
    assert moderator.http.post(f"/api/rooms/{slug}/mutes",
                               json={"username": alice.username, "minutes": 5}).status_code == 201
    notice = expect_muted_notice(page, moderator.username)

    run_out(alice.username)  # the server's expiry job broadcasts user_unmuted with "by": null
    expect(notice).to_be_hidden()
    for each in (page, watcher):
        expect(each.get_by_test_id("message-list")).to_contain_text(f"{alice.username}’s mute ended.")
        expect(each.get_by_test_id("message-list")).not_to_contain_text("by null")
    send(page, "free again")
    expect(message_with(page, "free again")).to_have_attribute("data-state", "sent")


def test_a_mute_ends_on_the_page_when_its_until_passes(people):
    """Posting is allowed from `until` on: the page's own countdown ends the mute there, even before the
    server's user_unmuted arrives (the module driven directly, with a mute of about two seconds)."""
    alice = people()
    page = alice.open_room(alice.http.create_room())
    page.evaluate("""async () => {
      const { PostingLimits } = await import('/static/js/posting-limits.js');
      const make = (testid) => {
        const element = document.createElement('p');
        element.dataset.testid = testid;
        document.body.append(element);
        return element;
      };
      const limits = new PostingLimits({ badge: make('probe-badge'), countdown: make('probe-countdown'),
                                         muteNotice: make('probe-mute') });
      window.probe = limits;
      limits.muted({ until: new Date(Date.now() + 2500).toISOString(), by: 'mod' });
    }""")
    notice = page.get_by_test_id("probe-mute")
    expect(notice).to_have_text(re.compile(r"^You are muted by mod until .+ \([1-3] s\)\.$"))
    assert page.evaluate("() => window.probe.refusal()").startswith("You are muted by mod")
    expect(notice).to_be_hidden(timeout=5_000)
    assert page.evaluate("() => window.probe.refusal()") is None
