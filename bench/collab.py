"""Collaborative training of the collab competition's model: miners vs one process, bytes sent,
and what free riders and dropouts get — through the validator's own round code.

Every run trains the spec's model (``crucible/competitions/collab.toml``) on the corpus's
training split and is judged on one fixed set of held-out windows:

* ``collab``    4 miners × R rounds: H inner AdamW steps each on its assignment (each miner's
                AdamW moments kept from round to round, as ``crucible-miner collab`` does), error
                feedback, compressed payloads (``crucible.collab.codec``), every round scored,
                judged and aggregated by ``crucible.collab.engine.score_payloads`` — what the
                validator runs;
* ``fresh``     the same with a fresh AdamW every round (what the inner optimizer's state is worth);
* ``no-EF``     the same as ``collab`` with the residual dropped every round (no error feedback);
* ``dense``     the same miners and windows, fp32 Δs with nothing compressed or scored,
                median-clipped and averaged (outer SGD, lr 1: local SGD) — local steps' cost alone;
                and beside it DiLoCo's Nesterov outer step (lr 0.7, momentum 0.9) on the same Δs;
* ``baseline``  one process, R·H AdamW steps of 4× the batch on the very same windows: the same
                tokens and inner optimizer as the four miners together (data parallel's run);
* free riders   3 honest miners + one sending a random, zero, replayed (last round's honest
                payload) or copied (this round's, committed later) payload: its weight per round;
* dropout       4 honest miners, two of them away for rounds 2–3, back from round 4.

Bytes: a miner's payload per round against fp32 data-parallel training, which all-reduces every
step's gradient (H × 4 × parameters bytes per miner per round; a ring all-reduce sends about
that much again, so the ratio is a lower bound).

    python bench/collab.py                    # R = 8 rounds on data/ (crucible data fetch)
    python bench/collab.py --quick            # 2 rounds, H = 4, few windows: a smoke run
    python bench/collab.py --gap-only --rounds 16   # only the loss curves, a longer horizon
    python bench/collab.py --collab-only --rounds 32 --override '{"scoring": {"eval_windows": 16}}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bittensor_core import Keypair  # noqa: E402

from crucible.collab.aggregate import aggregate_round  # noqa: E402
from crucible.collab.assignment import random_windows, windows_batch  # noqa: E402
from crucible.collab.codec import (  # noqa: E402
    ErrorFeedback,
    PayloadMeta,
    compress,
    decode_payload,
    dense_bytes,
    encode_payload,
    index_overlap,
)
from crucible.collab.engine import Submission, assigned_windows, draw_round_data, score_payloads  # noqa: E402
from crucible.collab.measure import mean_loss  # noqa: E402
from crucible.collab.shared_model import build_shared_model, genesis_params, param_shapes  # noqa: E402
from crucible.competitions import specs_dir  # noqa: E402
from crucible.miner.collab_train import (
    InnerMoments,
    inner_train,
    interleaved_windows,
    one_process_curve,
)  # noqa: E402
from crucible.protocol.collab import CollabSpec, load_collab_specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = "0" * 64  # the payloads' base-checkpoint field (the bench holds θ itself)


def _hash(text: str) -> str:
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


def _hotkey(name: str) -> str:
    return Keypair.create_from_seed(hashlib.sha256(f"bench-{name}".encode()).digest()).ss58_address


@dataclass
class Miner:
    name: str
    kind: str = "honest"  # honest | random | zero | replay | copy
    away: frozenset[int] = frozenset()  # rounds it sends nothing
    hotkey: str = ""
    feedback: ErrorFeedback | None = None
    moments: InnerMoments | None = None  # None: a fresh AdamW every round


@dataclass
class History:
    held_out: list[float] = field(default_factory=list)  # θ's loss before round 1 … after round R
    weights: list[dict[str, float]] = field(default_factory=list)
    verdicts: list[dict[str, str]] = field(default_factory=list)
    payload_bytes: list[int] = field(default_factory=list)
    honest_overlap: float = 0.0  # largest top-k overlap between two honest payloads of a round
    self_overlap: float = 0.0  # largest overlap of an honest payload with the last round's
    seconds: float = 0.0


def _delta(spec: CollabSpec, params, tokens, starts, moments) -> dict[str, torch.Tensor]:
    model = build_shared_model(spec, params)
    return inner_train(model, tokens, starts, steps=spec.inner_steps, batch_size=spec.batch_size,
                       lr=spec.inner_lr, weight_decay=spec.inner_weight_decay,
                       sequence_length=spec.model.sequence_length, moments=moments)  # fmt: skip


def _payload(spec, m: Miner, r: int, params, tokens, assign: str, feedback: bool, honest: dict):
    """(compressed, encoded bytes) for miner ``m`` in round ``r``, or None when it is away."""
    shapes = param_shapes(params)
    if r in m.away:
        return None
    if m.kind == "honest":
        starts = assigned_windows(spec, m.hotkey, r, assign, len(tokens))
        delta = _delta(spec, params, tokens, starts, m.moments)
        c = m.feedback.step(delta) if feedback else compress(delta, spec.codec)
    elif m.kind == "random":
        g = torch.Generator().manual_seed(r)
        c = compress({n: torch.randn(s, generator=g) * 1e-3 for n, s in shapes.items()}, spec.codec)
    elif m.kind == "zero":
        c = compress({n: torch.zeros(s) for n, s in shapes.items()}, spec.codec)
    else:  # replay: the first honest miner's payload of the last round; copy: of this round
        c = honest.get("last" if m.kind == "replay" else "now")
        if c is None:
            return None
    raw = encode_payload(c, PayloadMeta(spec.key, r, BASE, m.hotkey))
    return decode_payload(raw, shapes, spec.codec)[1], raw


def simulate(spec, tokens, eval_tokens, miners: list[Miner], rounds: int, *, feedback: bool = True,
             keep_moments: bool = True, held: torch.Tensor) -> History:  # fmt: skip
    """R rounds of the collab competition, scored by the validator's ``score_payloads``."""
    params, momentum = genesis_params(spec), None
    shapes = param_shapes(params)
    for m in miners:
        m.hotkey, m.feedback = _hotkey(m.name), ErrorFeedback(shapes, spec.codec)
        m.moments = InnerMoments() if keep_moments else None
    history, ratings, previous, honest = History(), {}, {}, {}
    order = sorted(miners, key=lambda m: m.kind in ("replay", "copy"))  # copies come after
    started = time.perf_counter()
    for r in range(1, rounds + 1):
        model = build_shared_model(spec, params)
        history.held_out.append(mean_loss(model, held, 16))
        assign, data = _hash(f"assign:{r}"), _hash(f"data:{r}")
        subs = {}
        for uid, m in enumerate(order):
            out = _payload(spec, m, r, params, tokens, assign, feedback, honest)
            if out is None:
                continue
            c, raw = out
            if m.kind == "honest" and "now" not in honest:
                honest["now"] = c
            history.payload_bytes += [len(raw)] if m.kind == "honest" else []
            late = 5 if m.kind == "copy" else 0
            subs[uid] = Submission(
                uid, m.hotkey, 100 * r + uid + late, hashlib.sha256(raw).hexdigest(), c
            )
        _overlaps(history, subs, order, previous)
        accepted = {u: s.hotkey for u, s in subs.items()}
        rd = draw_round_data(spec, tokens, eval_tokens, accepted, r, assign, data)
        result = score_payloads(spec, model, params, momentum, subs, rd, previous, ratings, {})
        params, momentum = result.aggregate.params, result.aggregate.momentum
        ratings = result.judged.ratings_after
        previous = {s.payload_hash: s.compressed for s in subs.values()}
        honest = {"last": honest.get("now")}
        history.weights.append({order[u].name: w for u, w in result.judged.weights.items()})
        history.verdicts.append({order[u].name: v for u, v in result.judged.verdicts.items()})
    history.held_out.append(mean_loss(build_shared_model(spec, params), held, 16))
    history.seconds = time.perf_counter() - started
    return history


def _overlaps(history: History, subs, order, previous) -> None:
    honest = [s for u, s in subs.items() if order[u].kind == "honest"]
    for i, a in enumerate(honest):
        for b in honest[i + 1 :]:
            history.honest_overlap = max(
                history.honest_overlap, index_overlap(a.compressed, b.compressed)
            )
        for old in previous.values():
            history.self_overlap = max(history.self_overlap, index_overlap(a.compressed, old))


def baseline(spec, tokens, miners: list[Miner], rounds: int, held: torch.Tensor) -> list[float]:
    """One process, the four miners' windows of every round as one 4×-batch run: its held-out
    loss before training and after every H steps (one round's worth of tokens)."""
    starts = np.concatenate([
        interleaved_windows(spec, [assigned_windows(spec, _hotkey(m.name), r, _hash(f"assign:{r}"), len(tokens)) for m in miners])
        for r in range(1, rounds + 1)
    ])  # fmt: skip
    start = mean_loss(build_shared_model(spec, genesis_params(spec)), held, 16)
    return [start, *one_process_curve(spec, tokens, starts, miners=len(miners), held=held)]


AVERAGE_OUTER = {"lr": 1.0, "momentum_factor": 0.0, "nesterov": False}  # θ ← mean of the miners' θ
DILOCO_OUTER = {"lr": 0.7, "momentum_factor": 0.9, "nesterov": True}  # DiLoCo's published step


def dense(
    spec, tokens, miners: list[Miner], rounds: int, held: torch.Tensor, outer: dict
) -> list[float]:
    """The same miners and windows with nothing compressed or scored: every round the plain fp32
    Δs (each miner's AdamW moments kept, as in the collab run) are median-clipped, as the
    validator does, and applied by the ``outer`` step — what sparsity costs, apart from what
    local steps cost."""
    params, momentum = genesis_params(spec), None
    moments = [InnerMoments() for _ in miners]
    curve = [mean_loss(build_shared_model(spec, params), held, 16)]
    for r in range(1, rounds + 1):
        deltas = {
            uid: _delta(spec, params, tokens, assigned_windows(spec, _hotkey(m.name), r, _hash(f"assign:{r}"), len(tokens)), moments[uid])
            for uid, m in enumerate(miners)
        }  # fmt: skip
        result = aggregate_round(params, momentum, deltas, **outer)
        params, momentum = result.params, result.momentum
        curve.append(mean_loss(build_shared_model(spec, params), held, 16))
    return curve


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="2 rounds of H = 4 (a smoke run)")
    parser.add_argument(
        "--riders-only", action="store_true", help="only the free-rider and dropout runs"
    )
    parser.add_argument(
        "--gap-only", action="store_true",
        help="only the loss curves: collab (kept and fresh AdamW), dense and one process (long horizons)",
    )  # fmt: skip
    parser.add_argument(
        "--collab-only", action="store_true",
        help="only the collaborative run: its loss curve, the honest miners' pay and uncounted payloads",
    )  # fmt: skip
    parser.add_argument(
        "--override", type=json.loads, default={}, metavar="JSON",
        help='spec fields to change, e.g. \'{"outer_lr": 1.5, "scoring": {"eval_windows": 16}}\'',
    )  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer

    spec = bench_spec(args.quick, args.override)
    rounds = 2 if args.quick else args.rounds
    torch.set_num_threads(1)
    data = (
        args.data_dir
        if (args.data_dir / "corpus" / "train.jsonl").exists()
        else ROOT / "tests" / "fixtures" / "corpus"
    )
    tok = load_tokenizer(specs_dir() / spec.model.tokenizer)
    tokens, eval_tokens = (token_stream(data, s, tok) for s in ("train", "eval"))
    L = spec.model.sequence_length
    held = windows_batch(
        eval_tokens,
        random_windows(
            "bench-held-out", 16 if args.quick else 64, len(eval_tokens), L, np.zeros(0, np.int64)
        ),
        L,
    )
    four = lambda: [Miner(f"m{i}") for i in range(4)]  # noqa: E731
    if args.riders_only:
        print(json.dumps(report_riders(*_adversity(spec, tokens, eval_tokens, rounds, held))))
        return
    collab = simulate(spec, tokens, eval_tokens, four(), rounds, held=held)
    if args.collab_only:
        curve = [round(x, 4) for x in collab.held_out]
        print(f"collab held-out loss per round: {' '.join(f'{x:.4f}' for x in curve)}")
        print(json.dumps({"rounds": rounds, "collab_curve": curve, **report_pay(collab)}))
        return
    fresh = simulate(spec, tokens, eval_tokens, four(), rounds, keep_moments=False, held=held)
    curves = {
        "collab": collab.held_out,
        "collab_fresh_adamw": fresh.held_out,
        "dense_average": dense(spec, tokens, four(), rounds, held, AVERAGE_OUTER),
        "dense_diloco": dense(spec, tokens, four(), rounds, held, DILOCO_OUTER),
        "single_process": baseline(spec, tokens, four(), rounds, held),
    }
    if args.gap_only:
        print(json.dumps(report_gap(curves) | report_pay(collab)))
        return
    no_ef = simulate(spec, tokens, eval_tokens, four(), rounds, feedback=False, held=held)
    report(
        spec, rounds, collab, curves, no_ef, *_adversity(spec, tokens, eval_tokens, rounds, held)
    )


def bench_spec(quick: bool, override: dict) -> CollabSpec:
    """The shipped collab spec with ``override``'s fields changed (``codec`` and ``scoring`` field
    by field), validated as the spec file is; ``quick``: sizes that only show the code works."""
    spec = load_collab_specs(specs_dir())["collab"]
    if quick:
        override = {"inner_steps": 4, "batch_size": 2, **override,
                    "scoring": {"eval_windows": 4, "proof_windows": 8, **override.get("scoring", {})}}  # fmt: skip
    fields = spec.model_dump()
    for key, value in override.items():
        nested = key in ("codec", "scoring", "model")
        if nested and not isinstance(value, dict):
            raise ValueError(f"--override: {key!r} takes an object of its fields, not {value!r}")
        fields[key] = fields[key] | value if nested else value
    return CollabSpec.model_validate(fields)


def _adversity(spec, tokens, eval_tokens, rounds: int, held):
    """(free-rider runs by kind, the dropout run)."""
    riders = {}
    for kind in ("random", "zero", "replay", "copy"):
        miners = [Miner(f"m{i}") for i in range(3)] + [Miner("rider", kind)]
        riders[kind] = simulate(spec, tokens, eval_tokens, miners, min(rounds, 5), held=held)
    away = frozenset({2, 3})
    dropout = simulate(spec, tokens, eval_tokens, [Miner("m0"), Miner("m1"), Miner("m2", away=away), Miner("m3", away=away)], min(rounds, 5), held=held)  # fmt: skip
    return riders, dropout


CURVE_NAMES = {
    "collab": "collab (EF)",
    "collab_fresh_adamw": "fresh AdamW",
    "dense_average": "dense, averaged",
    "dense_diloco": "dense DiLoCo",
    "single_process": "one process",
}  # the table's column for each run


def report_gap(curves: dict[str, list[float]]) -> dict:
    """Prints every run's held-out loss after each round (``CURVE_NAMES``' runs, one process
    last) and each run's gap to one process; returns the figures."""
    runs = [k for k in CURVE_NAMES if k != "single_process"]
    single = curves["single_process"]
    print(f"{'round':>5}" + "".join(f"{CURVE_NAMES[k]:>16}" for k in [*runs, "single_process"])
          + "   vs one process: " + ", ".join(CURVE_NAMES[k] for k in runs))  # fmt: skip
    for r, one in enumerate(single):
        gaps = " ".join(f"{(curves[k][r] - one) / one:>+8.1%}" for k in runs)
        print(
            f"{r:>5}"
            + "".join(f"{curves[k][r]:>16.4f}" for k in [*runs, "single_process"])
            + "   "
            + gaps
        )
    figures: dict = {"rounds": len(single) - 1}
    for key in CURVE_NAMES:
        figures[f"{key}_curve"] = [round(x, 4) for x in curves[key]]
        figures[f"{key}_final_loss"] = round(curves[key][-1], 5)
    for key in runs:
        figures[f"{key}_vs_single"] = round((curves[key][-1] - single[-1]) / single[-1], 5)
    print("final: " + ", ".join(f"{CURVE_NAMES[k]} {curves[k][-1]:.4f} ({figures[f'{k}_vs_single']:+.2%})" for k in runs)
          + f", one process {single[-1]:.4f}")  # fmt: skip
    return figures


def report(spec, rounds, collab: History, curves, no_ef, riders, dropout) -> None:
    parameters = sum(int(np.prod(s)) for s in param_shapes(genesis_params(spec)).values())
    dense = dense_bytes(param_shapes(genesis_params(spec)))
    payload = max(collab.payload_bytes)
    dp_bytes = spec.inner_steps * dense
    print(
        f"collab model: {parameters:,} parameters; {rounds} rounds of H = {spec.inner_steps} inner steps, batch {spec.batch_size} × {spec.model.sequence_length} tokens per miner"
    )
    print(f"collab without EF, held-out per round: {' '.join(f'{x:.3f}' for x in no_ef.held_out)}")
    print(
        f"bytes per miner per round: payload {payload:,} vs fp32 Δ {dense:,} ({dense / payload:.0f}× compression of Δ) vs data-parallel all-reduce {dp_bytes:,} ({dp_bytes / payload:,.0f}× less)"
    )
    print(
        f"top-k overlap: honest pairs ≤ {collab.honest_overlap:.3f}, honest vs last round ≤ {collab.self_overlap:.3f} (copy threshold {spec.scoring.overlap_threshold})"
    )
    adversity = report_riders(riders, dropout)
    print()
    figures = {
        "parameters": parameters, "inner_steps": spec.inner_steps, **report_gap(curves),
        **report_pay(collab),
        "no_ef_final_loss": round(no_ef.held_out[-1], 5),
        "payload_bytes": payload, "delta_fp32_bytes": dense, "delta_compression": round(dense / payload, 1),
        "vs_data_parallel": round(dp_bytes / payload, 1), "honest_overlap_max": round(collab.honest_overlap, 4),
        "self_overlap_max": round(collab.self_overlap, 4), **adversity,
        "collab_seconds": round(collab.seconds, 1),
    }  # fmt: skip
    print(json.dumps(figures))


def report_pay(collab: History) -> dict:
    """What four equally honest miners were paid over the run (each one's weight summed over
    the rounds, as a share of the total) and how many of their payloads were not counted."""
    names = sorted({n for w in collab.weights for n in w} | {n for v in collab.verdicts for n in v})
    total = sum(sum(w.values()) for w in collab.weights) or 1.0
    shares = {n: sum(w.get(n, 0.0) for w in collab.weights) / total for n in names}
    uncounted = sum(1 for v in collab.verdicts for verdict in v.values() if verdict != "ok")
    sent = sum(len(v) for v in collab.verdicts)
    most = max(shares.values(), default=0.0)
    spread = min(shares.values()) / most if most > 0 else 0.0
    print(
        f"honest pay over {len(collab.weights)} rounds: "
        + ", ".join(f"{n} {s:.1%}" for n, s in shares.items())
        + f" (least / most {spread:.2f}); honest payloads not counted: {uncounted} of {sent}"
    )
    return {
        "honest_pay_shares": {n: round(s, 4) for n, s in shares.items()},
        "honest_pay_least_over_most": round(spread, 3),
        "honest_payloads_not_counted": uncounted,
        "honest_payloads_sent": sent,
    }


def report_riders(riders, dropout) -> dict:
    print(f"\n{'free rider':<10}{'weight per round':>40}   verdict (last round)")
    zero_at, weights = {}, {}
    for kind, h in riders.items():
        ws = weights[kind] = [round(w.get("rider", 0.0), 4) for w in h.weights]
        zero_at[kind] = next((i + 1 for i, w in enumerate(ws) if w == 0.0), None)
        honest_kept = all(all(w.get(f"m{i}", 0) > 0 for i in range(3)) for w in h.weights)
        print(
            f"{kind:<10}{' '.join(f'{w:.3f}' for w in ws):>40}   {h.verdicts[-1].get('rider', 'sent nothing')}; honest keep weight: {honest_kept}"
        )
    print(
        f"\ndropout (m2, m3 away in rounds 2–3): held-out {' '.join(f'{x:.3f}' for x in dropout.held_out)}; weights after: {json.dumps({k: round(v, 3) for k, v in dropout.weights[-1].items()})}"
    )
    return {
        "free_rider_zero_weight_round": zero_at,
        "free_rider_weights": weights,
        "dropout_losses": [round(x, 4) for x in dropout.held_out],
    }


if __name__ == "__main__":
    main()
