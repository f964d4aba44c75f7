"""A competition scored on a sharded parquet corpus: the validator's, a miner's and ``verify``'s
round data come from the one ``gather_round_data`` and agree; a corpus that cannot be read costs
that source only, with its reason."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.protocol.competition import DataSource, DataSpec, load_competitions
from crucible.scoring.sources import ShardedPools, gather_round_data
from crucible.scoring.windows import load_eval_pool
from crucible.validator.verify import replay_round_data

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "corpus"
TINY = load_competitions(specs_dir())["tiny"]
HASH = "0x" + "5a" * 32
WORDS = [f"page{i:03d}" for i in range(600)]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(specs_dir() / TINY.model.tokenizer)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shards of four row groups of web-like pages, laid out like a Hub dataset."""
    root = tmp_path_factory.mktemp("web")
    (root / "data").mkdir()
    for shard in range(4):
        rows = [(g, r) for g in range(4) for r in range(16)]
        texts = [" ".join(random.Random(f"{shard}/{g}/{r}").choices(WORDS, k=400)) for g, r in rows]
        table = pa.table({"text": texts, "id": [f"s{shard}-{g}-{r}" for g, r in rows]})
        pq.write_table(table, root / "data" / f"train-{shard:05d}-of-00004.parquet", row_group_size=16)  # fmt: skip
    return root


def _spec(location: Path | str):
    data = DataSpec(sources=(
        DataSource(kind="sharded", weight=0.5, location=str(location), id_column="id"),
        DataSource(kind="held_out", weight=0.5),
    ))  # fmt: skip
    return TINY.model_copy(update={"data": data})


def _round(spec, tok, held_out):
    return gather_round_data(
        spec, HASH, held_out=held_out, releases=None, candidates=[],
        sharded=ShardedPools(spec, tok, base_dir=CORPUS),
    )  # fmt: skip


def test_two_validators_draw_the_same_sharded_samples_in_the_spec_shares(web: Path, tok) -> None:
    spec, held_out = _spec(web), load_eval_pool(CORPUS, tok)
    first, second = _round(spec, tok, held_out), _round(spec, tok, held_out)
    assert first.sample_ids == second.sample_ids and (first.windows == second.windows).all()
    half = spec.evaluation.samples_per_round // 2
    sharded = [s for s in first.sample_ids if s.startswith(f"sharded:{web}/")]
    assert len(sharded) == half and len(first.sample_ids) == 2 * half
    assert [(u.kind, u.samples, u.location) for u in first.sources] == [
        ("sharded", half, str(web)), ("held_out", half, None),
    ]  # fmt: skip
    assert first.ignored == {}


def test_another_round_block_picks_other_pages(web: Path, tok) -> None:
    spec, held_out = _spec(web), load_eval_pool(CORPUS, tok)
    other = gather_round_data(
        spec, "0x" + "77" * 32, held_out=held_out, releases=None, candidates=[],
        sharded=ShardedPools(spec, tok),
    )  # fmt: skip
    ours = {s for s in _round(spec, tok, held_out).sample_ids if s.startswith("sharded:")}
    assert ours and ours != {s for s in other.sample_ids if s.startswith("sharded:")}


def test_a_corpus_that_cannot_be_read_costs_that_source_only(tmp_path: Path, tok) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"<html>not parquet</html>")
    spec, held_out = _spec(tmp_path), load_eval_pool(CORPUS, tok)
    data = _round(spec, tok, held_out)
    assert [u.kind for u in data.sources] == ["held_out"]
    assert len(data.sample_ids) == spec.evaluation.samples_per_round
    assert "train-00000-of-00001.parquet" in data.ignored[f"sharded:{tmp_path}"]


def test_verify_rebuilds_the_sharded_round_from_the_bundle(web: Path, tok) -> None:
    spec = _spec(web)
    data = _round(spec, tok, load_eval_pool(CORPUS, tok))
    recorded = SimpleNamespace(block_hash=HASH, data_sources=[u.to_json() for u in data.sources])
    again = replay_round_data(recorded, spec, specs_dir(), CORPUS, None)
    assert again.sample_ids == data.sample_ids and (again.windows == data.windows).all()
