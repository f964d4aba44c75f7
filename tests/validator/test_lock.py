"""One validator per work dir: a second one is refused; a dead holder (even kill -9) is not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from crucible.protocol.errors import ConfigError
from crucible.validator.lock import WorkDirLock

HOLD = """
import sys, time
from crucible.validator.lock import WorkDirLock
with WorkDirLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_validator_on_the_same_work_dir_is_refused(tmp_path: Path) -> None:
    with WorkDirLock(tmp_path):
        with pytest.raises(ConfigError, match="another validator .* is running on") as info:
            with WorkDirLock(tmp_path):
                pass
        assert info.value.code == "work_dir_locked"
    with WorkDirLock(tmp_path):  # released on exit
        pass


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {proc.pid}"):
            WorkDirLock(tmp_path).__enter__()
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with WorkDirLock(tmp_path):
                break
        except ConfigError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
