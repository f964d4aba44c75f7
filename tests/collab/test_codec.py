"""The collab payload codec on the real collab model's shapes: exact top-k, 2-bit values,
exact error-feedback accounting, ≥150× compression, and a decoder that refuses every malformed
payload with its own code."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.collab.codec import (
    Compressed,
    ErrorFeedback,
    PayloadMeta,
    _pack_gaps,
    compress,
    decode_payload,
    decompress,
    dense_bytes,
    encode_payload,
    index_overlap,
    kept_indices,
    low_bits,
    max_payload_bytes,
)
from crucible.models.build import ModelShape, build_config, build_model
from crucible.protocol.collab import CollabCodec, load_collab_spec
from crucible.protocol.errors import ConfigError, PayloadRejected
from tests.conftest import keypair

SPEC = load_collab_spec(Path(__file__).resolve().parents[2] / "crucible/competitions/collab.toml")
CODEC = SPEC.codec  # chunk 64, topk 64, decay 0.95
BASE = "ab" * 32
NORM = "model.layers.0.input_layernorm.weight"  # (128,): one run of 128, k = round(64·128/4096) = 2
EMBED = "model.embed_tokens.weight"  # (8192, 128): 256 tiles of 64×64
META = PayloadMeta("collab@1", 7, BASE, keypair("codec-miner").ss58_address)


def collab_model() -> torch.nn.Module:
    m = SPEC.model
    shape = ModelShape(
        m.architecture, m.vocab_size, m.sequence_length, m.layers, m.hidden, m.heads, m.ffn
    )
    return build_model(build_config(shape), seed=m.init_seed)


def random_like(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


@pytest.fixture(scope="module")
def shapes() -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in collab_model().named_parameters()}


@pytest.fixture(scope="module")
def meta() -> PayloadMeta:
    return META


@pytest.fixture(scope="module")
def values(shapes) -> dict[str, torch.Tensor]:
    return random_like(shapes, 0)


@pytest.fixture(scope="module")
def packed(values) -> Compressed:
    return compress(values, CODEC)


@pytest.fixture(scope="module")
def raw(packed, meta) -> bytes:
    return encode_payload(packed, meta)


# ---- an independent statement of the block layout -----------------------------------------


def blocks_of(a: np.ndarray, chunk: int, topk: int) -> list[tuple[np.ndarray, int]]:
    """[(flat indices of every block [blocks, length], k)] as the contract defines them."""
    flat = np.arange(a.size).reshape(a.shape)
    if a.ndim == 2 and a.shape[0] % chunk == 0 and a.shape[1] % chunk == 0:
        r, c = a.shape
        tiles = flat.reshape(r // chunk, chunk, c // chunk, chunk).transpose(0, 2, 1, 3)
        return [(tiles.reshape(-1, chunk * chunk), topk)]
    size, flat = chunk * chunk, flat.reshape(-1)
    full = flat.size // size
    out = [(flat[: full * size].reshape(full, size), topk)] if full else []
    if flat.size % size:
        rest = flat.size % size
        out.append((flat[full * size :].reshape(1, rest), max(1, round(topk * rest / size))))
    return out


def expected_top_k(a: np.ndarray, chunk: int, topk: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per block (its flat indices, the flat indices of its top-k, ties to the lower index)."""
    out = []
    for idx, k in blocks_of(a, chunk, topk):
        mags = np.abs(a.reshape(-1)[idx])
        order = np.argsort(-mags, axis=1, kind="stable")[:, :k]
        for row in range(idx.shape[0]):
            out.append((idx[row], np.sort(idx[row, order[row]])))
    return out


# ---- round trip ---------------------------------------------------------------------------


def check_round_trip(values: dict[str, torch.Tensor], raw: bytes, shapes) -> None:
    _, c = decode_payload(raw, shapes, CODEC)
    dense = decompress(c, shapes, CODEC)
    kept = kept_indices(c)
    assert sorted(dense) == sorted(shapes)
    for name, v in values.items():
        a, d = v.numpy().reshape(-1), dense[name].numpy().reshape(-1)
        assert dense[name].dtype == torch.float32 and tuple(dense[name].shape) == shapes[name]
        blocks = expected_top_k(v.numpy(), 64, 64)
        want = np.sort(np.concatenate([top for _, top in blocks]))
        np.testing.assert_array_equal(kept[name], want)
        rest = np.ones(a.size, bool)
        rest[want] = False
        assert not d[rest].any()  # zero wherever nothing was kept
        scales = c.tensors[name].scales.astype(np.float64)
        for (_, top), (low, high) in zip(blocks, scales, strict=True):
            got, orig = d[top], a[top]
            mag = np.sort(mag_of(orig))
            half = (len(mag) + 1) // 2  # the magnitudes: means of the lower and upper half
            lower = mag[:-half] if len(mag) > 1 else mag
            np.testing.assert_allclose([low, high], [lower.mean(), mag[-half:].mean()], rtol=1e-3)
            nearer = np.where(np.abs(mag_of(orig) - high) <= np.abs(mag_of(orig) - low), high, low)
            np.testing.assert_array_equal(np.abs(got), nearer)  # the block's nearer magnitude
            assert np.all(np.signbit(got) == np.signbit(orig))


def mag_of(v: np.ndarray) -> np.ndarray:
    return np.abs(v.astype(np.float64))


def test_round_trip_on_random_tensors_keeps_the_exact_top_k(values, raw, shapes):
    check_round_trip(values, raw, shapes)


def test_round_trip_on_the_real_model_weights(shapes, meta):
    """Initial weights: layer norms are all 1.0, so every index ties and the lowest win."""
    weights = {n: p.detach() for n, p in collab_model().named_parameters()}
    raw = encode_payload(compress(weights, CODEC), meta)
    check_round_trip(weights, raw, shapes)
    _, c = decode_payload(raw, shapes, CODEC)
    np.testing.assert_array_equal(kept_indices(c)[NORM], [0, 1])
    assert torch.equal(decompress(c, shapes, CODEC)[NORM][:3], torch.tensor([1.0, 1.0, 0.0]))


def test_magnitudes_are_the_means_of_the_upper_and_lower_half():
    # one 64×64 tile, k = 4 of 4096: kept |values| 8, 6, 2, 1 → high = mean(8, 6) = 7,
    # low = mean(2, 1) = 1.5; each value takes the nearer magnitude and keeps its sign
    codec = CollabCodec(chunk=64, topk=4, error_decay=1.0)
    t = torch.zeros(64, 64)
    t[0, 5], t[3, 0], t[10, 63], t[63, 63] = 8.0, -6.0, 2.0, -1.0
    c = compress({"w": t}, codec)
    np.testing.assert_array_equal(c.tensors["w"].scales, np.array([[1.5, 7.0]], np.float16))
    d = decompress(c, {"w": (64, 64)}, codec)["w"]
    assert d[0, 5] == 7.0 and d[3, 0] == -7.0 and d[10, 63] == 1.5 and d[63, 63] == -1.5
    assert int((d != 0).sum()) == 4


def test_odd_shapes_use_flat_runs_with_a_proportional_last_k():
    # (100, 70) is not a multiple of 64: 7000 values = one run of 4096 (k 64) + 2904
    # (k = round(64·2904/4096) = round(45.375) = 45); 5000 = 4096 + 904 (k = round(14.125) = 14);
    # a scalar keeps its one value
    shapes = {"odd": (100, 70), "scalar": (), "vec": (5000,)}
    vals = random_like(shapes, 3)
    c = compress(vals, CODEC)
    kept = kept_indices(c)
    assert len(kept["odd"]) == 64 + 45 and len(kept["vec"]) == 64 + 14 and len(kept["scalar"]) == 1
    for name in ("odd", "vec"):
        want = [top for _, top in expected_top_k(vals[name].numpy(), 64, 64)]
        np.testing.assert_array_equal(kept[name], np.sort(np.concatenate(want)))
    dense = decompress(c, shapes, CODEC)
    assert dense["scalar"].shape == () and dense["scalar"] != 0


def test_compression_is_deterministic(values, raw, meta):
    again = {n: v.clone() for n, v in values.items()}
    assert encode_payload(compress(again, CODEC), meta) == raw


def test_compress_refuses_non_finite_values():
    with pytest.raises(PayloadRejected, match="NaN or inf") as err:
        compress({"w": torch.tensor([1.0, float("nan")])}, CODEC)
    assert err.value.code == "payload_not_finite"


def test_decompress_refuses_a_payload_packed_for_other_shapes(packed, shapes):
    other = dict(shapes) | {NORM: (64,)}
    with pytest.raises(PayloadRejected, match="packed for shape") as err:
        decompress(packed, other, CODEC)
    assert err.value.code == "payload_shape"


# ---- size ---------------------------------------------------------------------------------


def test_collab_model_payload_is_at_least_150x_smaller_than_fp32(raw, shapes, packed):
    kept = sum(len(i) for i in kept_indices(packed).values())
    assert kept == 256 * 64 + 8 * 4 * 64 + 6 * 8 * 64 + 5 * 2  # 21514 kept values
    assert low_bits(CODEC) == 5
    assert dense_bytes(shapes) == 4 * 1_376_896
    assert dense_bytes(shapes) / len(raw) >= 150
    assert 8 * len(raw) / kept < 12  # bits per kept value, header and scales included


def test_max_payload_bytes_bounds_the_worst_case_payload():
    # every block's largest values sit at its end: the longest gaps, the longest unary streams
    shapes = {"tiled": (128, 192), "run": (5000,), "norm": (128,)}
    rows, cols = torch.arange(128.0) % 64, torch.arange(192.0) % 64
    vals = {
        "tiled": rows[:, None] * 64 + cols + 1,
        "run": torch.arange(5000.0) + 1,
        "norm": torch.arange(128.0),
    }
    longest = PayloadMeta("abcdefghijklmnop@999999", 999_999_999_999, BASE, "z" * 64)
    c = compress(vals, CODEC)
    np.testing.assert_array_equal(kept_indices(c)["norm"], [126, 127])
    raw = encode_payload(c, longest)
    assert len(raw) <= max_payload_bytes(shapes, CODEC)
    decode_payload(raw, shapes, CODEC)


# ---- error feedback -----------------------------------------------------------------------


def test_residual_accounting_is_exact(shapes):
    ef = ErrorFeedback(shapes, CODEC)
    e = {n: torch.zeros(s) for n, s in shapes.items()}
    for step in range(2):
        delta = random_like(shapes, 10 + step)
        acc = {n: e[n] * CODEC.error_decay + delta[n] for n in shapes}
        c = ef.step(delta)
        sent, e, kept = decompress(c, shapes, CODEC), ef.residual, kept_indices(c)
        for name in shapes:
            a, s, r = acc[name].reshape(-1), sent[name].reshape(-1), e[name].reshape(-1)
            mask = torch.zeros(a.numel(), dtype=torch.bool)
            mask[torch.from_numpy(kept[name])] = True
            assert torch.equal(r[~mask], a[~mask])  # not sent: carried whole
            assert torch.equal(r[mask], a[mask] - s[mask])  # sent: the fp32 difference
            top = torch.maximum(a.abs(), s.abs())
            ulp = torch.nextafter(top, torch.tensor(math.inf)) - top
            assert bool(((s + r - a).abs() <= ulp).all())


def test_error_feedback_sends_the_decayed_sum_of_deltas(shapes):
    # e_t + D_t = d·e_{t−1} + Δ_t, so Σ d^{T−t}·D_t + e_T = Σ d^{T−t}·Δ_t
    ef, decay, steps = ErrorFeedback(shapes, CODEC), CODEC.error_decay, 4
    sent = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
    want = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
    for step in range(steps):
        delta = random_like(shapes, 20 + step)
        dense = decompress(ef.step(delta), shapes, CODEC)
        for n in shapes:
            sent[n] = sent[n] * decay + dense[n].double()
            want[n] = want[n] * decay + delta[n].double()
    e = ef.residual
    for n in shapes:
        torch.testing.assert_close(sent[n] + e[n].double(), want[n], rtol=1e-5, atol=1e-5)
    assert any(bool(e[n].abs().sum() > 0) for n in shapes)  # something is still owed


def test_error_feedback_survives_save_and_load(tmp_path, shapes):
    ef = ErrorFeedback(shapes, CODEC)
    ef.step(random_like(shapes, 30))
    path = tmp_path / "residual.safetensors"
    ef.save(path)
    loaded = ErrorFeedback.load(path, shapes, CODEC)
    assert all(torch.equal(loaded.residual[n], ef.residual[n]) for n in shapes)
    delta = random_like(shapes, 31)
    assert encode_payload(loaded.step(delta), META) == encode_payload(ef.step(delta), META)


def test_residual_file_for_another_model_is_refused(tmp_path, shapes):
    path = tmp_path / "residual.safetensors"
    ErrorFeedback({"w": (4, 4)}, CODEC).save(path)
    with pytest.raises(ConfigError, match="residuals for other tensors"):
        ErrorFeedback.load(path, shapes, CODEC)
    path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot read residual file"):
        ErrorFeedback.load(path, shapes, CODEC)


def test_error_feedback_refuses_a_delta_of_another_shape(shapes):
    ef = ErrorFeedback(shapes, CODEC)
    bad = random_like(shapes, 1) | {NORM: torch.zeros(64)}
    with pytest.raises(ConfigError, match="has shape"):
        ef.step(bad)


# ---- index overlap ------------------------------------------------------------------------


def test_index_overlap_marks_copies_and_not_strangers(packed, values, shapes):
    assert index_overlap(packed, packed) == 1.0
    stranger = compress(random_like(shapes, 99), CODEC)
    assert index_overlap(packed, stranger) == pytest.approx(CODEC.density, abs=0.005)
    scaled = compress({n: -2.0 * v for n, v in values.items()}, CODEC)
    assert index_overlap(packed, scaled) == 1.0
    kept = kept_indices(packed)
    repainted = {}  # every magnitude tripled, every sign flipped, the same indices
    for n, p in packed.tensors.items():
        signs = np.packbits(np.tile(np.array([1, 0], np.uint8), kept[n].size), bitorder="little")
        repainted[n] = dataclasses.replace(
            p, scales=p.scales * np.float16(3), codes=p.codes ^ signs
        )
    repainted = Compressed(repainted)
    assert not torch.equal(
        decompress(repainted, shapes, CODEC)[EMBED], decompress(packed, shapes, CODEC)[EMBED]
    )
    assert index_overlap(packed, repainted) == 1.0


def test_index_overlap_of_half_the_indices_is_one_half():
    # a block of 4096 keeping 64; the second tensor keeps 32 of the same and 32 others
    codec = CollabCodec(chunk=64, topk=64, error_decay=1.0)
    a, b = torch.zeros(4096), torch.zeros(4096)
    a[:64] = 1.0
    b[32:96] = 1.0
    assert index_overlap(compress({"v": a}, codec), compress({"v": b}, codec)) == 0.5


# ---- hostile payloads ---------------------------------------------------------------------


def sections(raw: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size])["__metadata__"], safetensors.numpy.load(raw)


def rejected(raw: bytes, shapes, code: str, match: str, codec: CollabCodec = CODEC) -> None:
    with pytest.raises(PayloadRejected, match=match) as err:
        decode_payload(raw, shapes, codec)
    assert err.value.code == code


def with_tensor(packed: Compressed, meta: PayloadMeta, name: str, **change) -> bytes:
    tensors = dict(packed.tensors)
    tensors[name] = dataclasses.replace(tensors[name], **change)
    return encode_payload(Compressed(tensors), meta)


def test_bytes_over_the_limit_are_refused_unread(raw, shapes):
    limit = max_payload_bytes(shapes, CODEC)
    rejected(raw + bytes(limit - len(raw) + 1), shapes, "payload_too_large", "exceeds")


def test_bytes_that_are_not_safetensors(raw, shapes):
    rejected(b"PK\x03\x04 a zip", shapes, "payload_unreadable", "is not JSON|claims")
    rejected(b"tiny", shapes, "payload_unreadable", "shorter than")
    rejected((2**62).to_bytes(8, "little") + raw[8:], shapes, "payload_unreadable", "claims")
    rejected(raw[:8] + b"x" + raw[9:], shapes, "payload_unreadable", "not JSON")
    rejected(raw[:-1], shapes, "payload_unreadable", "not valid safetensors")


def test_header_with_a_repeated_key_is_refused(raw, shapes):
    size = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + size].rstrip()
    doubled = header[:-1] + b',"__metadata__":{}}'
    doubled += b" " * (-len(doubled) % 8)
    rejected(len(doubled).to_bytes(8, "little") + doubled + raw[8 + size :], shapes,
             "payload_unreadable", "repeats a key")  # fmt: skip


def test_missing_tensor_is_refused(raw, shapes):
    metadata, arrays = sections(raw)
    del arrays[NORM + ":bits"]
    hostile = safetensors.numpy.save(arrays, metadata=metadata)
    rejected(hostile, shapes, "payload_tensors", r"missing \['model.layers.0.input_layernorm")


def test_extra_tensor_is_refused(raw, shapes):
    metadata, arrays = sections(raw)
    arrays["model.hidden_extra:bits"] = np.zeros(4, np.uint8)
    hostile = safetensors.numpy.save(arrays, metadata=metadata)
    rejected(hostile, shapes, "payload_tensors", r"extra \['model.hidden_extra:bits")


def test_wrong_length_arrays_are_refused(raw, shapes):
    metadata, arrays = sections(raw)
    short = dict(arrays) | {EMBED + ":scales": arrays[EMBED + ":scales"][:-1]}
    rejected(safetensors.numpy.save(short, metadata=metadata), shapes, "payload_shape", "shape")
    long = dict(arrays) | {NORM + ":bits": np.zeros(64, np.uint8)}
    rejected(safetensors.numpy.save(long, metadata=metadata), shapes, "payload_shape", "shape")


def test_wrong_dtype_is_refused(raw, shapes):
    metadata, arrays = sections(raw)
    arrays[EMBED + ":scales"] = arrays[EMBED + ":scales"].astype(np.float32)
    hostile = safetensors.numpy.save(arrays, metadata=metadata)
    rejected(hostile, shapes, "payload_dtype", "dtype 'F32', expected F16")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scale_is_refused(packed, meta, shapes, bad):
    scales = packed.tensors[EMBED].scales.copy()
    scales[17, 1] = bad
    hostile = with_tensor(packed, meta, EMBED, scales=scales)
    rejected(hostile, shapes, "payload_scale_not_finite", "NaN or inf")


def test_negative_scale_is_refused(packed, meta, shapes):
    scales = packed.tensors[NORM].scales.copy()
    scales[0, 0] = -scales[0, 0]
    hostile = with_tensor(packed, meta, NORM, scales=scales)
    rejected(hostile, shapes, "payload_scale_negative", "negative")


def test_index_outside_its_block_is_refused(packed, meta, shapes):
    # NORM is one run of 128 values keeping 2: gaps (0, 200) put the second index at 200
    low, unary = _pack_gaps(np.array([0, 200]), low_bits(CODEC))
    hostile = with_tensor(packed, meta, NORM, low=low, unary=unary)
    rejected(hostile, shapes, "payload_indices", "outside its 128-value block")


def test_duplicate_indices_are_refused(packed, meta, shapes):
    low, unary = _pack_gaps(np.array([5, 0]), low_bits(CODEC))  # indices 5, 5
    hostile = with_tensor(packed, meta, NORM, low=low, unary=unary)
    rejected(hostile, shapes, "payload_indices", "duplicate index")


def test_truncated_and_over_long_unary_streams_are_refused(packed, meta, shapes):
    unary = packed.tensors[EMBED].unary
    short = with_tensor(packed, meta, EMBED, unary=unary[:-1])
    rejected(short, shapes, "payload_indices", r"holds \d+ gaps, expected 16384")
    padded = with_tensor(packed, meta, EMBED, unary=np.append(unary, np.uint8(0)))
    rejected(padded, shapes, "payload_indices", "over-long")
    more = with_tensor(packed, meta, EMBED, unary=np.append(unary, np.uint8(0xFF)))
    rejected(more, shapes, "payload_indices", "holds 16392 gaps, expected 16384")


def test_nonzero_padding_bits_are_refused(packed, meta, shapes):
    # NORM keeps 2 values: 4 code bits, the byte's upper 4 are padding
    codes = packed.tensors[NORM].codes | np.uint8(0x80)
    rejected(with_tensor(packed, meta, NORM, codes=codes), shapes, "payload_values", "padding")


def test_missing_or_bad_metadata_is_refused(raw, shapes):
    metadata, arrays = sections(raw)
    rejected(safetensors.numpy.save(arrays), shapes, "payload_meta", "metadata must hold")
    bad_base = dict(metadata) | {"base_checkpoint": "AB" * 32}
    hostile = safetensors.numpy.save(arrays, metadata=bad_base)
    rejected(hostile, shapes, "payload_meta", r"bad base checkpoint \(64 hex\)")
    bad_round = dict(metadata) | {"round_index": "-1"}
    hostile = safetensors.numpy.save(arrays, metadata=bad_round)
    rejected(hostile, shapes, "payload_meta", "bad round index")


def test_payload_of_another_codec_is_refused(raw, shapes):
    other = CollabCodec(chunk=64, topk=128, error_decay=0.95)  # a larger bound: read as far
    rejected(raw, shapes, "payload_meta", "made with codec 'chunk=64;topk=64", codec=other)


def test_decoded_meta_is_what_was_sent(raw, shapes, meta):
    assert decode_payload(raw, shapes, CODEC)[0] == meta


# ---- fuzz ---------------------------------------------------------------------------------

SMALL = {"a": (16, 16), "b": (10,), "c": (3, 7)}
SMALL_CODEC = CollabCodec(chunk=8, topk=4, error_decay=1.0)
SMALL_RAW = encode_payload(compress(random_like(SMALL, 5), SMALL_CODEC), META)


HEADER = 8 + int.from_bytes(SMALL_RAW[:8], "little")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header_edits=st.lists(st.tuples(st.integers(0, HEADER - 1), st.integers(0, 255)), max_size=3),
    data_edits=st.lists(
        st.tuples(st.integers(HEADER, len(SMALL_RAW) - 1), st.integers(0, 255)), max_size=6
    ),
    cut=st.one_of(st.none(), st.integers(0, len(SMALL_RAW) - 1)),
    tail=st.binary(max_size=16),
)
def test_mutated_payloads_decode_or_are_rejected(header_edits, data_edits, cut, tail):
    raw = bytearray(SMALL_RAW)
    for at, byte in header_edits + data_edits:
        raw[at] = byte
    raw = bytes(raw if cut is None else raw[:cut]) + tail
    try:
        _, c = decode_payload(raw, SMALL, SMALL_CODEC)
    except PayloadRejected:
        return
    dense = decompress(c, SMALL, SMALL_CODEC)
    assert {n: tuple(t.shape) for n, t in dense.items()} == SMALL
    assert all(bool(torch.isfinite(t).all()) for t in dense.values())
