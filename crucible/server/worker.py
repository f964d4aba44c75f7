"""Running admitted model work in a worker thread: stoppable, and holding its slot until it ends.

``asyncio.wait_for`` can abandon a coroutine but not a thread: the old server released its gate
when a handler timed out while the thread went on computing, so a flood of slow requests ran
many models at once behind a gate that said "one". Here the ``Grant`` is released by the
thread's own completion, never by the coroutine that stopped waiting, and the work receives a
``threading.Event`` that is set when nobody waits any more, so a loop over tokens can stop at
the next token (``miner.serve.generate_tokens`` does).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from crucible.server.capacity import Grant

__all__ = ["run_admitted"]

T = TypeVar("T")


async def run_admitted(grant: Grant, work: Callable[[threading.Event], T]) -> T:
    """``work(cancel)`` in a worker thread; ``grant`` is released when the thread returns.

    If the caller is cancelled (a handler timeout, a shutdown), ``cancel`` is set and the
    ``CancelledError`` propagates at once; the slot stays held until the thread really ends.
    """
    cancel = threading.Event()
    try:
        future = asyncio.get_running_loop().run_in_executor(None, work, cancel)
    except BaseException:
        grant.release()
        raise
    future.add_done_callback(lambda done: _settle(grant, done))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _settle(grant: Grant, done: asyncio.Future[object]) -> None:
    # Runs on the loop once the thread has returned (or raised): only now is the slot free.
    grant.release()
    if not done.cancelled():
        done.exception()  # retrieved, so an abandoned failure is not reported as "never retrieved"
