"""The round's data from the spec's sources: the same samples for everyone, the release rules."""

from __future__ import annotations

import numpy as np
import pytest

from crucible.chain.interface import Commitment, Hyperparameters, Metagraph, Neuron
from crucible.competitions import specs_dir
from crucible.protocol.competition import DataSource, DataSpec, load_competitions
from crucible.protocol.release import ReleaseCommitment
from crucible.scoring.round_data import (
    ReleaseRef,
    build_round_data,
    candidate_releases,
    publisher_hotkeys,
    sample_counts,
)
from crucible.scoring.sampling import EvalPool, seed_from_block_hash, select_samples

TINY = load_competitions(specs_dir())["tiny"]
HASH = "0x" + "12" * 32
HELD_OUT = EvalPool.from_documents([("eval/a", list(range(2000))), ("eval/b", list(range(900)))])
RELEASE = EvalPool.from_documents([("fresh/x", list(range(5000, 6500)))])
REF = ReleaseRef("cd" * 32, "local", "5Owner", 500)


def neuron(uid: int, hotkey: str, commitment: str | None = None, block: int = 0) -> Neuron:
    return Neuron(uid, hotkey, "5Cold", 0, True, False, 0, 0, 0.0, 0.0, 0.0, 0.0, 0,
                  commitment=None if commitment is None else Commitment(commitment, block))  # fmt: skip


def test_a_held_out_only_spec_draws_what_the_round_always_drew() -> None:
    spec = TINY.model_copy(update={"data": DataSpec()})
    data = build_round_data(spec, HASH, {"held_out": HELD_OUT}, None)
    expected = select_samples(
        HELD_OUT, seed_from_block_hash(HASH, spec.key), spec.evaluation.samples_per_round, 256
    )
    assert data.sample_ids == [s.sample_id for s in expected] and data.cutoff_block is None
    assert [s.kind for s in data.sources] == ["held_out"]


def test_a_release_round_samples_only_the_release_and_sets_the_cutoff() -> None:
    data = build_round_data(TINY, HASH, {"release": RELEASE, "held_out": HELD_OUT}, REF)
    assert all(sid.startswith("release:cdcdcdcdcdcd/fresh/x@") for sid in data.sample_ids)
    assert data.windows.min() >= 5000 and data.cutoff_block == 500
    assert data.sources[0].release == REF and data.windows.shape == (
        TINY.evaluation.samples_per_round,
        256,
    )
    again = build_round_data(TINY, HASH, {"release": RELEASE, "held_out": HELD_OUT}, REF)
    assert again.sample_ids == data.sample_ids and np.array_equal(again.windows, data.windows)


def test_before_the_first_release_the_fallback_decides() -> None:
    data = build_round_data(TINY, HASH, {"release": None, "held_out": HELD_OUT}, None)
    assert [s.kind for s in data.sources] == ["held_out"] and data.cutoff_block is None
    strict = TINY.model_copy(update={"data": TINY.data.model_copy(update={"fallback": "none"})})
    assert build_round_data(strict, HASH, {"release": None, "held_out": HELD_OUT}, None) is None


def test_sources_share_the_samples_by_weight() -> None:
    data = DataSpec(
        sources=(DataSource(kind="release", weight=0.75), DataSource(kind="held_out", weight=0.25))
    )
    spec = TINY.model_copy(update={"data": data})
    round_data = build_round_data(spec, HASH, {"release": RELEASE, "held_out": HELD_OUT}, REF)
    assert [(s.kind, s.samples) for s in round_data.sources] == [("release", 48), ("held_out", 16)]
    assert sample_counts(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]


def test_only_the_spec_publishers_releases_count_and_the_newest_comes_first() -> None:
    c = str(ReleaseCommitment("local", "ab" * 32))
    older = str(ReleaseCommitment("local", "ef" * 32))
    mg = Metagraph(1, 900, HASH, "5Owner", Hyperparameters(), (
        neuron(0, "5Owner", c, 800), neuron(1, "5Named", older, 700), neuron(2, "5Stranger", c, 850),
        neuron(3, "5Miner", "tiny@2:local:" + "a" * 64 + ":" + "b" * 32, 10),
    ))  # fmt: skip
    spec = TINY.model_copy(
        update={"data": TINY.data.model_copy(update={"publishers": ("owner", "5Named")})}
    )
    assert publisher_hotkeys(spec, mg) == {"5Owner", "5Named"}
    found, ignored = candidate_releases(spec, mg, 900)
    assert [(r.publisher, r.commit_block) for r in found] == [("5Owner", 800), ("5Named", 700)]
    assert "is not a data publisher" in ignored["5Stranger"] and "5Miner" not in ignored


def test_a_sharded_source_needs_a_location() -> None:
    with pytest.raises(ValueError, match="sharded source needs a location"):
        DataSource(kind="sharded", weight=1.0)
    with pytest.raises(ValueError, match="weights sum to 0.5"):
        DataSpec(sources=(DataSource(kind="release", weight=0.5),))


def test_a_release_committed_after_the_round_block_belongs_to_the_next_round() -> None:
    c = str(ReleaseCommitment("local", "ab" * 32))
    mg = Metagraph(1, 905, HASH, "5Owner", Hyperparameters(), (neuron(0, "5Owner", c, 903),))
    assert candidate_releases(TINY, mg, 900) == ([], {})  # round block 900: not yet
    found, _ = candidate_releases(TINY, mg, 920)
    assert [r.commit_block for r in found] == [903]
