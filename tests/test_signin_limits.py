"""API.md "Users and sessions": guessing is limited per account, registration per address, and
X-Forwarded-For is believed only from the trusted proxy hops. These run on the default limits."""
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.support import PASSWORD, AuthActions, assert_error, unique, wait_until

WRONG = "not the password"


def browser(app, forwarded_for=None, remote_addr="10.0.0.1") -> AuthActions:
    """A browser at `remote_addr` (the socket's peer); `forwarded_for` is the X-Forwarded-For header it
    arrives with (behind one trusted proxy, the router appends the address it saw as the last entry)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = remote_addr
    if forwarded_for:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return AuthActions(client)


def registered(app) -> str:
    username = unique()
    assert browser(app).register(username).status_code == 201
    return username


def assert_rate_limited(response, window: int) -> None:
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= window


# Failed logins: per account, from any mix of addresses

def test_an_office_behind_one_address_registers_and_signs_in_fifty_users(app):
    office = "198.51.100.7"
    usernames = [unique() for _ in range(50)]
    for username in usernames:
        assert browser(app, office).register(username).status_code == 201, username
    for username in usernames:
        assert browser(app, office).login(username).status_code == 200, username


def test_ten_failures_from_ten_addresses_block_the_account_even_for_the_right_password(app):
    username = registered(app)
    for n in range(10):
        assert_error(browser(app, f"203.0.113.{n}").login(username, WRONG), 401, "invalid_credentials")
    assert_rate_limited(browser(app, "203.0.113.99").login(username, WRONG), 300)
    assert_rate_limited(browser(app, "192.0.2.1").login(username), 300)  # the owner, elsewhere, right password


def test_a_blocked_account_does_not_slow_other_accounts_at_the_same_address(app):
    victim, neighbour = registered(app), registered(app)
    office = browser(app, "198.51.100.7")
    for _ in range(10):
        assert_error(office.login(victim, WRONG), 401, "invalid_credentials")
    assert_rate_limited(office.login(victim), 300)
    assert office.login(neighbour).status_code == 200
    assert_error(office.login(neighbour, WRONG), 401, "invalid_credentials")


def test_the_account_is_the_username_ignoring_case(app):
    username = registered(app)
    for n in range(10):
        spelled = username.upper() if n % 2 else username.capitalize()
        assert_error(browser(app).login(spelled, WRONG), 401, "invalid_credentials")
    assert_rate_limited(browser(app).login(username.lower()), 300)


def test_unknown_usernames_are_limited_like_known_ones(app):
    unknown = unique()
    for n in range(10):
        assert_error(browser(app, f"203.0.113.{n}").login(unknown, WRONG), 401, "invalid_credentials")
    blocked = browser(app).login(unknown, WRONG)
    assert_rate_limited(blocked, 300)
    known = registered(app)
    for _ in range(10):
        browser(app).login(known, WRONG)
    assert browser(app).login(known, WRONG).json == blocked.json  # the answer does not tell which exists


def test_successful_logins_never_count(app):
    username = registered(app)
    owner = browser(app, "198.51.100.7")
    for _ in range(9):
        assert_error(owner.login(username, WRONG), 401, "invalid_credentials")
    for _ in range(30):
        assert owner.login(username).status_code == 200
    assert_error(owner.login(username, WRONG), 401, "invalid_credentials")  # the tenth failure
    assert_rate_limited(owner.login(username), 300)


def test_guesses_racing_in_together_get_at_most_ten_answers(app):
    """Each guess counts before its password is checked, so concurrent guesses cannot overshoot the limit."""
    username, guesses = registered(app), 20
    start = threading.Barrier(guesses)

    def guess(n):
        guesser = browser(app, f"203.0.113.{n}")
        start.wait(timeout=10)
        return guesser.login(username, WRONG).status_code

    with ThreadPoolExecutor(guesses) as pool:
        answers = sorted(pool.map(guess, range(guesses)))
    assert answers == [401] * 10 + [429] * (guesses - 10)


def test_a_block_ends_with_its_window_however_often_the_guesser_knocks(make_app):
    """A fixed window: attempts while blocked do not extend it, so a guesser cannot lock the
    owner out for longer than one window at a time."""
    app = make_app(CHAT_LOGIN_FAILURE_LIMIT="2/2")
    username = registered(app)
    for _ in range(2):
        assert_error(browser(app).login(username, WRONG), 401, "invalid_credentials")
    assert_rate_limited(browser(app).login(username), 2)

    def owner_signs_in_between_guesses():
        assert browser(app).login(username, WRONG).status_code in (401, 429)
        return browser(app).login(username).status_code == 200

    wait_until(owner_signs_in_between_guesses, timeout=10, what="the block to end")


# Registration: per address, and which address

def test_registrations_from_one_address_are_capped(make_app):
    app = make_app(CHAT_REGISTER_LIMIT="3/60")
    for _ in range(3):
        assert browser(app, "198.51.100.7").register().status_code == 201
    assert_rate_limited(browser(app, "198.51.100.7").register(), 60)
    assert browser(app, "198.51.100.8").register().status_code == 201  # another address


def test_a_client_cannot_escape_the_register_cap_by_forging_x_forwarded_for(make_app):
    """Behind one trusted hop the router appends the address it saw; what the client wrote before it is not believed."""
    app = make_app(CHAT_REGISTER_LIMIT="3/60")
    for n in range(3):
        assert browser(app, f"192.0.2.{n}, 198.51.100.7").register().status_code == 201
    assert_rate_limited(browser(app, "192.0.2.50, 198.51.100.7").register(), 60)
    assert_rate_limited(browser(app, "192.0.2.51,192.0.2.52, 198.51.100.7").register(), 60)


def test_with_no_trusted_proxy_x_forwarded_for_is_ignored(make_app):
    app = make_app(CHAT_REGISTER_LIMIT="3/60", CHAT_TRUSTED_PROXIES=0)
    for n in range(3):
        assert browser(app, f"192.0.2.{n}", remote_addr="198.51.100.7").register().status_code == 201
    assert_rate_limited(browser(app, "192.0.2.50", remote_addr="198.51.100.7").register(), 60)
    response = browser(app, remote_addr="198.51.100.8").client.post(
        "/api/auth/register", json={"username": unique(), "password": PASSWORD}, headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 201
    assert "secure" not in response.headers["Set-Cookie"].lower()  # nor is X-Forwarded-Proto believed


def test_failed_logins_do_not_count_against_registration(make_app):
    app = make_app(CHAT_REGISTER_LIMIT="3/60")
    office = browser(app, "198.51.100.7")
    for _ in range(5):
        assert_error(office.login(unique(), WRONG), 401, "invalid_credentials")
    for _ in range(3):
        assert browser(app, "198.51.100.7").register().status_code == 201
