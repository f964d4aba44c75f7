"""Competition specs: parsing, the canonical hash, versions and reward shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from crucible.competitions import specs_dir
from crucible.protocol.collab import load_collab_specs
from crucible.protocol.competition import load_competitions, load_spec
from crucible.protocol.errors import ConfigError

SPECS = specs_dir()


def test_specs_parse_and_reward_shares_of_active_sum_to_one() -> None:
    specs = load_competitions(SPECS)
    collab = load_collab_specs(SPECS)
    assert set(specs) == {"tiny", "small"} and set(collab) == {"collab"}
    shares = [s.reward_share for s in (*specs.values(), *collab.values()) if s.active]
    assert sum(shares) == 1.0
    assert (
        specs["tiny"].model.max_parameters <= 8_000_000
        and specs["small"].model.sequence_length == 1024
    )


def test_spec_hash_is_canonical_whatever_the_formatting(tmp_path: Path) -> None:
    original = (SPECS / "tiny.toml").read_text()
    reformatted = "\n".join(
        line.replace(" = ", "=") for line in original.splitlines() if not line.startswith("#")
    )
    (tmp_path / "tiny.toml").write_text(reformatted)
    assert load_spec(tmp_path / "tiny.toml").spec_hash == load_spec(SPECS / "tiny.toml").spec_hash
    (tmp_path / "tiny.toml").write_text(reformatted.replace("version=3", "version=4"))
    assert load_spec(tmp_path / "tiny.toml").spec_hash != load_spec(SPECS / "tiny.toml").spec_hash


def test_bad_specs_are_config_errors(tmp_path: Path) -> None:
    text = (SPECS / "tiny.toml").read_text()
    for bad in (
        text + "\nunknown_key = 1\n",
        text.replace("floor = 0.001", "floor = 0.9"),
        "not toml [",
    ):
        (tmp_path / "x.toml").write_text(bad)
        with pytest.raises(ConfigError):
            load_spec(tmp_path / "x.toml")
    (tmp_path / "x.toml").write_text(text.replace("reward_share = 0.8", "reward_share = 0.5"))
    with pytest.raises(ConfigError, match="sum to 0.5"):
        load_competitions(tmp_path)


# Pinned: editing a published spec in place changes its hash and fails here; publish a new
# version (a new file with version = N + 1) instead.
PUBLISHED = {
    "tiny@3": "9740ed21ac91744409b5ab07d2afc4e2422f355b77f5bfa1c6f72bb6aad55467",
    "small@1": "954e5291feeab91619d1802a3b6ac88f4ad94e8bfe37a9e61992c865120b1bc1",
}


def test_published_spec_hashes_never_change() -> None:
    specs = load_competitions(SPECS)
    assert {s.key: s.spec_hash for s in specs.values()} == PUBLISHED


def test_quoted_numbers_and_integer_booleans_are_refused(tmp_path: Path) -> None:
    text = (SPECS / "tiny.toml").read_text()
    for bad in (
        text.replace("version = 3", 'version = "3"'),
        text.replace("active = true", "active = 1"),
        text.replace("vocab_size = 8192", "vocab_size = 8192.0"),
        text.replace('"GPT2LMHeadModel"]', '"MistralForCausalLM"]'),
        text.replace('tokenizer_sha256 = "', 'tokenizer_sha256 = "x'),
        text + "\nreleased = 2026-01-01\n",
    ):
        (tmp_path / "x.toml").write_text(bad)
        with pytest.raises(ConfigError, match="invalid"):
            load_spec(tmp_path / "x.toml")


def test_two_files_for_one_competition_are_refused(tmp_path: Path) -> None:
    text = (SPECS / "tiny.toml").read_text()
    (tmp_path / "a.toml").write_text(text)
    (tmp_path / "b.toml").write_text(text.replace("version = 3", "version = 4"))
    with pytest.raises(ConfigError, match="two specs"):
        load_competitions(tmp_path)


def test_activating_a_competition_requires_rebalancing_the_shares(tmp_path: Path) -> None:
    tiny, small = (SPECS / "tiny.toml").read_text(), (SPECS / "small.toml").read_text()
    (tmp_path / "tiny.toml").write_text(tiny)
    (tmp_path / "small.toml").write_text(
        small.replace("active = false", "active = true").replace(
            "reward_share = 0.0", "reward_share = 0.3"
        )
    )
    with pytest.raises(ConfigError, match="sum to 1.1"):
        load_competitions(tmp_path)
    (tmp_path / "tiny.toml").write_text(
        tiny.replace("reward_share = 0.8", "reward_share = 0.7").replace(
            "version = 3", "version = 4"
        )
    )
    specs = load_competitions(tmp_path)
    assert specs["tiny"].key == "tiny@4" and specs["small"].active
    assert specs["tiny"].spec_hash != PUBLISHED["tiny@3"]
