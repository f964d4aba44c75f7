"""Which windows of the training token stream a miner trains on in a round, and which random
windows a validator compares them with: pure functions of their inputs.

A window is ``sequence_length`` consecutive tokens, named by its start offset. A draw cuts the
stream into whole slots of ``sequence_length`` tokens, starting at a phase in
[0, sequence_length), and picks ``count`` distinct slots in a random order, skipping every slot
that overlaps an excluded window. So the windows of one draw never overlap each other or an
excluded one, and the order is the training order (batch i is windows i·B … (i+1)·B − 1). A
stream of N tokens holds at least ⌊N / sequence_length⌋ − 1 slots, each excluded window blocks
at most two of them.

Randomness: sha256 of the seed material seeds a numpy ``PCG64``, and only its raw 64-bit output
is used (``random_raw``: the PCG64 algorithm itself, not a numpy sampling routine whose stream a
numpy release may change), through a partial Fisher–Yates shuffle over the free slots, so a
miner and a validator on different numpy versions draw the same windows. A raw value is reduced
modulo the number of slots left (a bias below 2⁻²⁴ for any stream under 2⁴⁰ slots).

A miner's assignment is keyed by (hotkey, round, block hash): nobody can choose their windows,
everyone can recompute everyone's, and two hotkeys' windows are as good as disjoint on a real
corpus (a window of one overlaps some window of the other with probability about
2·windows·sequence_length / stream_tokens).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from crucible.protocol.errors import ConfigError

__all__ = ["assignment", "random_windows", "windows_batch"]

ASSIGNMENT_DOMAIN = "crucible/collab/assignment/v1"


def assignment(
    hotkey: str,
    round_index: int,
    block_hash: str,
    *,
    windows: int,
    stream_tokens: int,
    sequence_length: int,
) -> np.ndarray:
    """The ``windows`` window starts (int64, training order) ``hotkey`` trains on in
    ``round_index``, whose seed block has hash ``block_hash``."""
    if round_index < 0:
        raise ConfigError(f"round {round_index} is negative")
    material = "\x00".join((ASSIGNMENT_DOMAIN, hotkey, str(round_index), block_hash))
    return random_windows(
        material, windows, stream_tokens, sequence_length, np.zeros(0, dtype=np.int64)
    )


def random_windows(
    seed_material: str,
    count: int,
    stream_tokens: int,
    sequence_length: int,
    exclude: np.ndarray,
) -> np.ndarray:
    """``count`` window starts (int64) drawn from ``seed_material``, overlapping neither each
    other nor any window starting at ``exclude``; ``ConfigError`` if the stream has no room."""
    _check_sizes(count, stream_tokens, sequence_length)
    bits = np.random.PCG64(int.from_bytes(hashlib.sha256(seed_material.encode()).digest(), "big"))
    phase = int(bits.random_raw()) % min(sequence_length, stream_tokens - sequence_length + 1)
    slots = (stream_tokens - phase) // sequence_length
    blocked = _blocked_slots(np.asarray(exclude, dtype=np.int64), phase, sequence_length, slots)
    free = slots - len(blocked)
    if count > free:
        raise ConfigError(
            f"the training stream of {stream_tokens} tokens has {free} free windows of "
            f"{sequence_length} tokens; {count} are needed",
            code="stream_too_short",
            fix="use a larger training corpus or fewer windows per round",
        )
    picked = _partial_shuffle(bits, free, count)
    # the i-th free slot is i plus the number of blocked slots at or before it
    shifted = blocked - np.arange(len(blocked), dtype=np.int64)
    slot = picked + np.searchsorted(shifted, picked, side="right")
    return (phase + slot * sequence_length).astype(np.int64)


def _check_sizes(count: int, stream_tokens: int, sequence_length: int) -> None:
    if count < 0 or sequence_length < 2 or stream_tokens < sequence_length:
        raise ConfigError(
            f"cannot draw {count} windows of {sequence_length} tokens from a stream of "
            f"{stream_tokens}",
            code="stream_too_short",
        )


def _blocked_slots(exclude: np.ndarray, phase: int, length: int, slots: int) -> np.ndarray:
    """Sorted unique slots that a window starting at any of ``exclude`` overlaps (≤ 2 each)."""
    rel = exclude - phase
    first = rel // length  # the slot holding the window's first token (-1: before slot 0)
    second = (first + 1)[rel % length != 0]  # a window off the slot grid reaches into the next
    both = np.concatenate([first, second])
    return np.unique(both[(both >= 0) & (both < slots)])


def _partial_shuffle(bits: np.random.PCG64, n: int, count: int) -> np.ndarray:
    """The first ``count`` entries of a Fisher–Yates shuffle of range(n), storing only the
    swapped entries (so a draw costs O(count), whatever the stream's length)."""
    raw = bits.random_raw(count) if count else np.zeros(0, dtype=np.uint64)
    moved: dict[int, int] = {}
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        j = i + int(raw[i]) % (n - i)
        out[i] = moved.get(j, j)
        moved[j] = moved.get(i, i)
    return out


def windows_batch(tokens: np.ndarray, starts: np.ndarray, sequence_length: int) -> torch.Tensor:
    """The windows starting at ``starts`` as an int64 [len(starts), sequence_length] tensor."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size and (starts.min() < 0 or starts.max() > len(tokens) - sequence_length):
        raise ConfigError(
            f"a window start outside the token stream of {len(tokens)} tokens: the stream is "
            "not the one the windows were drawn for",
            code="stream_mismatch",
            fix="tokenize the competition's training split with the competition's tokenizer",
        )
    rows = starts[:, None] + np.arange(sequence_length, dtype=np.int64)
    return torch.from_numpy(np.asarray(tokens)[rows].astype(np.int64))
