"""A web-scale sharded parquet corpus read by random access: a round costs megabytes, not the corpus.

A competition whose data is a public corpus far too large to memorize (FineWeb-style pages) names
it with ``DataSource(kind="sharded", location=..., pattern=..., text_column=..., id_column=...)``:

* ``hf://datasets/<org>/<name>@<commit>[/<folder>]`` — a Hub dataset pinned to a 40-hex commit (a
  branch moves; validators must all read the same bytes), read through
  ``huggingface_hub.HfFileSystem`` with one HTTP range request per read (no read-ahead cache);
* a local folder laid out like one (``data/train-00000-of-00008.parquet`` …), absolute or
  relative to ``base_dir``.

``open_sharded`` lists the shards once (sorted by path, pattern-matched, at most
``max_shards``). ``pick`` then draws, from the round seed alone, a shard uniformly and a row
group of it uniformly, reads **only that shard's footer and that row group's column chunks** of
the text (and id) column, and takes ``rows_per_row_group`` rows of it in a seed-determined
order; it repeats until it has ``count`` documents or has drawn ``max_row_groups`` row groups.
Every draw is a sha256 of the seed (no RNG library whose stream could change between versions),
so every validator gets the same documents for the same seed.

Hostile input: a shard that is not parquet, has a footer out of bounds or pages that do not
decode, lacks a column, or holds a non-string text column is a ``DataError`` naming the shard
(``ShardUnreachable``, transient, when the bytes could not be fetched at all). An oversized row
group and a row that is null, empty, oversized, not UTF-8, or has a null, oversized or repeated
id are skipped and counted in ``Picked.skipped``. Sizes are checked in the footer before a byte
of the row group is read, and a per-pick byte budget caps the total whatever the footers claim.
(What pyarrow allocates for one page is bounded by that page's header, which no footer check can
see; the row-group limits bound every honest file.)
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crucible.corpus.sources import Document
from crucible.protocol.competition import DataSource
from crucible.protocol.errors import CrucibleError, DataError

__all__ = [
    "Picked",
    "Shard",
    "ShardFileSystem",
    "ShardLimits",
    "ShardUnreachable",
    "ShardedCorpus",
    "open_sharded",
    "parse_location",
    "pick",
    "pick_documents",
]

MAGIC = b"PAR1"
_HUB = re.compile(
    r"^hf://datasets/(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})"
    r"(?:@(?P<revision>[^/]*))?(?P<folder>(?:/[\w.-]+)*)/?$"
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_GLOB_MAGIC = re.compile(r"[*?\[\]{}]")


class ShardUnreachable(DataError):
    """The shard's bytes could not be listed or fetched (network, file system): nothing is known
    to be wrong with the corpus, so a later round may succeed."""

    code = "shard_unreachable"
    transient = True


class ShardFileSystem(Protocol):
    """What ``open_sharded`` and ``pick`` need of a file system (fsspec's local and Hub ones)."""

    def glob(self, path: str, **kwargs: Any) -> Any: ...  # detail=True: {path: {"size", "type"}}

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> BinaryIO: ...


@dataclass(frozen=True)
class ShardLimits:
    """Bounds on what one corpus and one pick may cost; every default fits an honest FineWeb-style
    corpus (~1,000 pages per row group, footers of a few hundred KB)."""

    max_shards: int = 100_000
    max_footer_bytes: int = 16 << 20
    max_row_group_rows: int = 200_000
    max_row_group_bytes: int = 128 << 20  # the text (and id) column chunks, compressed or not
    max_document_bytes: int = 1 << 20  # longer pages are skipped
    max_id_chars: int = 256
    max_documents: int = 100_000  # per pick
    rows_per_row_group: int = 8  # documents taken from each row group read
    max_row_groups: int = 256  # row groups drawn per pick, read or not
    max_pick_bytes: int = 512 << 20  # every byte read by one pick, footers included


@dataclass(frozen=True)
class Shard:
    name: str  # path relative to the corpus root, "/"-separated: what document ids name
    path: str  # what the file system opens
    size_bytes: int


@dataclass(frozen=True)
class ShardedCorpus:
    location: str
    shards: tuple[Shard, ...]
    text_column: str
    id_column: str | None
    filesystem: ShardFileSystem = field(repr=False, compare=False)
    open_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    limits: ShardLimits = ShardLimits()


@dataclass(frozen=True)
class Picked:
    """One pick's documents and its evidence: which row groups were read, what was skipped."""

    documents: tuple[Document, ...]
    row_groups: tuple[tuple[str, int], ...]  # (shard name, row group index), in reading order
    skipped: dict[str, int]  # reason -> rows (or row groups) skipped
    bytes_read: int


def parse_location(location: str, base_dir: Path | None = None) -> tuple[str, str]:
    """``("hub", "datasets/<org>/<name>@<commit>[/<folder>]")`` or ``("local", "/abs/folder")``."""
    if not location or any(ord(c) < 32 or ord(c) == 127 for c in location):
        raise DataError(
            f"sharded location {location!r} is empty or holds control characters",
            code="bad_sharded_location",
        )
    if location.startswith("hf://"):
        match = _HUB.match(location)
        if match is None:
            raise DataError(
                f"sharded location {location!r} is not hf://datasets/<org>/<name>@<commit>",
                code="bad_sharded_location",
            )
        revision = match["revision"]
        if revision is None or not _COMMIT.match(revision):
            raise DataError(
                f"sharded location {location!r} is not pinned to a commit (got revision "
                f"{revision!r}): a branch can move, and validators must all read the same bytes",
                code="bad_sharded_location",
                fix="append @<40-hex commit sha> to the dataset name",
            )
        folder = match["folder"] or ""
        if ".." in folder.split("/"):
            raise DataError(f"sharded location {location!r} climbs out of the dataset")
        return "hub", f"datasets/{match['repo']}@{revision}{folder}"
    if "://" in location:
        raise DataError(
            f"sharded location {location!r}: only hf://datasets/... and local folders are read",
            code="bad_sharded_location",
        )
    folder = Path(location.removeprefix("file:"))
    folder = (Path(base_dir) / folder if base_dir is not None else folder).resolve()
    if _GLOB_MAGIC.search(str(folder)):
        raise DataError(
            f"sharded folder {folder} has glob characters in its path", code="bad_sharded_location"
        )
    return "local", folder.as_posix()


def _default_filesystem(kind: str) -> tuple[ShardFileSystem, dict[str, Any]]:
    if kind == "hub":
        from huggingface_hub import HfFileSystem

        # no read-ahead: each read is one range request for exactly the bytes pyarrow asks for
        return HfFileSystem(), {"block_size": 1 << 20, "cache_type": "none"}
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(), {}


def _check_pattern(pattern: str) -> None:
    if pattern.startswith("/") or ".." in pattern.split("/") or "\\" in pattern:
        raise DataError(
            f"shard pattern {pattern!r} must be relative to the corpus root",
            code="bad_sharded_location",
        )


def open_sharded(
    source: DataSource,
    *,
    filesystem: ShardFileSystem | None = None,
    base_dir: Path | None = None,
    limits: ShardLimits = ShardLimits(),
) -> ShardedCorpus:
    """List the shards of a ``sharded`` source (one listing; no shard is opened)."""
    if source.kind != "sharded" or source.location is None:
        raise DataError(f"a {source.kind} data source is not a sharded corpus")
    _check_pattern(source.pattern)
    kind, root = parse_location(source.location, base_dir)
    options: dict[str, Any] = {}
    if filesystem is None:
        filesystem, options = _default_filesystem(kind)
    try:
        listing = filesystem.glob(f"{root}/{source.pattern}", detail=True)
    except CrucibleError:
        raise
    except Exception as exc:  # each file system raises its own types; one typed error here
        raise ShardUnreachable(
            f"cannot list the shards of {source.location}: {type(exc).__name__}: {exc}"
        ) from exc
    shards = _shards(listing, root, source.location, limits)
    return ShardedCorpus(
        source.location, shards, source.text_column, source.id_column, filesystem, options, limits
    )


def _shards(listing: Any, root: str, location: str, limits: ShardLimits) -> tuple[Shard, ...]:
    items = listing.items() if isinstance(listing, Mapping) else ((p, {}) for p in listing)
    shards = []
    for path, info in items:
        if len(shards) > limits.max_shards:
            break
        info = info if isinstance(info, Mapping) else {}
        name = str(path).removeprefix(root + "/")
        if info.get("type", "file") != "file" or name == str(path):
            continue  # a folder, or (never from a glob of the root) a path outside it
        size = info.get("size")
        shards.append(Shard(name, str(path), size if isinstance(size, int) else -1))
    if not shards:
        raise DataError(
            f"no shard of {location} matches its pattern", code="no_shards",
            fix="check the location, the revision and the data source's pattern",
        )  # fmt: skip
    if len(shards) > limits.max_shards:
        raise DataError(
            f"{location} has more than {limits.max_shards} shards", code="too_many_shards"
        )
    return tuple(sorted(shards, key=lambda s: s.name))


# ---- reading ------------------------------------------------------------------------------


class _Budget:
    """Bytes read by one pick, against its cap."""

    def __init__(self, cap: int) -> None:
        self.cap, self.used = cap, 0

    def spend(self, count: int, shard: str) -> None:
        if self.used + count > self.cap:
            raise DataError(
                f"reading {count} more bytes of shard {shard} would pass this pick's budget of "
                f"{self.cap} bytes ({self.used} read)",
                code="pick_budget",
            )
        self.used += count


class _ShardFile(io.RawIOBase):
    """The shard's file handed to pyarrow: every read is counted against the budget, and a
    failure of the file system itself becomes ``ShardUnreachable`` (pyarrow re-raises a Python
    file's own exception, so it is never mistaken for a corrupt shard)."""

    def __init__(self, handle: BinaryIO, shard: Shard, budget: _Budget) -> None:
        super().__init__()
        self._handle, self._shard, self._budget = handle, shard, budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:  # from the end: the listed size, never a probe of the remote file
            offset, whence = self._shard.size_bytes + offset, 0
        return self._io(lambda: self._handle.seek(offset, whence))

    def tell(self) -> int:
        return self._io(self._handle.tell)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._shard.size_bytes - self.tell())
        self._budget.spend(size, self._shard.name)
        return self._io(lambda: self._handle.read(size))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read_at(self, offset: int, size: int) -> bytes:
        self.seek(offset)
        data = self.read(size)
        if len(data) != size:
            raise _corrupt(self._shard, f"it ended after {offset + len(data)} bytes")
        return data

    def _io(self, call: Any) -> Any:
        try:
            return call()
        except CrucibleError:
            raise
        except Exception as exc:  # the file system's own error types, whatever they are
            raise ShardUnreachable(
                f"cannot read shard {self._shard.name}: {type(exc).__name__}: {exc}"
            ) from exc


def _corrupt(shard: Shard, why: str, row_group: int | None = None) -> DataError:
    where = f"row group {row_group} of " if row_group is not None else ""
    return DataError(f"{where}shard {shard.name} is not a readable parquet file: {why}",
                     code="shard_corrupt")  # fmt: skip


@dataclass(frozen=True)
class _Footer:
    metadata: pq.FileMetaData
    columns: dict[str, int]  # the columns a pick reads -> their leaf index
    data_end: int  # where the footer starts: every column chunk lies before it


def _read_footer(file: _ShardFile, shard: Shard, corpus: ShardedCorpus) -> _Footer:
    """The footer alone: its 8-byte trailer, then exactly the metadata it announces (bounded)."""
    limits = corpus.limits
    if shard.size_bytes < 0:
        raise _corrupt(shard, "the file system's listing gave no size for it")
    if shard.size_bytes < 12:
        raise _corrupt(shard, f"it is {shard.size_bytes} bytes long")
    trailer = file.read_at(shard.size_bytes - 8, 8)
    length = int.from_bytes(trailer[:4], "little")
    if trailer[4:] != MAGIC:
        raise _corrupt(
            shard, f"it ends in {trailer[4:]!r}, not {MAGIC!r} (encrypted or not parquet)"
        )
    if length > limits.max_footer_bytes or length > shard.size_bytes - 12:
        raise _corrupt(shard, f"its footer claims {length} bytes (limit {limits.max_footer_bytes})")
    raw = file.read_at(shard.size_bytes - 8 - length, length)
    try:  # parsed from memory: the leading magic only makes the buffer look like a file
        parsed = pq.ParquetFile(
            pa.BufferReader(MAGIC + raw + trailer),
            thrift_string_size_limit=limits.max_footer_bytes,
            thrift_container_size_limit=limits.max_footer_bytes // 4,
        )
        metadata, schema = parsed.metadata, parsed.schema_arrow
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise _corrupt(shard, f"its footer does not parse ({exc})") from exc
    columns = {corpus.text_column: _column(schema, metadata, corpus.text_column, shard, text=True)}
    if corpus.id_column is not None:
        columns[corpus.id_column] = _column(schema, metadata, corpus.id_column, shard, text=False)
    return _Footer(metadata, columns, shard.size_bytes - 8 - length)


def _column(
    schema: pa.Schema, metadata: pq.FileMetaData, name: str, shard: Shard, *, text: bool
) -> int:
    if schema.get_field_index(name) < 0:
        shown = ", ".join(schema.names[:20])
        raise DataError(
            f"shard {shard.name} has no column {name!r} (it has: {shown})",
            code="shard_schema", fix="set the data source's text_column / id_column",
        )  # fmt: skip
    kind = schema.field(name).type
    strings = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    strings = strings or pa.types.is_string_view(kind)
    if not (strings or (not text and pa.types.is_integer(kind))):
        wanted = "a string" if text else "a string or an integer"
        raise DataError(
            f"column {name!r} of shard {shard.name} is {kind}, not {wanted}", code="shard_schema"
        )
    leaves = [i for i in range(metadata.num_columns) if metadata.schema.column(i).path == name]
    if len(leaves) != 1:
        raise _corrupt(shard, f"column {name!r} is not one top-level leaf")
    return leaves[0]


def _row_group_fits(footer: _Footer, index: int, shard: Shard, limits: ShardLimits) -> bool:
    """Whether the row group is within the limits, from its footer entry alone; a column chunk
    outside the file is a corrupt shard."""
    total, unpacked = 0, 0
    for leaf in footer.columns.values():
        try:
            group = footer.metadata.row_group(index)
            chunk = group.column(leaf)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else None
            start = start if start is not None else chunk.data_page_offset
            size, rows = chunk.total_compressed_size, group.num_rows
        except (pa.ArrowException, IndexError, ValueError) as exc:
            raise _corrupt(shard, f"its footer entry does not parse ({exc})", index) from exc
        if start < len(MAGIC) or size < 0 or start + size > footer.data_end:
            raise _corrupt(shard, f"a column chunk lies outside the file ({start}+{size})", index)
        total, unpacked = total + size, unpacked + max(0, chunk.total_uncompressed_size)
    rows_ok = 0 <= rows <= limits.max_row_group_rows
    return rows_ok and max(total, unpacked) <= limits.max_row_group_bytes


def _read_row_group(file: _ShardFile, footer: _Footer, index: int, shard: Shard) -> pa.Table:
    """Only the row group's chunks of the pick's columns (the footer is not read again)."""
    try:
        reader = pq.ParquetFile(file, metadata=footer.metadata, buffer_size=0, pre_buffer=False)
        table = reader.read_row_group(index, columns=list(footer.columns), use_threads=False)
    except CrucibleError:
        raise
    except (pa.ArrowException, OSError, ValueError, IndexError, EOFError) as exc:
        raise _corrupt(shard, f"{type(exc).__name__}: {exc}", index) from exc
    if table.num_rows != footer.metadata.row_group(index).num_rows:
        raise _corrupt(shard, "it decoded to another number of rows than it declares", index)
    return table


# ---- picking ------------------------------------------------------------------------------


def _draw(seed: int, label: str, bound: int) -> int:
    """A uniform integer in [0, bound) from the seed and a label (bias < bound / 2**64)."""
    digest = hashlib.sha256(f"crucible-sharded-v1:{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % bound


def _row_order(seed: int, shard: str, index: int, rows: int) -> list[int]:
    def key(row: int) -> bytes:
        return hashlib.blake2b(f"{seed}:{shard}#{index}/{row}".encode(), digest_size=8).digest()

    return sorted(range(rows), key=key)


@dataclass
class _Pick:
    """What a pick accumulates; local to one ``pick`` call."""

    wanted: int
    documents: list[Document] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)


def _row_document(
    table: pa.Table, lengths: pa.ChunkedArray, row: int, default_id: str, corpus: ShardedCorpus,
    state: _Pick,
) -> Document | str:  # fmt: skip
    """The row as a document, or why it is skipped."""
    limits = corpus.limits
    size = lengths[row].as_py()
    if size is None:
        return "null text"
    if size > limits.max_document_bytes:
        return "oversized text"
    doc_id = default_id
    if corpus.id_column is not None:
        value = table.column(corpus.id_column)[row].as_py()
        if value is None:
            return "null id"
        doc_id = str(value)
        if len(doc_id) > limits.max_id_chars:
            return "oversized id"
    if doc_id in state.ids:
        return "duplicate id"
    try:
        text = table.column(corpus.text_column)[row].as_py()
    except UnicodeDecodeError:
        return "text not UTF-8"
    return Document(doc_id, text) if text.strip() else "empty text"


def _take_rows(
    table: pa.Table, shard: Shard, index: int, corpus: ShardedCorpus, seed: int, state: _Pick
) -> None:
    """Up to ``rows_per_row_group`` usable rows of one row group, in the seed's order."""
    texts = table.column(corpus.text_column)
    if pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.large_string())
    lengths = pc.binary_length(texts)  # bytes, checked before a row becomes a Python string
    quota = min(corpus.limits.rows_per_row_group, state.wanted - len(state.documents))
    taken = 0
    for row in _row_order(seed, shard.name, index, table.num_rows):
        if taken == quota:
            break
        doc = _row_document(table, lengths, row, f"{shard.name}#{index}/{row}", corpus, state)
        if isinstance(doc, str):
            state.skipped[doc] += 1
            continue
        state.documents.append(doc)
        state.ids.add(doc.doc_id)
        taken += 1


def _footer(
    corpus: ShardedCorpus, shard: Shard, budget: _Budget, footers: dict[str, _Footer]
) -> _Footer:
    if shard.name not in footers:
        with _opened(corpus, shard, budget) as file:
            footers[shard.name] = _read_footer(file, shard, corpus)
    return footers[shard.name]


def pick(corpus: ShardedCorpus, seed: int, count: int) -> Picked:
    """``count`` documents (fewer only if ``max_row_groups`` draws did not yield them) from row
    groups the seed picks; see the module docstring. ``DataError`` when none is usable."""
    limits = corpus.limits
    if not 1 <= count <= limits.max_documents:
        raise DataError(f"cannot pick {count} documents (1 to {limits.max_documents})")
    budget, state = _Budget(limits.max_pick_bytes), _Pick(count)
    footers: dict[str, _Footer] = {}
    drawn: set[tuple[str, int]] = set()
    read: list[tuple[str, int]] = []
    for draw in range(limits.max_row_groups):
        if len(state.documents) >= count:
            break
        shard = corpus.shards[_draw(seed, f"shard:{draw}", len(corpus.shards))]
        footer = _footer(corpus, shard, budget, footers)
        if footer.metadata.num_row_groups == 0:
            state.skipped["empty shard"] += 1
            continue
        index = _draw(seed, f"row-group:{draw}", footer.metadata.num_row_groups)
        if (shard.name, index) in drawn:
            continue  # drawn before: its rows were already considered
        drawn.add((shard.name, index))
        if not _row_group_fits(footer, index, shard, limits):
            state.skipped["oversized row group"] += 1
            continue
        read.append((shard.name, index))
        with _opened(corpus, shard, budget) as file:
            table = _read_row_group(file, footer, index, shard)
        _take_rows(table, shard, index, corpus, seed, state)
    if not state.documents:
        raise DataError(
            f"no usable document in {len(drawn)} row groups of {corpus.location} "
            f"(skipped: {dict(state.skipped) or 'nothing'})",
            code="no_documents",
        )
    return Picked(tuple(state.documents), tuple(read), dict(state.skipped), budget.used)


def pick_documents(corpus: ShardedCorpus, seed: int, count: int) -> list[Document]:
    """The documents of ``pick`` (its evidence dropped)."""
    return list(pick(corpus, seed, count).documents)


@contextmanager
def _opened(corpus: ShardedCorpus, shard: Shard, budget: _Budget) -> Iterator[_ShardFile]:
    """The shard's file system handle, wrapped for counting; closed on exit."""
    try:
        handle = corpus.filesystem.open(shard.path, "rb", **corpus.open_options)
    except Exception as exc:  # the file system's own error types, whatever they are
        raise ShardUnreachable(
            f"cannot open shard {shard.name}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        yield _ShardFile(handle, shard, budget)
    finally:
        handle.close()
