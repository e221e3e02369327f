"""Browser fixtures: one headless Debian Chromium per run, a fresh context per simulated person,
signed-in users created over HTTP, and an nginx that buffers like a misconfigured proxy."""
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import sqlalchemy
from playwright.sync_api import expect, sync_playwright

from tests.support import ROOT, HttpUser, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts"

expect.set_options(timeout=10_000)
NO_LOCKS = bool(os.environ.get("CHAT_TEST_NO_LOCKS"))  # run every browser test without tab sharing


@pytest.fixture(scope="session", autouse=True)
def _instance_directory(services):
    """LiveServer writes its log into services["instance"], which nothing creates when REDIS_URL is set."""
    Path(services["instance"]).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Person:
    """Someone at a browser: an HTTP session for setup, and a browser context sharing its cookie."""

    def __init__(self, browser, base_url: str, http_user: HttpUser, share_tabs: bool = True, **context_options):
        self.base_url = base_url
        self.http = http_user
        self.username = http_user.user["username"]
        self.context = browser.new_context(base_url=base_url, **context_options)
        if not share_tabs:
            # A browser without Web Locks: every tab keeps its own stream of the room it shows.
            self.context.add_init_script("delete Navigator.prototype.locks;")
        cookie = http_user.http.cookies.get("chat_session")
        self.context.add_cookies([{"name": "chat_session", "value": cookie, "url": base_url}])
        self.errors = []
        self.page = self.new_page()

    def new_page(self):
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", lambda message: message.type == "error" and "Content Security Policy" in message.text
                and self.errors.append(f"CSP: {message.text}"))
        return page

    def open_room(self, slug: str, query: str = "", page=None):
        page = page or self.page
        page.goto(f"/rooms/{slug}{query}")
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
        return page

    def close(self):
        self.context.close()


@pytest.fixture
def people(browser, live):
    """`people(n)` signs up n people on the live server, each with a browser context; closed after the test."""
    made = []

    def make(count=1, base_url=None, share_tabs=True, **context_options):
        for _ in range(count):
            made.append(Person(browser, base_url or live.url, live.user(), share_tabs=share_tabs and not NO_LOCKS,
                               **context_options))
        return made[-count:] if count > 1 else made[-1]

    yield make
    errors = [error for person in made for error in person.errors]
    for person in made:
        person.close()
    assert not errors, f"the pages reported errors: {errors}"


@pytest.fixture
def promote(services):
    """Make a user a moderator, as `flask users promote` would."""
    def run(username: str) -> None:
        engine = sqlalchemy.create_engine(services["database_url"])
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE users SET role = 'moderator' WHERE username_key = :key"),
                               {"key": username.lower()})
        engine.dispose()
    return run


class Nginx:
    """Debian's nginx as a foreground process with its own config, in front of `upstream`."""

    def __init__(self, upstream_url: str, extra: str = ""):
        self.directory = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        upstream = upstream_url.removeprefix("http://")
        (self.directory / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {self.directory}/nginx.pid;
error_log {self.directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {self.directory}/body;
  proxy_temp_path {self.directory}/proxy;
  fastcgi_temp_path {self.directory}/fastcgi;
  uwsgi_temp_path {self.directory}/uwsgi;
  scgi_temp_path {self.directory}/scgi;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
      proxy_read_timeout 120s;
      {extra}
    }}
  }}
}}
""")
        self.process = None

    def start(self, timeout: float = 10) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen([binary, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
                                         "-e", str(self.directory / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        session = requests.Session()
        try:
            for _ in range(int(timeout * 20)):
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited: {(self.directory / 'error.log').read_text()}")
                try:
                    if session.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return
                except requests.RequestException:
                    # Not listening yet; wait a little on the process itself rather than sleeping blindly.
                    try:
                        self.process.wait(0.05)
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            session.close()
        raise RuntimeError("nginx did not answer in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


# nginx 1.22 with proxy_buffering alone still passes each chunk on as it arrives (it only buffers for slow
# clients), and the stream's 2 KiB padding gets past postpone_output. What really holds a stream back in the
# wild is compression: gzip (which ignores `no-transform`) keeps the small events in zlib's buffer.
BUFFERING = ("proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; "
             "gzip on; gzip_types text/event-stream; gzip_min_length 0; gzip_proxied any;")


@pytest.fixture
def buffering_proxy(live):
    """nginx in front of the live server that holds event streams back, whatever the app asks."""
    proxy = Nginx(live.url, BUFFERING)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def run_out(services):
    """Make a user's mutes end now, as if their time had passed: the server's expiry job (every second)
    then broadcasts `user_unmuted` with `"by": null`, as it would at the real `until`."""
    def run(username: str) -> None:
        past = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)
        engine = sqlalchemy.create_engine(services["database_url"])
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                "UPDATE mutes SET until = :past WHERE user_id = (SELECT id FROM users WHERE username_key = :key)"),
                {"past": past, "key": username.lower()})
        engine.dispose()
    return run
