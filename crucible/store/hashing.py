"""Content hash of a model directory, and the hotkey-bound secure hash.

``content_hash(dir)`` is defined as::

    sha256( "".join(sorted(f"{relative_posix_path}:{sha256_hex(file)}\n" for every regular file)) )

as lowercase hex. Only the relative paths and bytes of the files count (not where the directory
lives, timestamps, permissions or the order the filesystem lists them); empty directories do not
count. A symlink, a special file (fifo, socket, device) or a file name holding a newline anywhere
in the tree raises ``StoreError`` instead of being followed or hashed, so the hash always names
exactly the bytes a loader would read.

``secure_hash`` is the commitment's binding of a content hash to a hotkey; it is re-exported from
``protocol.commitment`` so there is one definition (the chain limits a commitment to 128 bytes, so
it is the first 32 hex digits of ``sha256(content_hash + hotkey)``).
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from crucible.protocol.commitment import secure_hash
from crucible.protocol.errors import StoreError

__all__ = ["content_hash", "file_sha256", "model_files", "secure_hash"]

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(directory: Path) -> list[Path]:
    """Every regular file under ``directory``, sorted; refuses symlinks and special files."""
    directory = Path(directory)
    if not directory.is_dir() or directory.is_symlink():
        raise StoreError(f"{directory} is not a directory", code="not_found")
    files = []
    for path in sorted(directory.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise StoreError(
                f"{path} is a symlink; a model directory holds plain files only",
                code="symlink_refused",
            )
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise StoreError(f"{path} is not a regular file", code="bad_file")
        if "\n" in path.name:
            raise StoreError(f"{path!r}: a file name may not hold a newline", code="bad_file")
        files.append(path)
    return files


def content_hash(directory: Path) -> str:
    """The content hash of a model directory (see the module docstring for the definition)."""
    directory = Path(directory)
    lines = sorted(
        f"{path.relative_to(directory).as_posix()}:{file_sha256(path)}\n"
        for path in model_files(directory)
    )
    if not lines:
        raise StoreError(f"{directory} holds no files", code="empty_model")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
