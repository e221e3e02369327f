"""Test-only fault injection, switched on by CHAT_FAILPOINTS (`name=kill,...`): a worker that dies at an
exact point of the write path, as a crashed process would."""
import os
import signal

from flask import current_app


def hit(name: str) -> None:
    if f"{name}=kill" in current_app.config["CHAT_FAILPOINTS"].split(","):
        os.kill(os.getpid(), signal.SIGKILL)
