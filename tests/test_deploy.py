"""Deployment as docs/DEPLOY.md describes it: the Procfile run the way a platform runs it (honcho), the
nginx site file in front of a live server, and the sample dashboard naming real metrics."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy

from tests.support import ROOT, HttpUser, free_port, metric, posted, wait_until

VENV_BIN = str(Path(sys.executable).parent)


# The Procfile, as a platform runs it

def honcho(process: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([f"{VENV_BIN}/honcho", "start", "--no-prefix", "-f", "Procfile", process], cwd=ROOT,
                            env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_the_procfile_releases_then_serves_and_stops_cleanly_on_sigterm(services, tmp_path):
    database = f"sqlite:///{tmp_path / 'platform.sqlite3'}"
    port = free_port()
    env = {"DATABASE_URL": database, "REDIS_URL": services["redis_url"], "CHAT_REDIS_PREFIX": f"{services['prefix']}hc",
           "SECRET_KEY": "procfile-test", "PORT": str(port), "WEB_CONCURRENCY": "2",
           "CHAT_PASSWORD_METHOD": "pbkdf2:sha256:1000"}

    release = honcho("release", env)
    output = release.communicate(timeout=120)[0].decode(errors="replace")
    assert release.returncode == 0, output
    engine = sqlalchemy.create_engine(database)
    assert {"users", "rooms", "messages"} <= set(sqlalchemy.inspect(engine).get_table_names())
    engine.dispose()

    web = honcho("web", env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), timeout=30, what="the web process serving on $PORT")
        user = HttpUser(url).register()
        slug = user.create_room()
        stream = user.events(f"/api/rooms/{slug}/events")
        try:
            assert stream.next(timeout=5).event == "ready"
            message = posted(user, slug, "through the Procfile")
            assert stream.next_durable().json()["id"] == message["id"]
        finally:
            stream.close()
        started = time.monotonic()
        os.killpg(web.pid, signal.SIGTERM)  # what the platform sends to the whole process group
        web.wait(10)
        assert time.monotonic() - started < 10
        output = web.stdout.read().decode(errors="replace")
        assert "web.1 stopped (rc=0)" in output, output  # gunicorn's own exit: clean (honcho's is 128 + 15)
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


# nginx, from docs/deploy/nginx.conf

@pytest.fixture
def site(live):
    """docs/deploy/nginx.conf, pointed at the live server, inside a minimal nginx of its own."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    directory = Path(tempfile.mkdtemp(prefix="nginx-site-"))
    port = free_port()
    served = (ROOT / "docs" / "deploy" / "nginx.conf").read_text()
    served = served.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{live.port};")
    served = served.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (directory / "chat.conf").write_text(served)
    temp_paths = " ".join(f"{kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                               "uwsgi", "scgi"))
    (directory / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; {temp_paths} include {directory}/chat.conf; }}
""")
    process = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _answers(url), timeout=10, what="nginx listening")
        assert process.poll() is None, (directory / "error.log").read_text()
        yield url
    finally:
        process.terminate()
        process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


def test_the_nginx_site_streams_at_once_and_passes_polls(live, site):
    user = HttpUser(site).register()
    slug = user.create_room()
    stream = user.events(f"/api/rooms/{slug}/events")
    try:
        assert stream.status == 200 and re.fullmatch(r"[0-9a-f]{32}", stream.headers["X-Request-ID"])
        assert stream.next(timeout=2).event == "ready"  # not held back by the proxy
        message = posted(user, slug, "through nginx")
        started = time.monotonic()
        assert stream.next_durable(timeout=2).json()["id"] == message["id"]
        assert time.monotonic() - started < 1
    finally:
        stream.close()

    cursor = message["id"]
    answers = []
    before = metric(live, "chat_polls_waiting")
    waiting = threading.Thread(target=lambda: answers.append(
        user.get(f"/api/rooms/{slug}/poll", params={"cursor": cursor, "timeout": 20})), daemon=True)
    waiting.start()
    wait_until(lambda: answers or metric(live, "chat_polls_waiting") > before, what="the poll waiting behind nginx")
    later = posted(user, slug, "poll through nginx")
    waiting.join(10)
    assert answers and [event["data"]["id"] for event in answers[0].json()["events"]] == [later["id"]]


def test_the_sample_dashboard_names_only_real_metrics(client):
    exposed = client.get("/metrics").get_data(as_text=True)
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    named = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"chat_[a-z_]+", target["expr"])}
    assert named
    for name in named:
        family = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"# TYPE {family} " in exposed, name


def test_heroku_router_limits_hold_at_the_default_settings(live):
    """Heroku's router drops a response whose first byte takes over 30 s, and a stream silent for 55 s. At
    the default settings a stream's first bytes come at once and a ping every CHAT_HEARTBEAT_SECONDS (15),
    and an idle poll answers after CHAT_POLL_TIMEOUT_SECONDS (25): both well inside."""
    user = live.user()
    slug = user.create_room()
    polled = {}

    def idle_poll():
        started = time.monotonic()
        # Its own connection (a requests.Session is not for two threads); no timeout parameter: the default.
        response = requests.get(f"{live.url}/api/rooms/{slug}/poll", cookies=user.http.cookies, timeout=60)
        polled["status"], polled["seconds"] = response.status_code, time.monotonic() - started

    poller = threading.Thread(target=idle_poll, daemon=True)
    poller.start()
    started = time.monotonic()
    stream = user.events(f"/api/rooms/{slug}/events")
    try:
        assert stream.next(timeout=5).event == "ready"
        first_byte = time.monotonic() - started
        ping = stream.wait_for(lambda event: event.event == "ping", timeout=55)
        silent = time.monotonic() - started - first_byte
        assert ping.json()["time"]
    finally:
        stream.close()
    poller.join(40)
    assert first_byte < 2, f"the stream's first byte took {first_byte:.1f} s (router limit 30 s)"
    assert silent < 20, f"{silent:.1f} s without a byte on an idle stream (router limit 55 s)"
    assert polled["status"] == 200 and 20 < polled["seconds"] < 29, polled
