"""Files that survive a crash: written to a temp file beside the target, fsynced, renamed over it.

A reader sees the old content or the new, never half of either, even after ``kill -9`` or a power
loss (the directory entry is fsynced too).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["fsync_file", "write_atomic"]


def fsync_file(path: Path) -> None:
    with Path(path).open("rb") as handle:
        os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path
