"""What the browser tests do and read on a chat page, through the fixed data-testid hooks (API.md)."""
import time

from playwright.sync_api import Page, expect


def send(page: Page, text: str) -> None:
    """Type into the composer and press Enter, as a person would."""
    composer = page.locator("textarea[name=body]")
    composer.fill(text)
    composer.press("Enter")


def messages(page: Page):
    return page.get_by_test_id("message-list").get_by_test_id("message")


def message_with(page: Page, text: str):
    return messages(page).filter(has=page.get_by_test_id("message-body").get_by_text(text, exact=True))


def bodies(page: Page) -> list[str]:
    """Every message's text, top to bottom, exactly as shown (textContent)."""
    return page.get_by_test_id("message-list").get_by_test_id("message-body").evaluate_all(
        "nodes => nodes.map(node => node.textContent)")


def ids(page: Page) -> list[str]:
    return messages(page).evaluate_all("nodes => nodes.map(node => node.dataset.id || null)")


def id_key(event_id: str) -> tuple[int, int]:
    """API.md: compare ids by splitting at '-' into two integers, as a pair."""
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def expect_live(page: Page, transport: str | None = None, timeout: float = 10_000) -> None:
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-state", "live", timeout=timeout)
    if transport:
        expect(status).to_have_attribute("data-transport", transport, timeout=timeout)


def scroll_metrics(page: Page) -> dict:
    return page.locator("[data-role=scroller]").evaluate(
        "el => ({top: el.scrollTop, height: el.scrollHeight, client: el.clientHeight})")


def until(page: Page, condition, timeout: float = 10.0) -> None:
    """Wait for a condition on the test's side (a route handler has run), giving Playwright's event loop
    turns in between; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(25)
