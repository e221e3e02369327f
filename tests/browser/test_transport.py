"""How the page stays live: fallback to long-polling behind a buffering proxy, forced transports,
going offline and coming back, and a server restart mid-chat."""
import signal
import time

import psutil
from playwright.sync_api import expect

from tests.browser.helpers import bodies, expect_live, ids, id_key, message_with, messages, send
from tests.support import LiveServer


def test_behind_a_buffering_proxy_the_page_falls_back_to_polling(people, live, buffering_proxy, artifacts):
    bob = live.user()
    slug = bob.create_room("Behind the proxy")
    assert bob.send(slug, "before you came").status_code == 201
    alice = people(base_url=buffering_proxy.url)
    page = alice.page
    started = time.monotonic()
    page.goto(f"/rooms/{slug}")
    expect(message_with(page, "before you came")).to_have_count(1)
    # Posted while the page still waits for the stream's `ready`: the switch must not lose it.
    assert bob.send(slug, "while you were connecting").status_code == 201
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-transport", "poll", timeout=15_000)
    expect(status).to_have_attribute("data-state", "live")
    expect(status).to_contain_text("long-polling")
    expect(message_with(page, "while you were connecting")).to_have_count(1, timeout=15_000)
    assert time.monotonic() - started < 15
    assert bob.send(slug, "live through polling").status_code == 201
    expect(message_with(page, "live through polling")).to_have_count(1, timeout=5_000)
    send(page, "and back through the proxy")
    expect(message_with(page, "and back through the proxy")).to_have_attribute("data-state", "sent")
    assert bodies(page) == ["before you came", "while you were connecting", "live through polling",
                            "and back through the proxy"]
    page.screenshot(path=str(artifacts / "chat-fallback.png"))

    # The choice is remembered for this origin: the next visit polls at once, without the 5 s wait.
    assert page.evaluate("() => Number(localStorage.getItem('chat.transport.poll-until')) > Date.now()")
    page.reload()
    expect_live(page, "poll", timeout=4_000)
    expect(messages(page)).to_have_count(4)


def test_forced_long_polling_chats_both_ways_with_a_streaming_peer(people):
    alice, bob = people(2)
    slug = alice.http.create_room()
    streaming = bob.open_room(slug, "?transport=sse")
    expect_live(streaming, "sse")
    # A poll carries who is online when it answers (a waiting poll wakes only for durable events).
    polling = alice.open_room(slug, "?transport=poll")
    expect_live(polling, "poll")
    expect(polling.get_by_test_id("online-list")).to_contain_text(bob.username)
    expect(streaming.get_by_test_id("online-list")).to_contain_text(alice.username)
    for turn in range(3):
        send(polling, f"poll says {turn}")
        send(streaming, f"sse says {turn}")
    expect(messages(polling)).to_have_count(6)
    expect(messages(streaming)).to_have_count(6)
    assert ids(polling) == ids(streaming) == sorted(ids(polling), key=id_key)


def test_offline_sends_wait_and_go_out_on_reconnect(people, live, artifacts):
    alice = people()
    bob = live.user()
    slug = alice.http.create_room()
    page = alice.open_room(slug)
    alice.context.set_offline(True)
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-state", "offline")
    expect(status).to_contain_text("last synced")
    send(page, "written on the train")
    queued = message_with(page, "written on the train")
    expect(queued).to_have_attribute("data-state", "pending")
    page.screenshot(path=str(artifacts / "chat-offline.png"))
    assert bob.send(slug, "meanwhile, at home").status_code == 201
    alice.context.set_offline(False)
    expect_live(page)
    expect(queued).to_have_attribute("data-state", "sent")
    expect(message_with(page, "meanwhile, at home")).to_have_count(1)
    expect(messages(page)).to_have_count(2)
    stored = alice.http.get(f"/api/rooms/{slug}/messages").json()["messages"]
    assert sorted(m["body"] for m in stored) == ["meanwhile, at home", "written on the train"]


def test_after_a_server_restart_the_page_shows_what_was_posted_meanwhile(people, live, services):
    server = LiveServer(services, workers=1)
    server.start()
    try:
        alice = people(base_url=server.url)
        bob = live.user()  # posts through the other server while this one is down
        slug = bob.create_room("Restarts")
        page = alice.open_room(slug)
        assert bob.send(slug, "before the restart").status_code == 201
        expect(message_with(page, "before the restart")).to_have_count(1)

        server.stop()
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "offline")
        assert bob.send(slug, "while the server was down").status_code == 201
        send(page, "typed while it was down")
        expect(message_with(page, "typed while it was down")).to_have_attribute("data-state", "pending")

        server.start()
        expect_live(page, timeout=15_000)
        expect(message_with(page, "while the server was down")).to_have_count(1)
        expect(message_with(page, "typed while it was down")).to_have_attribute("data-state", "sent")
        assert bob.send(slug, "after the restart").status_code == 201
        expect(message_with(page, "after the restart")).to_have_count(1)
        assert bodies(page) == ["before the restart", "while the server was down", "typed while it was down",
                                "after the restart"]
    finally:
        server.stop()


def test_a_stream_that_goes_silent_is_noticed_and_replaced(people, live, services):
    """A frozen server keeps the TCP connection open but sends nothing, not even pings: the page must not
    go on saying "live". Past the heartbeat `ready` announced plus a grace, it reconnects and catches up."""
    server = LiveServer(services, workers=1, CHAT_HEARTBEAT_SECONDS=1)
    server.start()
    try:
        alice = people(base_url=server.url)
        bob = live.user()
        slug = bob.create_room()
        page = alice.open_room(slug)
        status = page.get_by_test_id("connection-status")
        workers = psutil.Process(server.process.pid).children()
        for worker in workers:
            worker.send_signal(signal.SIGSTOP)
        try:
            assert bob.send(slug, "sent while the stream was frozen").status_code == 201
            expect(status).to_have_attribute("data-state", "offline", timeout=10_000)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGCONT)
        expect_live(page, timeout=15_000)
        expect(message_with(page, "sent while the stream was frozen")).to_have_count(1)
    finally:
        server.stop()
