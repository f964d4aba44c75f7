"""Fresh data releases: a content-addressed set of documents, in the corpus's own format.

A release is JSON lines, one ``{"id": …, "text": …}`` document per line, sorted by id, UTF-8; its
id is the sha256 of those bytes. ``build_release`` makes one from a folder of text files (one
document per ``*.txt``, its id the relative path) and ``*.jsonl`` files (records with ``id`` and
``text``). ``parse_release`` is what every validator runs on bytes fetched from anywhere: size
first (before reading on), then the hash, then every line — exactly two string fields, a bounded
id, no duplicate ids, a bounded number of documents. Nothing in a release is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from crucible.corpus.sources import Document
from crucible.protocol.errors import DataError

__all__ = ["MAX_ID_CHARS", "build_release", "encode_release", "parse_release", "release_id"]

MAX_ID_CHARS = 200
_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


def encode_release(documents: list[Document]) -> bytes:
    ids = [d.doc_id for d in documents]
    if len(set(ids)) != len(ids):
        raise DataError("two documents of the release share an id", code="release_malformed")
    lines = [
        json.dumps({"id": d.doc_id, "text": d.text}, ensure_ascii=False, sort_keys=True)
        for d in sorted(documents, key=lambda d: d.doc_id)
    ]
    return ("\n".join(lines) + "\n").encode()


def release_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _read_folder(folder: Path) -> list[Document]:
    documents = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".txt":
            documents.append(Document(rel.removesuffix(".txt"), path.read_text(encoding="utf-8")))
        elif path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    documents.append(_document(json.loads(line), f"{rel}:{n}"))
    return documents


def build_release(folder: Path) -> bytes:
    """A release from a folder of ``*.txt`` and ``*.jsonl`` files (others are not part of it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder", code="release_malformed")
    try:
        documents = _read_folder(folder)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"a file under {folder} is not UTF-8 text or JSON lines: {exc}",
            code="release_malformed",
        ) from exc
    if not documents:
        raise DataError(f"no *.txt or *.jsonl documents under {folder}", code="release_empty")
    return encode_release(documents)


def _document(record: object, where: str) -> Document:
    if not isinstance(record, dict) or set(record) != {"id", "text"}:
        raise DataError(
            f"{where}: a document is exactly {{'id', 'text'}}", code="release_malformed"
        )
    doc_id, text = record["id"], record["text"]
    if not isinstance(doc_id, str) or not _ID.match(doc_id):
        raise DataError(
            f"{where}: a document id is 1–{MAX_ID_CHARS} printable characters",
            code="release_malformed",
        )
    if not isinstance(text, str) or not text:
        raise DataError(
            f"{where}: a document's text is a non-empty string", code="release_malformed"
        )
    return Document(doc_id, text)


def parse_release(
    raw: bytes, expected_id: str, *, max_bytes: int, max_documents: int
) -> list[Document]:
    """The documents of a release, or a ``DataError`` saying what is wrong with it."""
    if len(raw) > max_bytes:
        raise DataError(
            f"the release is {len(raw)} bytes; the competition allows {max_bytes}",
            code="release_too_large",
        )
    if release_id(raw) != expected_id:
        raise DataError(
            f"the release hashes to {release_id(raw)[:16]}…, not the committed {expected_id[:16]}…",
            code="release_hash_mismatch",
        )
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"the release is not UTF-8: {exc}", code="release_malformed") from exc
    if len(lines) > max_documents:
        raise DataError(
            f"{len(lines)} documents; the competition allows {max_documents}",
            code="release_too_large",
        )
    documents = []
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DataError(f"line {n} is not JSON: {exc}", code="release_malformed") from exc
        documents.append(_document(record, f"line {n}"))
    if not documents:
        raise DataError("the release holds no document", code="release_empty")
    if len({d.doc_id for d in documents}) != len(documents):
        raise DataError("two documents of the release share an id", code="release_malformed")
    return documents
