"""Content hash of a model directory: sha256 over the sorted ``path:sha256`` lines of its files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from protocol.errors import StoreError

__all__ = ["content_hash", "file_sha256"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(directory: Path) -> str:
    directory = Path(directory)
    lines = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise StoreError(
                f"{path} is a symlink; a model directory holds plain files only",
                code="symlink_refused",
            )
        if path.is_file():
            lines.append(f"{path.relative_to(directory).as_posix()}:{file_sha256(path)}\n")
    if not lines:
        raise StoreError(f"{directory} holds no files", code="empty_model")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
