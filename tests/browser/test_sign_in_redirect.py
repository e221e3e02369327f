"""`/?next=` returns the user to a page of this site after sign-in, never to another host (API.md, Pages)."""
import re
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from tests.support import PASSWORD, unique


@pytest.fixture
def visitor(browser, live):
    context = browser.new_context(base_url=live.url)
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.parametrize("next_param", ["/%09/evil.example", "/%0A/evil.example", "//evil.example",
                                        "/%5Cevil.example", "/%5C%5Cevil.example", "https://evil.example/",
                                        "javascript:alert(1)", "/\t/evil.example"])
def test_next_never_leads_to_another_host(visitor, live, next_param):
    left = []
    visitor.on("request", lambda request: urlparse(request.url).hostname != "127.0.0.1" and left.append(request.url))
    visitor.goto(f"/?next={next_param}")
    visitor.locator("input[name=username]").fill(unique("reader"))
    visitor.locator("input[name=password]").fill(PASSWORD)
    visitor.get_by_test_id("register").click()
    expect(visitor.get_by_test_id("logout")).to_be_visible()
    expect(visitor).to_have_url(re.compile(r"^" + re.escape(live.url) + "/"))
    assert not left, left


def test_next_returns_to_a_page_of_this_site(visitor, live):
    slug = live.user().create_room()
    visitor.goto(f"/?next=/rooms/{slug}%3Ftransport%3Dpoll")
    visitor.locator("input[name=username]").fill(unique("reader"))
    visitor.locator("input[name=password]").fill(PASSWORD)
    visitor.get_by_test_id("register").click()
    expect(visitor).to_have_url(f"{live.url}/rooms/{slug}?transport=poll")
