"""The bounded soak of issue 11, as CI runs it: bench/soak.py with 500 subscribers over 10 rooms (SSE and
long-polling, hanging up and resuming at random), steady posters, a client cycling HEADs, slow readers,
oversized and stalled bodies, for CHAT_SOAK_MINUTES (1.5 by default; `CHAT_SOAK_MINUTES=10` for the long
form, or `python -m bench soak --minutes N`).

Marked `soak` and deselected by pytest.ini: .ci/run runs it once, as its own step (`-m soak`), not in
both of its passes. It always starts its own gunicorn and a private redis-server (the bench's), so it
can measure that server's memory and descriptors and that Redis's memory, and never touches the
machine's Redis; DATABASE_URL, when set, gets a database of its own that is dropped after.
"""
import os

import pytest

from bench import cli, soak

MINUTES = float(os.environ.get("CHAT_SOAK_MINUTES", "1.5"))
SUBSCRIBERS, ROOMS = 500, 10


@pytest.mark.soak
def test_every_subscriber_gets_its_rooms_history_and_the_server_returns_to_baseline():
    options = cli.parser().parse_args(
        ["soak", "--minutes", str(MINUTES), "--soak-subscribers", str(SUBSCRIBERS), "--soak-rooms", str(ROOMS),
         "--redis-url", "", "--database-url", os.environ.get("DATABASE_URL", ""), "--no-save"])
    options.settings = {}
    result = soak.soak(options)
    assert result["failures"] == [], result["failures"]
    # The load really ran: the checks above were not met by an idle server.
    assert result["connected"] == SUBSCRIBERS
    assert result["messages"] >= MINUTES * 60 * options.rate * 0.8
    assert result["deliveries_checked"] >= result["messages"] * SUBSCRIBERS / ROOMS * 0.9
    assert result["sessions"] > SUBSCRIBERS * 2  # every subscriber hung up and resumed, most several times
    assert {"413", "408"} <= result["statuses"].keys() and result["head_requests"] > 100
