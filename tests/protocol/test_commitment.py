"""Model commitments: the on-chain string, its 128-byte limit and the hotkey binding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.protocol.commitment import MAX_COMMITMENT_BYTES, ModelCommitment, secure_hash
from crucible.protocol.errors import CommitmentError


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


def test_a_hub_repo_id_over_the_byte_budget_is_refused_with_a_fix() -> None:
    fits = "o" * 20 + "/" + "n" * 26  # 47 bytes: the documented budget with a 40-hex commit sha
    c = ModelCommitment.for_model("tiny@1", fits, "f" * 40, "0" * 64, "5H")
    assert len(c.encode()) == MAX_COMMITMENT_BYTES
    with pytest.raises(CommitmentError) as err:
        ModelCommitment.for_model("tiny@1", fits + "x", "f" * 40, "0" * 64, "5H")
    assert err.value.code == "commitment_too_long" and err.value.fix


def test_local_commitment_is_110_bytes() -> None:
    c = ModelCommitment.for_model("tiny@1", "local", "a" * 64, "a" * 64, "5H")
    assert len(c.encode()) == 110


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(CommitmentError, match="UTF-8"):
        ModelCommitment.parse(b"tiny@1:local:\xff\xfe")


_hex = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(
    comp=st.from_regex(r"[a-z][a-z0-9_]{0,7}@[1-9][0-9]{0,2}", fullmatch=True),
    ref=st.one_of(st.just("local"), st.builds(lambda a, b: f"{a}/{b}", _name, _name)),
    content=_hex,
    hotkey=st.text(min_size=1, max_size=48),
    sha_len=st.sampled_from([40, 64]),
)
def test_every_valid_commitment_round_trips(
    comp: str, ref: str, content: str, hotkey: str, sha_len: int
) -> None:
    try:
        c = ModelCommitment.for_model(comp, ref, content[:sha_len], content, hotkey)
    except CommitmentError as exc:
        assert exc.code == "commitment_too_long"
        return
    assert ModelCommitment.parse(c.encode()) == c == ModelCommitment.parse(str(c))
    assert c.matches(content, hotkey)
