"""A content-addressed model store in a folder: ``objects/<content_hash>/`` (shareable by path).

Writes are atomic (a temp dir inside the store, files fsynced, renamed into place), so a killed
process leaves either nothing or a whole object; reads verify the content hash again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from protocol.errors import StoreError
from store.atomic import fsync_file
from store.base import StoredModel
from store.hashing import content_hash

__all__ = ["LocalStore"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _copy_tree_synced(src: Path, dest: Path) -> int:
    total = 0
    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            raise StoreError(f"{path} is a symlink; refusing it", code="symlink_refused")
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        fsync_file(target)
        total += target.stat().st_size
    return total


class LocalStore:
    ref = "local"

    def __init__(self, root: Path, *, max_bytes: int = 2 * 1024**3) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    def _check_source(self, model_dir: Path) -> int:
        total = 0
        for path in Path(model_dir).rglob("*"):
            if path.name.endswith(PICKLE_SUFFIXES):
                raise StoreError(
                    f"{path.name}: pickle files are refused; safetensors only",
                    code="pickle_refused",
                )
            if path.is_file():
                total += path.stat().st_size
        if total > self.max_bytes:
            raise StoreError(
                f"model is {total} bytes; this store takes at most {self.max_bytes}",
                code="too_large",
            )
        return total

    def put(self, model_dir: Path) -> StoredModel:
        size = self._check_source(model_dir)
        digest = content_hash(model_dir)
        final = self.objects / digest
        if final.is_dir() and content_hash(final) == digest:
            return StoredModel(self.ref, digest, digest, size)
        self.objects.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.objects, prefix=".incoming-"))
        try:
            _copy_tree_synced(Path(model_dir), tmp)
            if content_hash(tmp) != digest:
                raise StoreError(
                    "the model changed while it was being stored", code="hash_mismatch"
                )
            if final.exists():
                shutil.rmtree(final)  # a corrupted object: replace it
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return StoredModel(self.ref, digest, digest, size)

    def exists(self, ref: str, revision: str) -> bool:
        return ref == self.ref and (self.objects / revision).is_dir()

    def get(self, ref: str, revision: str, dest_dir: Path) -> Path:
        if ref != self.ref:
            raise StoreError(f"this store holds 'local' models, not {ref!r}", code="wrong_store")
        source = self.objects / revision
        if not source.is_dir() or "/" in revision or revision.startswith("."):
            raise StoreError(
                f"model {revision[:16]}… is not in the store at {self.root}", code="not_found"
            )
        dest_dir = Path(dest_dir)
        final = dest_dir / revision
        if final.is_dir() and content_hash(final) == revision:
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
                )
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
