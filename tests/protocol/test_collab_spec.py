"""The collab competition spec and its payload commitment: parsing, shares, the byte budget."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crucible.competitions import specs_dir
from crucible.protocol.collab import PayloadCommitment, load_collab_spec, load_collab_specs
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import CommitmentError, ConfigError

SPECS = specs_dir()
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"

# Pinned like the model competitions' specs: a change is a new version, never an edit in place.
# collab@1 (46c0076e…) scored on 16 held-out windows; collab@2 on 128.
PUBLISHED = {"collab@2": "b69887503980462a25c6b23afb96fe03f0047c25faaa9ac841ba1a5d38e314e0"}


def test_the_shipped_collab_spec_parses_with_its_window_arithmetic() -> None:
    spec = load_collab_specs(SPECS)["collab"]
    assert spec.key == "collab@2" and spec.codec.density == 64 / 4096
    assert spec.window(3) == (300, 399) and spec.round_of(399) == 3 and spec.round_of(400) == 4
    assert spec.data_block(3) > spec.window(3)[1]  # scoring data is drawn after the deadline


def test_published_collab_spec_hash_never_changes() -> None:
    spec = load_collab_specs(SPECS)["collab"]
    assert {spec.key: spec.spec_hash} == PUBLISHED


def test_the_collab_share_counts_in_the_sum_of_shares(tmp_path: Path) -> None:
    for name in ("tiny.toml", "small.toml"):
        shutil.copy(SPECS / name, tmp_path / name)
    with pytest.raises(ConfigError, match="sum to 0.8"):
        load_competitions(tmp_path)
    shutil.copy(SPECS / "collab.toml", tmp_path / "collab.toml")
    assert set(load_competitions(tmp_path)) == {"tiny", "small"}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("topk = 64", "topk = 5000"),  # more than a 64×64 block holds
        ("inner_steps = 30", 'inner_steps = "30"'),
        ("outer_lr = 2.0", "outer_lr = 0.0"),
        ("nesterov = false", "nesterov = 0"),
        ("[scoring]", "[scoring]\nsurprise = 1"),
    ],
)
def test_bad_collab_specs_are_config_errors(tmp_path: Path, old: str, new: str) -> None:
    text = (SPECS / "collab.toml").read_text()
    assert old in text
    (tmp_path / "collab.toml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match="collab spec .* is invalid"):
        load_collab_spec(tmp_path / "collab.toml")


def test_payload_commitments_bind_the_hotkey_and_fit_the_chain() -> None:
    c = PayloadCommitment.for_payload("collab@1", 123_456, "local", "ab" * 32, HOTKEY)
    raw = str(c)
    assert len(raw.encode()) <= 128 and PayloadCommitment.parse(raw) == c
    assert c.matches(HOTKEY) and not c.matches(HOTKEY[:-1] + "Z")


@pytest.mark.parametrize(
    "raw",
    [
        "tiny@3:local:" + "a" * 64 + ":" + "b" * 32,  # a model commitment: four parts
        "collab@1:²:local:" + "a" * 64 + ":" + "b" * 32,  # a unicode digit is not a round
        "collab@1:-1:local:" + "a" * 64 + ":" + "b" * 32,
        "collab@1:7:local:" + "A" * 64 + ":" + "b" * 32,
        "collab@1:7:local:" + "a" * 64 + ":" + "b" * 31,
        "collab@1:7:" + "x" * 40 + "/y:" + "a" * 64 + ":" + "b" * 32,  # over 128 bytes
    ],
)
def test_malformed_payload_commitments_are_refused(raw: str) -> None:
    with pytest.raises(CommitmentError, match="collab commitment|at most 128"):
        PayloadCommitment.parse(raw)
