"""Polling until something holds, for tests that watch processes, servers or clocks."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_S = 120.0  # every wait fails after this long instead of hanging the suite


def wait_for(
    what: str, check: Callable[[], object], timeout_s: float = WAIT_S, *, poll_s: float = 0.2
) -> object:
    """``check()``'s first truthy value, polled every ``poll_s``; an ``AssertionError`` naming
    ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(poll_s)
