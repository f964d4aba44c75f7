"""A store of signed documents (score bundles) named by their content id:
``root/<kind>/<id>.json``, written atomically, sizes bounded both ways.

The store only keeps bytes: whether they are what their name says (the id is the hash of the
unsigned content) and who signed them is the reader's to check (``validator.bundle.parse_bundle``),
so a document fetched from a store, a validator's endpoint or a stranger is checked the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

from crucible.protocol.errors import StoreError
from crucible.store.atomic import write_atomic

__all__ = ["BUNDLES", "MAX_DOCUMENT_BYTES", "DocumentStore"]

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
BUNDLES = "bundles"  # the kind validators publish their signed score bundles under
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class DocumentStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, kind: str, digest: str) -> Path:
        if not _KIND.match(kind) or not _DIGEST.match(digest):
            raise StoreError(f"{kind}/{digest[:70]!r} is not a document name", code="bad_ref")
        return self.root / kind / f"{digest}.json"

    def put(self, kind: str, digest: str, raw: bytes) -> Path:
        """Store ``raw`` under ``digest`` (the caller's content id; it need not be the raw
        bytes' sha256: a signed document is named by the hash of its unsigned content)."""
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise StoreError(f"a document is at most {MAX_DOCUMENT_BYTES} bytes", code="too_large")
        return write_atomic(self._path(kind, digest), raw)

    def has(self, kind: str, digest: str) -> bool:
        return self._path(kind, digest).is_file()

    def get(self, kind: str, digest: str) -> bytes:
        path = self._path(kind, digest)
        try:
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                raise StoreError(
                    f"{path.name} is over {MAX_DOCUMENT_BYTES} bytes", code="too_large"
                )
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no {kind} {digest[:16]}… in {self.root}", code="not_found") from None

    def newest(self, kind: str, count: int) -> list[str]:
        """The ``count`` most recently written documents of ``kind`` (digests), newest first."""
        folder = self.root / kind
        names = (
            [p for p in folder.glob("*.json") if _DIGEST.match(p.stem)] if folder.is_dir() else []
        )
        return [p.stem for p in sorted(names, key=lambda p: -p.stat().st_mtime_ns)[:count]]
