"""The collab payload codec: chunked top-k, 2-bit values, gap-coded indices, safetensors bytes.

A pseudo-gradient is cut into blocks: a 2-D tensor whose dims are multiples of ``codec.chunk``
into chunk×chunk tiles, every other tensor into flat runs of chunk² values (the last run shorter,
keeping ``max(1, round(topk·len/chunk²))``). Each block keeps its top-k by |value| (ties: lower
index first, so compression is a function of the values alone).

Each kept value costs 2 bits: a sign and a choice between the block's two fp16 magnitudes (the
means of the upper and lower half of the kept |values|). Its index costs ≈ 7.5 bits: indices are
sorted within a block and coded as gaps (first gap = the first index, later gaps ≥ 1) with a
Rice code, the low ``low_bits`` of each gap in a fixed-width packed array and the rest in unary
(``high`` zeros then a one). Per tensor the payload holds ``<name>:scales`` (float16
[blocks, 2]: low, high magnitude) and ``<name>:bits`` (uint8: the packed 2-bit codes, then the
packed low bits, then the unary stream); ``__metadata__`` carries ``PayloadMeta``.

Decoding trusts nothing in the payload: every array length is computed first from the
checkpoint's shapes and the codec, the safetensors header is parsed and checked before a tensor
is loaded, and each failure raises ``PayloadRejected`` with its own code.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError

from crucible.protocol.collab import CollabCodec
from crucible.protocol.errors import ConfigError, PayloadRejected
from crucible.store.tensor_file import TensorFileKind

__all__ = [
    "Compressed",
    "ErrorFeedback",
    "PackedTensor",
    "PayloadMeta",
    "compress",
    "decode_payload",
    "decompress",
    "dense_bytes",
    "encode_payload",
    "index_overlap",
    "kept_indices",
    "low_bits",
    "max_payload_bytes",
]

FORMAT = "crucible-collab-codec/1"
RESIDUAL_FILE_KIND = TensorFileKind(
    "crucible-collab-residual/1", "residual", "residuals",
    fix="delete the residual file to start error feedback afresh",
)  # fmt: skip
_FP16_MAX = float(np.finfo(np.float16).max)
_SCALES, _BITS = ":scales", ":bits"
_META_KEYS = frozenset(
    {"format", "codec", "competition", "round_index", "base_checkpoint", "hotkey"}
)
_COMPETITION = re.compile(r"^[a-z][a-z0-9_]{0,15}@[1-9][0-9]{0,5}$")
_ROUND = re.compile(r"^(0|[1-9][0-9]{0,11})$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_HOTKEY = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{1,64}$")  # an ss58 address: base58 text
_META_BOUND = 1024  # bytes of JSON the metadata can take (every field is bounded above)


# ---- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedTensor:
    """One tensor's compressed content. ``shape``/``chunk``/``topk`` fix the block layout; they
    come from the checkpoint and the codec, never from a payload."""

    shape: tuple[int, ...]
    chunk: int
    topk: int
    scales: np.ndarray  # float16 [blocks, 2]: (low, high) magnitude per block
    codes: np.ndarray  # uint8: 2 bits per kept value (bit 0 sign, bit 1 high magnitude)
    low: np.ndarray  # uint8: the low ``low_bits`` of every gap, packed
    unary: np.ndarray  # uint8: every gap's high part in unary, packed


@dataclass(frozen=True)
class Compressed:
    """One payload's content, per tensor name (sorted)."""

    tensors: dict[str, PackedTensor]


@dataclass(frozen=True)
class PayloadMeta:
    """What a payload says about itself; the validator compares it with the round it expects."""

    competition: str
    round_index: int
    base_checkpoint: str  # 64 hex: the checkpoint the pseudo-gradient was computed from
    hotkey: str

    def __post_init__(self) -> None:
        checks = (
            (self.competition, _COMPETITION, "competition (id@version)"),
            (str(self.round_index), _ROUND, "round index"),
            (self.base_checkpoint, _HASH, "base checkpoint (64 hex)"),
            (self.hotkey, _HOTKEY, "hotkey (ss58)"),
        )
        if type(self.round_index) is not int:
            raise PayloadRejected("payload round index is not an integer", code="payload_meta")
        for value, pattern, what in checks:
            if not isinstance(value, str) or not pattern.match(value):
                raise PayloadRejected(f"bad {what} in payload metadata", code="payload_meta")


@dataclass(frozen=True)
class _Group:
    """``blocks`` blocks of ``length`` values, ``k`` kept in each."""

    blocks: int
    length: int
    k: int


# ---- layout -------------------------------------------------------------------------------


def low_bits(codec: CollabCodec) -> int:
    """Rice parameter: ⌊log2(ln2 · mean gap)⌋ (64 of 4096 → 5), near-optimal for random gaps."""
    return _rice(codec.chunk, codec.topk)


def _rice(chunk: int, topk: int) -> int:
    return max(0, int(chunk * chunk / topk * math.log(2)).bit_length() - 1)


def _is_tiled(shape: tuple[int, ...], chunk: int) -> bool:
    return len(shape) == 2 and shape[0] % chunk == 0 and shape[1] % chunk == 0


def _layout(shape: tuple[int, ...], chunk: int, topk: int) -> tuple[_Group, ...]:
    size = chunk * chunk
    if _is_tiled(shape, chunk):
        return (_Group((shape[0] // chunk) * (shape[1] // chunk), size, topk),)
    numel = math.prod(shape)
    full, rest = divmod(numel, size)
    groups = [_Group(full, size, topk)] if full else []
    if rest:
        groups.append(_Group(1, rest, max(1, round(topk * rest / size))))
    return tuple(groups)


@dataclass(frozen=True)
class _Sizes:
    """Every array length one tensor's payload must have, computed from shape and codec."""

    blocks: int
    kept: int
    code_bytes: int
    low_bytes: int
    unary_min: int  # bytes: every high part zero
    unary_max: int  # bytes: a block's high parts sum to at most (length − 1) >> low_bits


def _sizes(groups: tuple[_Group, ...], low: int) -> _Sizes:
    kept = sum(g.blocks * g.k for g in groups)
    high = sum(g.blocks * ((g.length - 1) >> low) for g in groups)
    return _Sizes(
        blocks=sum(g.blocks for g in groups),
        kept=kept,
        code_bytes=-(-2 * kept // 8),
        low_bytes=-(-low * kept // 8),
        unary_min=-(-kept // 8),
        unary_max=-(-(kept + high) // 8),
    )


def _check_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        if not isinstance(name, str) or not all(type(d) is int and d >= 0 for d in shape):
            raise ConfigError(f"bad tensor shape {name!r}: {shape!r}")
        out[name] = shape
    return out


def dense_bytes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Bytes of the full tensor set in fp32: what a payload is compared against."""
    return 4 * sum(math.prod(s) for s in _check_shapes(shapes).values())


def max_payload_bytes(shapes: Mapping[str, tuple[int, ...]], codec: CollabCodec) -> int:
    """An upper bound on the bytes of any valid payload for these shapes and this codec."""
    shapes = _check_shapes(shapes)
    return 8 + _header_bound(shapes, codec) + _data_bound(shapes, codec)


def _data_bound(shapes: dict[str, tuple[int, ...]], codec: CollabCodec) -> int:
    total = 0
    for shape in shapes.values():
        sizes = _sizes(_layout(shape, codec.chunk, codec.topk), low_bits(codec))
        total += 4 * sizes.blocks + sizes.code_bytes + sizes.low_bytes + sizes.unary_max
    return total


def _header_bound(shapes: dict[str, tuple[int, ...]], codec: CollabCodec) -> int:
    """Bytes the JSON header can take: per entry its name (JSON-escaped, ≤ 6 bytes per UTF-8
    byte), 64 bytes of structure and four numbers no longer than the data's size; metadata;
    up to 8 bytes of padding."""
    digits = len(str(_data_bound(shapes, codec)))
    names = sum(6 * len((n + suffix).encode()) for n in shapes for suffix in (_SCALES, _BITS))
    return _META_BOUND + names + 2 * len(shapes) * (64 + 4 * digits) + 8


# ---- blocks -------------------------------------------------------------------------------


def _to_blocks(t: torch.Tensor, chunk: int, groups: tuple[_Group, ...]) -> list[torch.Tensor]:
    if _is_tiled(tuple(t.shape), chunk):
        rows, cols = t.shape
        tiles = t.reshape(rows // chunk, chunk, cols // chunk, chunk).permute(0, 2, 1, 3)
        return [tiles.reshape(-1, chunk * chunk)]
    flat, out, start = t.reshape(-1), [], 0
    for g in groups:
        out.append(flat[start : start + g.blocks * g.length].view(g.blocks, g.length))
        start += g.blocks * g.length
    return out


def _from_blocks(mats: list[torch.Tensor], shape: tuple[int, ...], chunk: int) -> torch.Tensor:
    if _is_tiled(shape, chunk):
        rows, cols = shape
        tiles = mats[0].view(rows // chunk, cols // chunk, chunk, chunk).permute(0, 2, 1, 3)
        return tiles.reshape(shape).contiguous()
    return torch.cat([m.reshape(-1) for m in mats]).view(shape) if mats else torch.zeros(shape)


def _top_k(m: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices [blocks, k] of each row's k largest |values|, ties to the lower index."""
    a = m.abs()
    kth = torch.topk(a, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    keep = a >= kth
    if bool((keep.sum(dim=1) != k).any()):  # values tied with the k-th: the lowest indices win
        above, tied = a > kth, a == kth
        need = k - above.sum(dim=1, keepdim=True)
        keep = above | (tied & (tied.cumsum(dim=1) <= need))
    return keep.nonzero()[:, 1].view(m.shape[0], k)


# ---- compress / decompress ----------------------------------------------------------------


def compress(values: Mapping[str, torch.Tensor], codec: CollabCodec) -> Compressed:
    """Top-k per block, 2-bit values, gap-coded indices (deterministic: same values, same bytes)."""
    low = low_bits(codec)
    out = {}
    for name in sorted(values):
        t = values[name].detach().to("cpu", torch.float32)
        if t.numel() and not bool(torch.isfinite(t.abs().amax())):  # NaN propagates through amax
            raise PayloadRejected(
                f"cannot compress tensor {name!r}: it holds NaN or inf", code="payload_not_finite"
            )
        out[name] = _compress_one(t, codec.chunk, codec.topk, low)
    return Compressed(out)


def _compress_one(t: torch.Tensor, chunk: int, topk: int, low: int) -> PackedTensor:
    groups = _layout(tuple(t.shape), chunk, topk)
    gaps, kept, scales = [], [], []
    for g, m in zip(groups, _to_blocks(t, chunk, groups), strict=True):
        idx = _top_k(m, g.k)
        kept.append(m.gather(1, idx).numpy())
        gaps.append(np.diff(idx.numpy(), axis=1, prepend=0).reshape(-1))
    for v in kept:
        scales.append(_magnitudes(np.abs(v.astype(np.float64))))
    codes = [_codes(v, s) for v, s in zip(kept, scales, strict=True)]
    all_gaps = np.concatenate(gaps) if gaps else np.zeros(0, np.int64)
    low_packed, unary = _pack_gaps(all_gaps, low)
    return PackedTensor(
        shape=tuple(t.shape),
        chunk=chunk,
        topk=topk,
        scales=np.concatenate(scales) if scales else np.zeros((0, 2), np.float16),
        codes=np.packbits(np.concatenate(codes), bitorder="little") if codes else _empty(),
        low=low_packed,
        unary=unary,
    )


def _magnitudes(mag: np.ndarray) -> np.ndarray:
    """(low, high) per block: the means of the kept |values| below / at or above the median
    rank's value, which keeps the squared quantization error small."""
    k = mag.shape[1]
    cut = np.sort(mag, axis=1)[:, k - (k + 1) // 2][:, None]
    high = mag >= cut
    n_high = high.sum(axis=1)
    n_low = k - n_high
    mean_high = (mag * high).sum(axis=1) / n_high
    mean_low = np.where(n_low > 0, (mag * ~high).sum(axis=1) / np.maximum(n_low, 1), mean_high)
    return np.minimum(np.stack([mean_low, mean_high], axis=1), _FP16_MAX).astype(np.float16)


def _codes(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Bits [sign, high] per kept value; ``high`` when |v| is nearer the high magnitude."""
    s = scales.astype(np.float64)
    mag = np.abs(values.astype(np.float64))
    high = np.abs(mag - s[:, 1:2]) <= np.abs(mag - s[:, 0:1])
    return np.stack([values < 0, high], axis=-1).reshape(-1).astype(np.uint8)


def _empty() -> np.ndarray:
    return np.zeros(0, np.uint8)


def _pack_gaps(gaps: np.ndarray, low: int) -> tuple[np.ndarray, np.ndarray]:
    """Rice code: fixed-width low bits, packed; high parts as ``high`` zeros then a one."""
    gaps = gaps.astype(np.int64)
    if gaps.size == 0:
        return _empty(), _empty()
    low_bits_ = ((gaps[:, None] >> np.arange(low)) & 1).astype(np.uint8).reshape(-1)
    ends = np.cumsum((gaps >> low) + 1) - 1
    stream = np.zeros(int(ends[-1]) + 1, np.uint8)
    stream[ends] = 1
    return np.packbits(low_bits_, bitorder="little"), np.packbits(stream, bitorder="little")


def _bits(packed: np.ndarray, count: int, what: str, code: str) -> np.ndarray:
    """The first ``count`` bits of ``packed``, which must hold exactly that many (zero padding)."""
    if packed.size != -(-count // 8):
        raise PayloadRejected(f"{what}: {packed.size} bytes, expected {-(-count // 8)}", code=code)
    bits = np.unpackbits(packed, bitorder="little")
    if bits[count:].any():
        raise PayloadRejected(f"{what}: padding bits are not zero", code=code)
    return bits[:count]


def _unpack_gaps(p: PackedTensor, kept: int, low: int) -> np.ndarray:
    lows = _bits(p.low, kept * low, "index low bits", "payload_indices").reshape(kept, low)
    lows = lows.astype(np.int64) @ (np.int64(1) << np.arange(low, dtype=np.int64))
    stream = np.unpackbits(p.unary, bitorder="little")
    ends = np.flatnonzero(stream)
    if ends.size != kept:
        raise PayloadRejected(
            f"unary index stream holds {ends.size} gaps, expected {kept}", code="payload_indices"
        )
    used = int(ends[-1]) + 1 if kept else 0
    if p.unary.size != -(-used // 8):
        raise PayloadRejected("unary index stream is over-long", code="payload_indices")
    return ((np.diff(ends, prepend=-1) - 1) << low) | lows


def _unpack(p: PackedTensor, low: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices [blocks, k], values [blocks, k]) per group; raises on anything malformed."""
    groups = _layout(p.shape, p.chunk, p.topk)
    sizes = _sizes(groups, low)
    _check_arrays(p, sizes)
    scales = p.scales.astype(np.float32)
    codes = _bits(p.codes, 2 * sizes.kept, "value codes", "payload_values").reshape(-1, 2)
    gaps = _unpack_gaps(p, sizes.kept, low)
    out, start, block = [], 0, 0
    for g in groups:
        n = g.blocks * g.k
        gap = gaps[start : start + n].reshape(g.blocks, g.k)
        if (gap[:, 1:] == 0).any():
            raise PayloadRejected("duplicate index in a block", code="payload_indices")
        idx = np.cumsum(gap, axis=1)
        if (idx[:, -1] >= g.length).any():
            raise PayloadRejected(
                f"index outside its {g.length}-value block", code="payload_indices"
            )
        c = codes[start : start + n].reshape(g.blocks, g.k, 2)
        s = scales[block : block + g.blocks]
        mag = np.where(c[..., 1] == 1, s[:, 1:2], s[:, 0:1])
        out.append((idx, np.where(c[..., 0] == 1, -mag, mag).astype(np.float32)))
        start, block = start + n, block + g.blocks
    return out


def _check_arrays(p: PackedTensor, sizes: _Sizes) -> None:
    arrays = {"scales": (p.scales, np.float16), "codes": (p.codes, np.uint8)}
    arrays |= {"low": (p.low, np.uint8), "unary": (p.unary, np.uint8)}
    for what, (a, dtype) in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != dtype:
            raise PayloadRejected(f"{what} must be a {np.dtype(dtype)} array", code="payload_dtype")
    if p.scales.shape != (sizes.blocks, 2):
        raise PayloadRejected(
            f"scales shape {p.scales.shape}, expected {(sizes.blocks, 2)}", code="payload_shape"
        )
    if not np.isfinite(p.scales).all():
        raise PayloadRejected("a block scale is NaN or inf", code="payload_scale_not_finite")
    if np.signbit(p.scales).any():
        raise PayloadRejected("a block scale is negative", code="payload_scale_negative")
    if not sizes.unary_min <= p.unary.size <= sizes.unary_max:
        raise PayloadRejected(
            f"unary stream of {p.unary.size} bytes, expected {sizes.unary_min}..{sizes.unary_max}",
            code="payload_shape",
        )


def decompress(
    c: Compressed, shapes: Mapping[str, tuple[int, ...]], codec: CollabCodec
) -> dict[str, torch.Tensor]:
    """Dense fp32 tensors: the 2-bit value at every kept index, zero elsewhere."""
    shapes = _check_shapes(shapes)
    _same_names(c, shapes)
    low = low_bits(codec)
    out = {}
    for name, shape in shapes.items():
        p = c.tensors[name]
        if (p.shape, p.chunk, p.topk) != (shape, codec.chunk, codec.topk):
            raise PayloadRejected(
                f"tensor {name!r} was packed for shape {p.shape} chunk {p.chunk} topk {p.topk}",
                code="payload_shape",
            )
        groups = _layout(shape, codec.chunk, codec.topk)
        mats = []
        for g, (idx, vals) in zip(groups, _unpack(p, low), strict=True):
            m = torch.zeros(g.blocks, g.length)
            m.scatter_(1, torch.from_numpy(idx), torch.from_numpy(vals))
            mats.append(m)
        out[name] = _from_blocks(mats, shape, codec.chunk)
    return out


def _same_names(c: Compressed, shapes: Mapping[str, tuple[int, ...]]) -> None:
    missing = sorted(set(shapes) - set(c.tensors))
    extra = sorted(set(c.tensors) - set(shapes))
    if missing or extra:
        raise PayloadRejected(
            f"payload tensors differ from the checkpoint: missing {missing[:3]}, extra {extra[:3]}",
            code="payload_tensors",
        )


# ---- indices ------------------------------------------------------------------------------


def _block_keys(p: PackedTensor, low: int) -> tuple[np.ndarray, np.ndarray]:
    """(block number · chunk² + index in block, per kept value; k of every block)."""
    keys, ks, block = [], [], 0
    for g, (idx, _) in zip(_layout(p.shape, p.chunk, p.topk), _unpack(p, low), strict=True):
        base = (block + np.arange(g.blocks, dtype=np.int64))[:, None] * (p.chunk * p.chunk)
        keys.append((base + idx).reshape(-1))
        ks.append(np.full(g.blocks, g.k))
        block += g.blocks
    return (np.concatenate(keys), np.concatenate(ks)) if keys else (np.zeros(0, np.int64),) * 2


def kept_indices(c: Compressed) -> dict[str, np.ndarray]:
    """Per tensor, the sorted flat indices (into ``tensor.reshape(-1)``) it keeps."""
    out = {}
    for name, p in c.tensors.items():
        keys, _ = _block_keys(p, _rice(p.chunk, p.topk))
        out[name] = np.sort(_flat_index(keys, p.shape, p.chunk))
    return out


def _flat_index(keys: np.ndarray, shape: tuple[int, ...], chunk: int) -> np.ndarray:
    size = chunk * chunk
    if not _is_tiled(shape, chunk):
        return keys  # runs follow the flat order: block · chunk² + offset is the flat index
    block, offset = np.divmod(keys, size)
    tile_row, tile_col = np.divmod(block, shape[1] // chunk)
    row, col = np.divmod(offset, chunk)
    return (tile_row * chunk + row) * shape[1] + tile_col * chunk + col


def index_overlap(a: Compressed, b: Compressed) -> float:
    """Mean over blocks, weighted by block size, of |I_a ∩ I_b| / k: 1.0 for identical index
    sets, ≈ density for independent tensors."""
    if set(a.tensors) != set(b.tensors):
        raise ConfigError("index overlap needs two payloads for the same tensors")
    shared = total = 0.0
    for name in sorted(a.tensors):
        pa, pb = a.tensors[name], b.tensors[name]
        if (pa.shape, pa.chunk, pa.topk) != (pb.shape, pb.chunk, pb.topk):
            raise ConfigError(f"tensor {name!r} was packed with different layouts")
        low = _rice(pa.chunk, pa.topk)
        keys_a, ks = _block_keys(pa, low)
        keys_b, _ = _block_keys(pb, low)
        common = np.intersect1d(keys_a, keys_b, assume_unique=True) // (pa.chunk * pa.chunk)
        lengths = np.concatenate(
            [np.full(g.blocks, g.length) for g in _layout(pa.shape, pa.chunk, pa.topk)] or [[]]
        )
        shared += float(np.sum(lengths[common] / ks[common]))
        total += float(lengths.sum())
    return shared / total if total else 1.0


# ---- payload bytes ------------------------------------------------------------------------


def _codec_tag(chunk: int, topk: int) -> str:
    return f"chunk={chunk};topk={topk};value_bits=2;low_bits={_rice(chunk, topk)}"


def encode_payload(c: Compressed, meta: PayloadMeta) -> bytes:
    """safetensors bytes: ``<name>:scales`` and ``<name>:bits`` per tensor, meta as metadata."""
    arrays: dict[str, np.ndarray] = {}
    tags = set()
    for name in sorted(c.tensors):
        p = c.tensors[name]
        tags.add((p.chunk, p.topk))
        arrays[name + _BITS] = np.concatenate([p.codes, p.low, p.unary]).astype(np.uint8)
        arrays[name + _SCALES] = p.scales.astype(np.float16)
    if len(tags) != 1:
        raise ConfigError("a payload holds at least one tensor, all packed with one codec")
    metadata = {
        "format": FORMAT,
        "codec": _codec_tag(*tags.pop()),
        "competition": meta.competition,
        "round_index": str(meta.round_index),
        "base_checkpoint": meta.base_checkpoint,
        "hotkey": meta.hotkey,
    }
    return _safetensors_bytes(arrays, metadata)


_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.uint8): "U8"}


def _safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors format written canonically (the library's writer orders metadata at
    random): sorted metadata, tensors in the given order, header space-padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for key, a in arrays.items():
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        header[key] = {
            "dtype": _DTYPES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise PayloadRejected("payload header repeats a key", code="payload_unreadable")
    return out


def _read_header(raw: bytes, limit: int) -> dict:
    if len(raw) < 8:
        raise PayloadRejected(
            "payload is shorter than a safetensors header", code="payload_unreadable"
        )
    (size,) = struct.unpack("<Q", raw[:8])
    if size > limit or 8 + size > len(raw):
        raise PayloadRejected(
            f"payload header claims {size} bytes (at most {limit})", code="payload_unreadable"
        )
    try:
        header = json.loads(raw[8 : 8 + size].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise PayloadRejected(
            f"payload header is not JSON: {exc}", code="payload_unreadable"
        ) from exc
    if not isinstance(header, dict):
        raise PayloadRejected("payload header is not a JSON object", code="payload_unreadable")
    return header


def _read_meta(header: dict, codec: CollabCodec) -> PayloadMeta:
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or set(meta) != _META_KEYS:
        raise PayloadRejected(
            f"payload metadata must hold exactly {sorted(_META_KEYS)}", code="payload_meta"
        )
    if not all(isinstance(v, str) for v in meta.values()):
        raise PayloadRejected("payload metadata values must be text", code="payload_meta")
    if meta["format"] != FORMAT:
        raise PayloadRejected(
            f"payload format {meta['format'][:40]!r}, expected {FORMAT}", code="payload_meta"
        )
    tag = _codec_tag(codec.chunk, codec.topk)
    if meta["codec"] != tag:
        raise PayloadRejected(
            f"payload made with codec {meta['codec'][:60]!r}, this round uses {tag}",
            code="payload_meta",
        )
    if not _ROUND.match(meta["round_index"]):
        raise PayloadRejected("bad round index in payload metadata", code="payload_meta")
    return PayloadMeta(
        meta["competition"], int(meta["round_index"]), meta["base_checkpoint"], meta["hotkey"]
    )


def _check_entry(key: str, entry: object, dtype: str, low: list[int], high: list[int]) -> None:
    """``entry``'s dtype is ``dtype`` and its shape lies between ``low`` and ``high``."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise PayloadRejected(f"payload entry {key[:80]!r} is malformed", code="payload_unreadable")
    if entry["dtype"] != dtype:
        raise PayloadRejected(
            f"{key[:80]!r} has dtype {str(entry['dtype'])[:8]!r}, expected {dtype}",
            code="payload_dtype",
        )
    shape = entry["shape"]
    if not (
        isinstance(shape, list)
        and len(shape) == len(low)
        and all(
            type(d) is int and lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)
        )
    ):
        raise PayloadRejected(
            f"{key[:80]!r} has shape {str(shape)[:40]}, expected {low}..{high}",
            code="payload_shape",
        )


def _expected_entries(
    shapes: dict[str, tuple[int, ...]], codec: CollabCodec
) -> dict[str, tuple[str, list[int], list[int]]]:
    """Per payload key: dtype and the least and greatest shape, from shapes and codec alone."""
    low = low_bits(codec)
    out = {}
    for name, shape in shapes.items():
        sizes = _sizes(_layout(shape, codec.chunk, codec.topk), low)
        fixed = sizes.code_bytes + sizes.low_bytes
        out[name + _SCALES] = ("F16", [sizes.blocks, 2], [sizes.blocks, 2])
        out[name + _BITS] = ("U8", [fixed + sizes.unary_min], [fixed + sizes.unary_max])
    return out


def decode_payload(
    raw: bytes, shapes: Mapping[str, tuple[int, ...]], codec: CollabCodec
) -> tuple[PayloadMeta, Compressed]:
    """Parse and validate a miner's payload against the checkpoint's ``shapes`` and ``codec``.

    Raises ``PayloadRejected`` (code ``payload_too_large``, ``payload_unreadable``,
    ``payload_meta``, ``payload_tensors``, ``payload_dtype``, ``payload_shape``,
    ``payload_scale_not_finite``, ``payload_scale_negative``, ``payload_values``,
    ``payload_indices``) on anything wrong; never allocates a size the payload claims."""
    shapes = _check_shapes(shapes)
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise PayloadRejected("payload is not bytes", code="payload_unreadable")
    limit = max_payload_bytes(shapes, codec)
    size = memoryview(raw).nbytes
    if size > limit:
        raise PayloadRejected(
            f"payload of {size} bytes exceeds the {limit} any valid payload needs",
            code="payload_too_large",
        )
    raw = bytes(raw)
    header = _read_header(raw, _header_bound(shapes, codec))
    meta = _read_meta(header, codec)
    expected = _expected_entries(shapes, codec)
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        raise PayloadRejected(
            f"payload tensors differ from the checkpoint: missing {missing[:3]}, "
            f"extra {[e[:80] for e in extra[:3]]}",
            code="payload_tensors",
        )
    for key, (dtype, least, greatest) in expected.items():
        _check_entry(key, header[key], dtype, least, greatest)
    try:
        arrays = safetensors.numpy.load(raw)
    except (SafetensorError, ValueError) as exc:
        raise PayloadRejected(
            f"payload is not valid safetensors: {exc}", code="payload_unreadable"
        ) from exc
    c = _packed_from_arrays(arrays, shapes, codec)
    for p in c.tensors.values():
        _unpack(p, low_bits(codec))  # validates every index and value
    return meta, c


def _packed_from_arrays(
    arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], codec: CollabCodec
) -> Compressed:
    low = low_bits(codec)
    out = {}
    for name, shape in shapes.items():
        sizes = _sizes(_layout(shape, codec.chunk, codec.topk), low)
        scales, bits = arrays[name + _SCALES], arrays[name + _BITS]
        if scales.dtype != np.float16 or bits.dtype != np.uint8 or bits.ndim != 1:
            raise PayloadRejected(
                f"tensor {name!r} arrays have the wrong type", code="payload_dtype"
            )
        a, b = sizes.code_bytes, sizes.code_bytes + sizes.low_bytes
        out[name] = PackedTensor(
            shape,
            codec.chunk,
            codec.topk,
            scales,
            bits[:a].copy(),
            bits[a:b].copy(),
            bits[b:].copy(),
        )
    return Compressed(out)


# ---- error feedback -----------------------------------------------------------------------


class ErrorFeedback:
    """The miner's residual e: what compression has not sent yet, carried into the next round.

    ``step(Δ)``: acc = decay·e + Δ; c = compress(acc); e = acc − decompress(c)."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], codec: CollabCodec) -> None:
        self.shapes = _check_shapes(shapes)
        self.codec = codec
        self._residual = {n: torch.zeros(s, dtype=torch.float32) for n, s in self.shapes.items()}

    @property
    def residual(self) -> dict[str, torch.Tensor]:
        """A copy of e (fp32, CPU)."""
        return {n: t.clone() for n, t in self._residual.items()}

    def restore(self, residual: Mapping[str, torch.Tensor]) -> None:
        """Put back a residual taken from ``residual`` (a round whose payload was not counted
        sends nothing: its mass stays to be sent later)."""
        if {n: tuple(t.shape) for n, t in residual.items()} != self.shapes:
            raise ConfigError("the residual's tensors differ from the model's")
        self._residual = {
            n: residual[n].detach().to("cpu", torch.float32).clone() for n in self.shapes
        }

    def step(self, delta: Mapping[str, torch.Tensor]) -> Compressed:
        if set(delta) != set(self.shapes):
            raise ConfigError("the pseudo-gradient's tensors differ from the model's")
        acc = {}
        for name, shape in self.shapes.items():
            d = delta[name].detach().to("cpu", torch.float32)
            if tuple(d.shape) != shape:
                raise ConfigError(
                    f"pseudo-gradient {name!r} has shape {tuple(d.shape)}, not {shape}"
                )
            acc[name] = self._residual[name] * self.codec.error_decay + d
        c = compress(acc, self.codec)
        sent = decompress(c, self.shapes, self.codec)
        self._residual = {n: acc[n] - sent[n] for n in self.shapes}
        return c

    def save(self, path: Path) -> None:
        """Write e atomically."""
        RESIDUAL_FILE_KIND.save(path, self._residual)

    @classmethod
    def load(
        cls, path: Path, shapes: Mapping[str, tuple[int, ...]], codec: CollabCodec
    ) -> ErrorFeedback:
        out = cls(shapes, codec)
        out._residual = RESIDUAL_FILE_KIND.load(path, out.shapes)
        return out
