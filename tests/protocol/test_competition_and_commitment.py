"""Competition specs (parsing, canonical hash, reward shares) and model commitments."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.commitment import MAX_COMMITMENT_BYTES, ModelCommitment, secure_hash
from protocol.competition import load_competitions, load_spec
from protocol.errors import CommitmentError, ConfigError

SPECS = Path(__file__).resolve().parents[2] / "competitions"


def test_specs_parse_and_reward_shares_of_active_sum_to_one() -> None:
    specs = load_competitions(SPECS)
    assert set(specs) == {"tiny", "small"}
    assert sum(s.reward_share for s in specs.values() if s.active) == 1.0
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
    (tmp_path / "tiny.toml").write_text(reformatted.replace("version=1", "version=2"))
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
    (tmp_path / "x.toml").write_text(text.replace("reward_share = 1.0", "reward_share = 0.5"))
    with pytest.raises(ConfigError, match="sum to 0.5"):
        load_competitions(tmp_path)


def test_commitment_round_trips_and_binds_the_hotkey() -> None:
    content = "ab" * 32
    c = ModelCommitment.for_model("tiny@1", "local", content, content, "5Hotkey")
    assert ModelCommitment.parse(str(c)) == c and len(c.encode()) <= MAX_COMMITMENT_BYTES
    assert c.matches(content, "5Hotkey") and not c.matches(content, "5Copier")
    assert c.secure_hash == secure_hash(content, "5Hotkey")


def test_commitment_with_a_hub_repo_fits_in_128_bytes() -> None:
    c = ModelCommitment.for_model(
        "tiny@1", "some-org/crucible-tiny-model", "f" * 40, "0" * 64, "5H"
    )
    assert len(c.encode()) <= MAX_COMMITMENT_BYTES


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tiny@1:local:abc",
        "tiny:local:" + "a" * 64 + ":" + "b" * 32,
        "tiny@1:../x:" + "a" * 64 + ":" + "b" * 32,
        "x" * 200,
    ],
)
def test_malformed_commitments_are_refused(raw: str) -> None:
    with pytest.raises(CommitmentError):
        ModelCommitment.parse(raw)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_commitment_parser_never_fails_unexpectedly(raw: str | bytes) -> None:
    try:
        c = ModelCommitment.parse(raw)
    except CommitmentError:
        return
    assert len(c.encode()) <= MAX_COMMITMENT_BYTES
