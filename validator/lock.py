"""One validator process per work dir: an exclusive ``flock`` on ``work_dir/lock``.

Two processes writing one ``state.json`` would interleave EMA updates and reveals. The lock is
held for the life of ``crucible-validator run`` and released by the kernel if the process dies
(even by ``kill -9``), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from crucible.protocol.errors import ConfigError

__all__ = ["WorkDirLock"]


class WorkDirLock:
    def __init__(self, work_dir: Path) -> None:
        self.path = Path(work_dir) / "lock"
        self._fd: int | None = None

    def __enter__(self) -> WorkDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"another validator (pid {holder}) is running on {self.path.parent}",
                code="work_dir_locked",
                fix="stop it first, or give this one its own --work-dir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
