"""How long-running commands start and stop: the ready line, and SIGINT/SIGTERM as a clean stop.

A service (``crucible localnet``, ``crucible-miner serve``, ``crucible-validator run`` and
``gateway``) prints one line starting with ``READY`` once it accepts work, and runs inside
``stops_on_signals``: SIGINT or SIGTERM raises ``Stopped`` in the main thread (uvicorn finishes
its graceful shutdown first and then re-raises the signal it captured), the command's ``finally``
blocks release what they hold, and it exits 0 saying so. A one-shot command interrupted the same
way exits 130/143, because it did not finish.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["READY", "Stopped", "announce_ready", "stops_on_signals"]

READY = "ready:"
_HANDLED = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt: nothing may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def install_stop_handlers() -> None:
    """SIGINT and SIGTERM raise ``Stopped`` (main thread only; a no-op elsewhere)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in _HANDLED:
            signal.signal(sig, _raise_stopped)


@contextmanager
def stops_on_signals(prog: str, what: str = "") -> Iterator[None]:
    """Run a service; a stop signal ends it cleanly with one line on stderr."""
    install_stop_handlers()
    try:
        yield
    except Stopped as stop:
        suffix = f"; {what}" if what else ""
        print(f"{prog}: stopped cleanly on {stop.name}{suffix}", file=sys.stderr, flush=True)


def announce_ready(description: str) -> None:
    print(f"{READY} {description}", flush=True)
