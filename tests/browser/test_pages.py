"""The pages around the chat: signing up, in and out, the rooms list, and the look at phone width and in the dark."""
import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import expect_live, message_with, send
from tests.support import PASSWORD, HttpUser, unique


@pytest.fixture
def visitor(browser, live):
    context = browser.new_context(base_url=live.url, viewport={"width": 1100, "height": 720})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def test_sign_up_create_a_room_log_out_and_back_in(visitor, live, artifacts):
    page = visitor
    host = live.user()
    host.create_room("Book club")
    host.create_room("allotment")
    assert host.send("book-club", "Next up: Middlemarch").status_code == 201

    # A room's address asks a stranger to sign in first, then brings them back to it.
    page.goto("/rooms/book-club")
    expect(page).to_have_url(re.compile(r"/\?next=/rooms/book-club$"))
    expect(page.get_by_test_id("logout")).to_have_count(0)
    page.screenshot(path=str(artifacts / "sign-in.png"))
    username = unique("reader")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_test_id("register").click()
    expect(page).to_have_url(re.compile(r"/rooms/book-club$"))
    expect_live(page)
    expect(message_with(page, "Next up: Middlemarch")).to_have_count(1)

    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_test_id("login")).to_be_visible()
    page.goto("/rooms/book-club")  # the session is gone on the server
    expect(page).to_have_url(re.compile(r"/\?next="))

    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill("not the password")
    page.get_by_test_id("login").click()
    expect(page.get_by_role("alert").filter(has_text="Wrong username or password.")).to_be_visible()
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[name=password]").press("Enter")  # Enter signs in
    expect(page).to_have_url(re.compile(r"/rooms/book-club$"))
    expect_live(page)

    page.goto("/")
    rooms = page.get_by_test_id("room-list").locator("li")
    expect(rooms).to_have_count(2)
    expect(rooms.locator(".room-name")).to_have_text(["allotment", "Book club"])  # by name, ignoring case
    page.screenshot(path=str(artifacts / "rooms.png"), full_page=True)

    page.locator("input[name=name]").fill("Book Club")
    page.get_by_test_id("create-room").click()
    expect(page.get_by_role("alert").filter(has_text="exists already")).to_be_visible()
    page.locator("input[name=name]").fill("Night owls")
    page.locator("input[name=name]").press("Enter")
    expect(page).to_have_url(re.compile(r"/rooms/night-owls$"))
    expect_live(page)
    send(page, "first!")
    expect(message_with(page, "first!")).to_have_attribute("data-state", "sent")

    # Every page, an error page too, offers logout.
    response = page.goto("/rooms/no-such-room")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_test_id("register")).to_be_visible()


@pytest.mark.parametrize("look", ["phone", "dark"])
def test_the_chat_at_phone_width_and_in_the_dark(people, artifacts, look):
    options = ({"viewport": {"width": 390, "height": 780}, "is_mobile": True, "has_touch": True} if look == "phone"
               else {"viewport": {"width": 1100, "height": 640}, "color_scheme": "dark"})
    alice = people(**options)
    bob = people()
    slug = alice.http.create_room("Phone and dark")
    for text in ["Morning! Anyone up for a walk later?", "Sure, around four?\nI'll bring the dog."]:
        assert bob.http.send(slug, text).status_code == 201
    page = alice.open_room(slug)
    send(page, "Four works. See you at the café by the gate")
    expect(message_with(page, "Four works. See you at the café by the gate")).to_have_attribute("data-state", "sent")
    expect(page.get_by_test_id("online-list")).to_contain_text(alice.username)
    # Nothing spills sideways, and the composer is reachable by keyboard with a visible focus ring.
    assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    composer = page.locator("textarea[name=body]")
    composer.focus()
    assert composer.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
    if look == "dark":
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert background != "rgb(255, 255, 255)" and sum(map(int, re.findall(r"\d+", background)[:3])) < 150
    page.screenshot(path=str(artifacts / f"chat-{look}.png"))


def test_change_the_password_then_log_out_everywhere(visitor, live, artifacts):
    """The account controls on `/`: a new password signs out the other devices; "Log out everywhere" this one too."""
    page, elsewhere = visitor, live.user()  # `elsewhere`: the same account signed in on another device
    username, new_password = elsewhere.user["username"], "a new passphrase"
    page.goto("/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("logout-all")).to_be_visible()

    page.locator(".account-card summary").click()
    page.locator("input[name=current_password]").fill("not the password")
    page.locator("input[name=new_password]").fill(new_password)
    page.get_by_test_id("change-password").click()
    expect(page.get_by_role("alert").filter(has_text="Your current password is wrong.")).to_be_visible()
    page.locator("input[name=current_password]").fill(PASSWORD)
    page.get_by_test_id("change-password").click()
    expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    page.screenshot(path=str(artifacts / "password-changed.png"), full_page=True)
    assert elsewhere.get("/api/auth/me").status_code == 401  # the other device is signed out
    assert page.evaluate("fetch('/api/auth/me').then((answer) => answer.status)") == 200  # this page is not

    again = HttpUser(live.url)
    assert again.login(username, new_password).status_code == 200
    page.get_by_test_id("logout-all").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_test_id("login")).to_be_visible()
    assert again.get("/api/auth/me").status_code == 401
