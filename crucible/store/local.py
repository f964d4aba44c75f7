"""A content-addressed model store in a folder: ``root/objects/<content_hash>/`` (shareable by path).

* ``put`` checks the model (safetensors only, no symlinks, at most ``max_bytes``), copies it into a
  temp dir inside the store (``objects/.incoming-*``), fsyncs every file and directory, checks the
  copy's hash and renames it into place with ``os.replace``. A process killed at any point leaves
  either no object or a whole one; a stray ``.incoming-*`` dir is ignored by later puts and gets.
  Putting the same content again reuses the object. The revision is the content hash; ref ``local``.
* ``get`` first sizes the object from the file system (no reading) and refuses one over the
  caller's ``max_bytes`` (``too_large``) or holding a file outside ``allowed_files``
  (``unexpected_file``), copying nothing; then it copies the object into a temp dir inside
  ``dest_dir``, re-verifies the content hash against the revision (``StoreError(code=
  "hash_mismatch")`` for a tampered or corrupt object, leaving nothing behind) and renames it to
  ``dest_dir/<revision>``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path

from crucible.protocol.errors import StoreError
from crucible.store.atomic import fsync_file
from crucible.store.base import (
    DEFAULT_MAX_BYTES,
    PICKLE_SUFFIXES,
    StoredModel,
    check_file_name,
    check_model_dir,
)
from crucible.store.hashing import content_hash, model_files

__all__ = ["PICKLE_SUFFIXES", "LocalStore"]

_CONTENT_HASH = re.compile(r"^[0-9a-f]{64}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_tree_synced(src: Path, dest: Path) -> int:
    """Copy the regular files of ``src`` into the existing ``dest``; fsync files and dirs."""
    total = 0
    dirs = {dest}
    for path in model_files(src):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        fsync_file(target)
        total += target.stat().st_size
        parent = target.parent
        while parent not in dirs:
            dirs.add(parent)
            parent = parent.parent
    for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        _fsync_dir(directory)
    return total


def _install(tmp: Path, final: Path, digest: str) -> None:
    """Rename the verified ``tmp`` to ``final``; a whole valid object already there wins."""
    if final.exists() and not _holds(final, digest):
        shutil.rmtree(final)  # a corrupt or partial leftover: replace it
    try:
        os.replace(tmp, final)
    except OSError:
        if not _holds(final, digest):  # someone else installed it concurrently: fine if valid
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(final.parent)


def _holds(directory: Path, digest: str) -> bool:
    try:
        return directory.is_dir() and content_hash(directory) == digest
    except StoreError:
        return False


class LocalStore:
    ref = "local"

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    def _object(self, ref: str, revision: str) -> Path:
        if ref != self.ref:
            raise StoreError(f"this store holds 'local' models, not {ref!r}", code="wrong_store")
        if not _CONTENT_HASH.match(revision):
            raise StoreError(
                f"{revision[:80]!r} is not a content hash (64 lowercase hex)", code="bad_ref"
            )
        return self.objects / revision

    def put(self, model_dir: Path) -> StoredModel:
        model_dir = Path(model_dir)
        size = check_model_dir(model_dir, self.max_bytes)
        digest = content_hash(model_dir)
        final = self.objects / digest
        if _holds(final, digest):
            return StoredModel(self.ref, digest, digest, size)
        self.objects.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.objects, prefix=".incoming-"))
        try:
            _copy_tree_synced(model_dir, tmp)
            if content_hash(tmp) != digest:
                raise StoreError(
                    "the model changed while it was being stored; store it again",
                    code="hash_mismatch",
                )
            _install(tmp, final, digest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return StoredModel(self.ref, digest, digest, size)

    def exists(self, ref: str, revision: str) -> bool:
        try:
            return self._object(ref, revision).is_dir()
        except StoreError:
            return False

    def get(
        self,
        ref: str,
        revision: str,
        dest_dir: Path,
        *,
        max_bytes: int,
        allowed_files: Collection[str] | None = None,
    ) -> Path:
        source = self._object(ref, revision)
        if not source.is_dir():
            raise StoreError(
                f"model {revision[:16]}… is not in the store at {self.root}", code="not_found"
            )
        for path in model_files(source):
            check_file_name(path.relative_to(source).as_posix(), allowed_files)
        check_model_dir(source, max_bytes)  # sizes from the file system: nothing is read yet
        dest_dir = Path(dest_dir)
        final = dest_dir / revision
        if _holds(final, revision):
            return final
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".fetch-"))
        try:
            _copy_tree_synced(source, tmp)
            actual = content_hash(tmp)
            if actual != revision:
                raise StoreError(
                    f"stored model {revision[:16]}… has content {actual[:16]}…: the store is corrupt",
                    code="hash_mismatch",
                    fix=f"delete {source} and publish the model again",
                )
            _install(tmp, final, revision)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
