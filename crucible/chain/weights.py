"""Weights vocabulary at the chain edge: floats ↔ u16, max-upscaling as the chain stores them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from crucible.protocol.errors import RequestError

__all__ = ["max_upscale_u16", "normalize_floats", "weights_commit_hash", "weights_to_u16"]

U16_MAX = 65535


def _round_half_away(x: float) -> int:
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def max_upscale_u16(values: Sequence[int]) -> list[int]:
    """The chain's ``vec_u16_max_upscale_to_u16``: the largest value becomes 65535.

    Rounding is half away from zero (spec §9); all-zero stays zero. Integer arithmetic, so the
    local chain and every client agree exactly.
    """
    if not values:
        return []
    top = max(values)
    if top == 0:
        return [0] * len(values)
    # round(v · 65535 / top), half away from zero, in integers: (2·v·65535 + top) // (2·top)
    return [(2 * v * U16_MAX + top) // (2 * top) for v in values]


def normalize_floats(weights: Mapping[int, float]) -> dict[int, float]:
    bad = [uid for uid, w in weights.items() if not (w >= 0.0) or w == float("inf")]
    if bad:
        raise RequestError(f"weights must be finite and non-negative; bad uids: {bad[:5]}")
    total = sum(weights.values())
    if total <= 0:
        raise RequestError("refusing an all-zero weight vector: nothing to set")
    return {uid: w / total for uid, w in weights.items()}


def weights_to_u16(weights: Mapping[int, float]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Float weights over uids → (uids, u16 values) max-upscaled, sorted by uid, zeros dropped."""
    normalized = normalize_floats(weights)
    top = max(normalized.values())
    pairs = [(uid, _round_half_away(w / top * U16_MAX)) for uid, w in sorted(normalized.items())]
    pairs = [(uid, v) for uid, v in pairs if v > 0]
    return tuple(uid for uid, _ in pairs), tuple(v for _, v in pairs)


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def weights_commit_hash(
    hotkey: str,
    netuid: int,
    uids: Sequence[int],
    values: Sequence[int],
    salt: Sequence[int],
    version_key: int,
) -> str:
    """The commit-reveal hash: blake2b-256 over canonical JSON of what will be revealed.

    (The real chain hashes the SCALE encoding with BlakeTwo256; the local chain has no SCALE
    codec, so it commits to the same fields in canonical JSON.)
    """
    body = _canonical_json(
        {
            "hotkey": hotkey,
            "netuid": netuid,
            "uids": list(uids),
            "values": list(values),
            "salt": list(salt),
            "version_key": version_key,
        }
    )
    return "0x" + hashlib.blake2b(body, digest_size=32).hexdigest()
