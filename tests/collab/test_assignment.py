"""Which windows a miner trains on: a pure function of (hotkey, round, block hash), inside the
stream, never overlapping each other or an excluded window, and (almost) disjoint between
hotkeys; the random proof windows avoid the windows they exclude."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.collab.assignment import assignment, random_windows, windows_batch
from crucible.protocol.errors import ConfigError

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
HASH = "0x" + "ab" * 32


def _draw(hotkey: str = ALICE, round_index: int = 7, block_hash: str = HASH, **sizes) -> np.ndarray:
    sizes = {"windows": 120, "stream_tokens": 1_000_000, "sequence_length": 128} | sizes
    return assignment(hotkey, round_index, block_hash, **sizes)


def _overlapping(a: np.ndarray, b: np.ndarray, length: int) -> int:
    """How many windows of ``a`` overlap at least one window of ``b``."""
    b = np.sort(b)
    # a window at s overlaps one at t iff |s - t| < length
    lo = np.searchsorted(b, a - length, side="right")
    hi = np.searchsorted(b, a + length, side="left")
    return int(np.sum(hi > lo))


def test_an_assignment_is_a_pure_function_of_hotkey_round_and_block_hash() -> None:
    first = _draw()
    assert first.dtype == np.int64 and first.shape == (120,)
    assert np.array_equal(first, _draw())
    for other in (_draw(BOB), _draw(round_index=8), _draw(block_hash="0x" + "ac" * 32)):
        assert not np.array_equal(first, other)
    # pinned: every miner and validator, on any numpy release, draws these very windows
    pinned = assignment(ALICE, 7, HASH, windows=6, stream_tokens=100_000, sequence_length=128)
    assert pinned.tolist() == [58253, 23053, 64141, 54541, 84621, 27661]


def test_windows_lie_inside_the_stream_and_never_overlap_each_other() -> None:
    for stream in (128, 129, 5_000, 1_000_000):
        windows = min(120, max(1, stream // 128 - 1))  # a phase > 0 costs the last slot
        starts = _draw(windows=windows, stream_tokens=stream)
        assert len(starts) == windows and len(set(starts.tolist())) == windows
        assert starts.min() >= 0 and starts.max() + 128 <= stream
        assert np.all(np.diff(np.sort(starts)) >= 128)
    assert _draw(windows=0).shape == (0,)


def test_two_hotkeys_get_almost_disjoint_windows() -> None:
    stream = 10_000_000
    alice, bob = _draw(ALICE, stream_tokens=stream), _draw(BOB, stream_tokens=stream)
    # expected ≈ 120 · 120 · 255 / 10⁷ ≈ 0.4 overlapping windows
    assert _overlapping(alice, bob, 128) <= 3
    assert _overlapping(alice, _draw(ALICE, round_index=8, stream_tokens=stream), 128) <= 3


def test_random_windows_avoid_the_excluded_windows_and_refuse_when_there_is_no_room() -> None:
    # phase 57: slots start at 57, 157, …; the window at 0 blocks slot 0 and the one at 450
    # blocks slots 3 and 4, leaving slots 1, 2, 5, 6, 7, 8 (6 windows)
    exclude = np.array([0, 450])
    assert random_windows("x", 5, 1000, 100, exclude).tolist() == [257, 157, 857, 657, 757]
    assert sorted(random_windows("x", 6, 1000, 100, exclude).tolist()) == [
        157, 257, 557, 657, 757, 857,
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="has 6 free windows of 100 tokens; 7 are needed"):
        random_windows("x", 7, 1000, 100, exclude)
    with pytest.raises(
        ConfigError, match="cannot draw 1 windows of 128 tokens from a stream of 100"
    ):
        random_windows("x", 1, 100, 128, exclude)


@settings(max_examples=150, deadline=None)
@given(
    stream=st.integers(2, 5_000),
    length=st.integers(2, 300),
    count=st.integers(0, 40),
    exclude=st.lists(st.integers(-400, 5_400), max_size=30),
    seed=st.text(max_size=8),
)
def test_random_windows_never_overlap_an_excluded_window(
    stream: int, length: int, count: int, exclude: list[int], seed: str
) -> None:
    excluded = np.array(exclude, dtype=np.int64)
    try:
        starts = random_windows(seed, count, stream, length, excluded)
    except ConfigError as exc:
        assert exc.code == "stream_too_short"
        return
    assert len(starts) == count and starts.dtype == np.int64
    assert np.all(starts >= 0) and np.all(starts + length <= stream)
    assert np.all(np.diff(np.sort(starts)) >= length)
    assert _overlapping(starts, excluded, length) == 0
    assert np.array_equal(starts, random_windows(seed, count, stream, length, excluded))


def test_a_batch_is_the_windows_tokens_and_a_start_outside_the_stream_is_refused() -> None:
    tokens = np.arange(1000, dtype=np.int32)
    batch = windows_batch(tokens, np.array([5, 900, 0]), 100)
    assert batch.dtype == torch.int64 and batch.shape == (3, 100)
    assert batch[0, 0] == 5 and batch[1, -1] == 999 and batch[2, 99] == 99
    for bad in ([901], [-1]):
        with pytest.raises(ConfigError, match="outside the token stream of 1000 tokens"):
            windows_batch(tokens, np.array(bad), 100)
