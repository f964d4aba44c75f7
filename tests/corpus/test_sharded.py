"""The sharded corpus: random access to a folder laid out like a Hub dataset, generated here.

The corpus is 8 shards (``data/train-0000i-of-00008.parquet``) of 8 row groups of 32 rows; each
row's text starts with its own coordinates ("shard i group g row r."), so a test can check that a
document is the row its id names. File systems are the real local one, wrapped where a test must
see the byte ranges a pick asks for (the wire behaviour of the Hub's range reads).
"""

from __future__ import annotations

import io
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.competitions import specs_dir
from crucible.corpus.sharded import (
    ShardLimits,
    ShardUnreachable,
    open_sharded,
    parse_location,
    pick,
    pick_documents,
)
from crucible.corpus.sources import Document
from crucible.corpus.tokenizer import load_tokenizer
from crucible.protocol.competition import DataSource
from crucible.protocol.errors import DataError
from crucible.scoring.pools import pool_from_documents
from crucible.scoring.sampling import select_samples
from crucible.scoring.sources import sharded_pool

SHARDS, GROUPS, ROWS = 8, 8, 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORDS = [f"w{i:04x}" for i in range(4096)]


def _text(shard: int, group: int, row: int) -> str:
    rng = random.Random(f"{shard}/{group}/{row}")  # a string seed: stable across runs
    return f"shard {shard} group {group} row {row}. " + " ".join(rng.choices(WORDS, k=300))


def _shard_table(shard: int) -> pa.Table:
    coords = [(g, r) for g in range(GROUPS) for r in range(ROWS)]
    return pa.table(
        {
            "id": [f"doc-{shard}-{g}-{r}" for g, r in coords],
            "text": [_text(shard, g, r) for g, r in coords],
            "url": [f"https://example.org/{shard}/{g}/{r}/" + "x" * 200 for g, r in coords],
            "n": list(range(len(coords))),
        }
    )


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub-like")
    (root / "data").mkdir()
    for i in range(SHARDS):
        pq.write_table(
            _shard_table(i), root / "data" / f"train-{i:05d}-of-{SHARDS:05d}.parquet",
            row_group_size=ROWS,
        )  # fmt: skip
    (root / "README.md").write_text("a dataset card, not a shard\n")
    return root


def _source(location: Path | str, **kwargs: object) -> DataSource:
    return DataSource(kind="sharded", weight=1.0, location=str(location), **kwargs)


class RecordingFS:
    """The real local file system, recording each (path, offset, length) a reader fetches."""

    def __init__(self) -> None:
        self.fs = LocalFileSystem()
        self.reads: list[tuple[str, int, int]] = []

    def glob(self, path: str, **kwargs: object) -> object:
        return self.fs.glob(path, **kwargs)

    def open(self, path: str, mode: str = "rb", **kwargs: object) -> io.RawIOBase:
        return _RecordingFile(self.fs.open(path, mode, **kwargs), path, self.reads)


class _RecordingFile(io.RawIOBase):
    def __init__(self, handle, path: str, log: list) -> None:
        super().__init__()
        self.handle, self.path, self.log = handle, path, log

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def read(self, size: int = -1) -> bytes:
        start = self.handle.tell()
        data = self.handle.read(size)
        self.log.append((self.path, start, len(data)))
        return data

    def close(self) -> None:
        self.handle.close()
        super().close()


def _chunk_ranges(path: str, group: int, columns: set[str]) -> list[tuple[int, int]]:
    """The byte ranges of one row group's column chunks, from the file's own metadata."""
    meta = pq.read_metadata(path)
    out = []
    for j in range(meta.num_columns):
        chunk = meta.row_group(group).column(j)
        if chunk.path_in_schema in columns:
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else None
            start = start if start is not None else chunk.data_page_offset
            out.append((start, start + chunk.total_compressed_size))
    return out


def _footer_range(path: str) -> tuple[int, int]:
    raw = Path(path).read_bytes()
    length = int.from_bytes(raw[-8:-4], "little")
    return len(raw) - 8 - length, len(raw)


# ---- determinism and correctness --------------------------------------------------------


def test_same_seed_picks_the_same_documents(corpus_dir: Path) -> None:
    first = pick(open_sharded(_source(corpus_dir)), seed=1234, count=20)
    again = pick(open_sharded(_source(corpus_dir)), seed=1234, count=20)
    assert len(first.documents) == 20
    assert first.documents == again.documents
    assert first.row_groups == again.row_groups
    assert pick_documents(open_sharded(_source(corpus_dir)), 1234, 20) == list(first.documents)


def test_different_seeds_pick_different_documents(corpus_dir: Path) -> None:
    corpus = open_sharded(_source(corpus_dir))
    picks = [frozenset(d.doc_id for d in pick_documents(corpus, seed, 16)) for seed in range(6)]
    assert len(set(picks)) == 6
    assert all(len(a & b) < 16 for i, a in enumerate(picks) for b in picks[i + 1 :])


def test_each_document_is_the_row_its_id_names(corpus_dir: Path) -> None:
    picked = pick(open_sharded(_source(corpus_dir)), seed=7, count=24)
    for doc in picked.documents:
        match = re.fullmatch(r"data/train-(\d{5})-of-00008\.parquet#(\d+)/(\d+)", doc.doc_id)
        assert match, doc.doc_id
        shard, group, row = (int(x) for x in match.groups())
        assert doc.text == _text(shard, group, row)
        name = f"data/train-{shard:05d}-of-00008.parquet"
        assert (name, group) in picked.row_groups
    # at most rows_per_row_group (8) documents come from one row group
    per_group = Counter(d.doc_id.rsplit("/", 1)[0] for d in picked.documents)
    assert max(per_group.values()) <= ShardLimits().rows_per_row_group


def test_an_id_column_names_the_documents(corpus_dir: Path) -> None:
    docs = pick_documents(open_sharded(_source(corpus_dir, id_column="id")), 7, 24)
    for doc in docs:
        shard, group, row = (int(x) for x in doc.doc_id.removeprefix("doc-").split("-"))
        assert doc.text == _text(shard, group, row)


def test_shards_are_listed_sorted_and_matched_by_the_pattern(corpus_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    corpus = open_sharded(_source(corpus_dir))
    names = [s.name for s in corpus.shards]
    assert names == sorted(names) and len(names) == SHARDS
    assert all(n.startswith("data/train-") for n in names)  # README.md is not a shard
    assert all(s.size_bytes == (corpus_dir / s.name).stat().st_size for s in corpus.shards)
    one = open_sharded(_source(corpus_dir, pattern="data/train-00003-*.parquet"))
    assert [s.name for s in one.shards] == ["data/train-00003-of-00008.parquet"]
    with pytest.raises(DataError, match="more than 4 shards"):
        open_sharded(_source(corpus_dir), limits=ShardLimits(max_shards=4))
    with pytest.raises(DataError, match="no shard of"):
        open_sharded(_source(tmp_path))
    with pytest.raises(DataError, match="relative to the corpus root"):
        open_sharded(_source(corpus_dir, pattern="../**/*.parquet"))


def test_a_relative_folder_is_read_from_the_base_dir(corpus_dir: Path) -> None:
    corpus = open_sharded(_source("data"), base_dir=corpus_dir)
    assert [s.name for s in corpus.shards][0] == "train-00000-of-00008.parquet"


def test_shards_and_row_groups_are_drawn_uniformly(corpus_dir: Path) -> None:
    corpus = open_sharded(
        _source(corpus_dir), limits=ShardLimits(rows_per_row_group=1, max_row_groups=1)
    )
    draws = [pick(corpus, seed, 1).row_groups[0] for seed in range(800)]
    shards, groups = Counter(s for s, _ in draws), Counter(g for _, g in draws)
    # 100 expected per shard and per row group (sd 9.4): ±40 % is over 4 standard deviations
    assert len(shards) == SHARDS and all(60 <= n <= 140 for n in shards.values()), shards
    assert len(groups) == GROUPS and all(60 <= n <= 140 for n in groups.values()), groups


# ---- what a pick reads ------------------------------------------------------------------


@pytest.mark.parametrize("id_column", [None, "id"])
def test_only_the_chosen_row_groups_and_their_footers_are_read(
    corpus_dir: Path, id_column: str | None
) -> None:
    fs = RecordingFS()
    corpus = open_sharded(_source(corpus_dir, id_column=id_column), filesystem=fs)
    assert fs.reads == []  # listing opens no shard
    picked = pick(corpus, seed=99, count=16)
    columns = {"text"} | ({id_column} if id_column else set())
    allowed: dict[str, list[tuple[int, int]]] = {}
    for name, group in picked.row_groups:
        path = str(corpus_dir / name)
        allowed.setdefault(path, [_footer_range(path)]).extend(_chunk_ranges(path, group, columns))
    for path, start, length in fs.reads:
        assert any(lo <= start and start + length <= hi for lo, hi in allowed.get(path, [])), (
            f"read {path}[{start}:{start + length}] is neither a footer nor a chosen chunk"
        )
    for name, group in picked.row_groups:  # every chosen chunk was read, whole
        path = str(corpus_dir / name)
        for lo, hi in _chunk_ranges(path, group, columns):
            assert any(p == path and s == lo and s + n == hi for p, s, n in fs.reads)
    total = sum(f.stat().st_size for f in (corpus_dir / "data").iterdir())
    read = sum(n for _, _, n in fs.reads)
    assert read == picked.bytes_read
    assert read < total / 15, (read, total)  # 2 of 64 row groups, and only their text (and id)


def test_a_pick_stops_at_its_byte_budget(corpus_dir: Path) -> None:
    corpus = open_sharded(_source(corpus_dir), limits=ShardLimits(max_pick_bytes=20_000))
    with pytest.raises(DataError, match="pass this pick's budget of 20000 bytes"):
        pick(corpus, seed=1, count=64)


# ---- hostile shards -------------------------------------------------------------------------


def _one_shard(folder: Path, table: pa.Table, **write: object) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / "train-00000-of-00001.parquet"
    pq.write_table(table, path, **write)
    return path


@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"", "it is 0 bytes long"),
        (b"not a parquet file at all, just text", "not b'PAR1'"),
        (b"PAR1" + b"\0" * 32 + (10**6).to_bytes(4, "little") + b"PAR1", "footer claims 1000000"),
        (b"PAR1" + b"\xff" * 64 + (64).to_bytes(4, "little") + b"PAR1", "footer does not parse"),
    ],
)
def test_a_shard_that_is_not_parquet_is_a_data_error_naming_it(
    tmp_path: Path, content: bytes, phrase: str
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad-00000.parquet").write_bytes(content)
    corpus = open_sharded(_source(tmp_path))
    with pytest.raises(DataError, match=re.escape(phrase)) as caught:
        pick(corpus, seed=0, count=4)
    assert "shard data/bad-00000.parquet" in str(caught.value)
    assert caught.value.code == "shard_corrupt"


def test_a_truncated_shard_is_a_data_error_naming_it(tmp_path: Path, corpus_dir: Path) -> None:
    whole = (corpus_dir / "data" / "train-00000-of-00008.parquet").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="shard data/cut.parquet is not a readable parquet"):
        pick(open_sharded(_source(tmp_path)), seed=0, count=4)


def test_pages_that_do_not_decode_are_a_data_error_naming_the_shard(tmp_path: Path) -> None:
    path = _one_shard(tmp_path, _shard_table(0), row_group_size=ROWS)
    raw = bytearray(path.read_bytes())
    for group in range(GROUPS):  # every text chunk overwritten: whichever is drawn is broken
        for lo, hi in _chunk_ranges(str(path), group, {"text"}):
            raw[lo:hi] = b"\xff" * (hi - lo)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"row group \d of shard data/train-00000-of-00001"):
        pick(open_sharded(_source(tmp_path)), seed=3, count=4)


def test_a_missing_column_is_a_data_error_naming_the_shard(corpus_dir: Path) -> None:
    with pytest.raises(DataError, match="has no column 'content' \\(it has: id, text, url, n\\)"):
        pick(open_sharded(_source(corpus_dir, text_column="content")), seed=0, count=4)
    with pytest.raises(DataError, match="shard data/train-0000.-of-00008.parquet has no column 'uuid'"):  # fmt: skip
        pick(open_sharded(_source(corpus_dir, id_column="uuid")), seed=0, count=4)


def test_a_non_string_text_column_is_refused(corpus_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="column 'n' of shard .* is int64, not a string"):
        pick(open_sharded(_source(corpus_dir, text_column="n")), seed=0, count=4)
    _one_shard(tmp_path, pa.table({"body": ["a page"], "score": [1.5]}))
    corpus = open_sharded(_source(tmp_path, text_column="body", id_column="score"))
    with pytest.raises(DataError, match="column 'score' of shard .* is double, not a string or an"):
        pick(corpus, seed=0, count=1)


def test_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [f"good page {i}" for i in range(5)]
    texts = pa.array(
        [b"page with bad bytes \xff\xfe", *(t.encode() for t in good), None, b"   \n", b"x" * 5000,
         b"null id", b"dup a", b"dup b", b"long id"],
        pa.binary(),
    ).view(pa.string())  # fmt: skip
    ids = ["u0", "g0", "g1", "g2", "g3", "g4", "u1", "u2", "u3", None, "same", "same", "i" * 300]
    _one_shard(tmp_path, pa.table({"text": texts, "id": ids}))
    limits = ShardLimits(max_document_bytes=4096, rows_per_row_group=100, max_id_chars=256)
    corpus = open_sharded(_source(tmp_path, id_column="id"), limits=limits)
    picked = pick(corpus, seed=5, count=100)
    kept = {d.doc_id: d.text for d in picked.documents}
    assert {k: v for k, v in kept.items() if k.startswith("g")} == {
        f"g{i}": t for i, t in enumerate(good)
    }
    assert "same" in kept and len(kept) == 6  # the first of two rows sharing an id
    assert picked.skipped == {
        "text not UTF-8": 1, "null text": 1, "empty text": 1, "oversized text": 1,
        "null id": 1, "duplicate id": 1, "oversized id": 1,
    }  # fmt: skip


def test_an_oversized_row_group_is_skipped_unread(tmp_path: Path) -> None:
    small = pa.table({"text": [f"small page {i}" for i in range(4)]})
    big = pa.table({"text": ["".join(random.Random(i).choices(WORDS, k=4000)) for i in range(4)]})
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    with pq.ParquetWriter(path, small.schema) as writer:
        writer.write_table(small)
        writer.write_table(big)
    fs = RecordingFS()
    limits = ShardLimits(max_row_group_bytes=20_000, rows_per_row_group=4, max_row_groups=16)
    picked = pick(open_sharded(_source(tmp_path), filesystem=fs, limits=limits), 2, count=8)
    assert sorted(d.text for d in picked.documents) == [f"small page {i}" for i in range(4)]
    assert picked.skipped == {"oversized row group": 1}
    (big_lo, big_hi), = _chunk_ranges(str(path), 1, {"text"})  # fmt: skip
    assert not any(big_lo <= s < big_hi for _, s, _ in fs.reads)
    with pytest.raises(DataError, match="no usable document .*oversized row group"):
        tiny = ShardLimits(max_row_group_bytes=10, max_row_groups=8)
        pick(open_sharded(_source(tmp_path), limits=tiny), 2, count=8)


class _BrokenFS:
    """A file system whose every call fails as a network would."""

    def __init__(self, listing: object = None) -> None:
        self.listing = listing

    def glob(self, path: str, **kwargs: object) -> object:
        if self.listing is None:
            raise ConnectionError("connection reset by peer")
        return self.listing

    def open(self, path: str, mode: str = "rb", **kwargs: object) -> io.RawIOBase:
        raise TimeoutError("read timed out")


def test_a_file_system_that_fails_is_transient_not_a_corrupt_shard(tmp_path: Path) -> None:
    with pytest.raises(ShardUnreachable, match="cannot list the shards .*connection reset") as a:
        open_sharded(_source(tmp_path), filesystem=_BrokenFS())
    assert a.value.transient and a.value.code == "shard_unreachable"
    listing = {f"{tmp_path.resolve()}/x.parquet": {"type": "file", "size": 1000}}
    corpus = open_sharded(_source(tmp_path), filesystem=_BrokenFS(listing))
    with pytest.raises(ShardUnreachable, match="cannot open shard x.parquet: TimeoutError"):
        pick(corpus, seed=0, count=1)


def test_a_hub_location_must_be_pinned_to_a_commit() -> None:
    assert parse_location(f"hf://datasets/HuggingFaceFW/fineweb@{COMMIT}") == (
        "hub", f"datasets/HuggingFaceFW/fineweb@{COMMIT}",
    )  # fmt: skip
    assert parse_location(f"hf://datasets/org/name@{COMMIT}/sample/10BT/") == (
        "hub", f"datasets/org/name@{COMMIT}/sample/10BT",
    )  # fmt: skip
    for unpinned in ("hf://datasets/org/name", "hf://datasets/org/name@main"):
        with pytest.raises(DataError, match="is not pinned to a commit"):
            parse_location(unpinned)
    for bad in ("hf://org/name@" + COMMIT, f"hf://datasets/org/name@{COMMIT}/../x", "s3://b/k"):
        with pytest.raises(DataError, match="sharded location"):
            parse_location(bad)


def test_an_unreachable_hub_is_a_transient_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub path cannot be exercised here; offline, it must fail typed and fast."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ShardUnreachable, match="cannot list the shards of hf://datasets/"):
        open_sharded(_source(f"hf://datasets/HuggingFaceFW/fineweb@{COMMIT}"))


@pytest.fixture(scope="module")
def small_shard() -> bytes:
    table = pa.table({"text": [f"page {i} " * 20 for i in range(12)], "id": [f"p{i}" for i in range(12)]})  # fmt: skip
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=4)
    return buffer.getvalue()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_mangled_shard_bytes_give_documents_or_a_data_error(
    small_shard: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    raw = bytearray(small_shard)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "s.parquet").write_bytes(bytes(raw))
    id_column = data.draw(st.sampled_from([None, "id"]))
    try:
        picked = pick(open_sharded(_source(folder, id_column=id_column)), 1, count=6)
    except DataError:
        return
    assert all(isinstance(d.text, str) and d.text.strip() for d in picked.documents)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120) | st.from_regex(r"hf://datasets/[a-z/.@0-9-]{0,60}", fullmatch=True))
def test_any_location_string_parses_or_is_a_data_error(location: str) -> None:
    try:
        kind, root = parse_location(location)
    except DataError:
        return
    assert kind in ("hub", "local") and root


# ---- into an evaluation pool ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")


def test_documents_become_a_pool_tokenized_like_the_held_out_split(tokenizer) -> None:
    docs = [Document("b/two", "It is a truth universally acknowledged."), Document("a/one", "Call me Ishmael.")]  # fmt: skip
    pool = pool_from_documents(docs, tokenizer)
    assert pool.doc_ids == ("a/one", "b/two")
    for doc_id, doc in zip(pool.doc_ids, sorted(docs, key=lambda d: d.doc_id), strict=True):
        expected = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        assert pool.tokens[pool.doc_ids.index(doc_id)].tolist() == expected
    with pytest.raises(DataError, match=r"documents share an id \(a/one\)"):
        pool_from_documents([*docs, Document("a/one", "again")], tokenizer)
    assert pool_from_documents([], tokenizer).doc_ids == ()


def test_a_sharded_round_pool_is_the_same_for_every_validator(corpus_dir: Path, tokenizer) -> None:
    pools = [sharded_pool(open_sharded(_source(corpus_dir)), 42, 16, tokenizer) for _ in range(2)]
    (pool, picked), (again, _) = pools
    assert pool.doc_ids == again.doc_ids == tuple(sorted(d.doc_id for d in picked.documents))
    samples = select_samples(pool, 42, 32, 64)
    assert samples == select_samples(again, 42, 32, 64) and len(samples) == 32
    assert all(len(pool.window(s, 64)) == 64 for s in samples)
