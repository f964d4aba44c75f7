"""Can a memorizer take the crown? Held-out data (public) against a fresh release (not).

Two miners with the same budget: the tiny competition's model shape, the same seed (so the same
initial weights and the same batch positions), the same steps × batch × sequence (default 220 × 8
× 256 tokens), trained with the miner's own loop (``crucible.miner.train.train``). The *honest*
miner trains on the ``train`` split; the *memorizer* on everything public, ``train`` + ``eval``,
with the evaluation works repeated until they are ``--eval-share`` of its tokens (``natural``:
no repetition, ~16 %; ``1``: the evaluation works alone). ``--eval-share natural,0.5,1`` trains
one memorizer per share against the one honest miner. Every memorizer commits later.

Both are judged with the validator's own code, on ``--rounds`` rounds (block hashes) of each
source: windows from ``round_windows`` (the spec's ``samples_per_round`` windows of
``sequence_length`` tokens), per-sample losses from ``per_sample_losses``, the pair from
``beats`` at the round's ε and the crown from ``score_round`` (the spec's ε schedule,
significance level, temperature). The sources: (a) the public held-out split (``eval``) and
(b) a fresh release, the ``fresh`` split's works (held back from both miners, as text written
after their commitments would be), through ``pool_from_documents`` as a release's documents are.

The floor ε in nats is ``epsilon.floor`` × the honest model's mean loss: an advantage below it
cannot make even the later model competitive. Goal: on fresh data the memorizer's advantage is
below the floor and not significant.

    python bench/integrity.py                          # 2 models: ~10-20 min on 2 busy CPU cores
    python bench/integrity.py --eval-share natural,0.5,1 --threads 1
    python bench/integrity.py --steps 40 --rounds 2    # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from crucible.competitions import specs_dir  # noqa: E402
from crucible.corpus.dataset import load_documents, token_stream  # noqa: E402
from crucible.corpus.fetch import CorpusPaths, fetch_corpus  # noqa: E402
from crucible.corpus.sources import Document  # noqa: E402
from crucible.corpus.tokenizer import load_competition_tokenizer  # noqa: E402
from crucible.miner.train import TrainConfig, train  # noqa: E402
from crucible.models.build import ModelShape, build_config, build_model, count_parameters  # noqa: E402
from crucible.protocol.competition import CompetitionSpec, load_competitions  # noqa: E402
from crucible.scoring.compete import Contender, EpsilonSchedule, beats, score_round  # noqa: E402
from crucible.scoring.losses import per_sample_losses  # noqa: E402
from crucible.scoring.pools import pool_from_documents  # noqa: E402
from crucible.scoring.sampling import EvalPool, is_eligible, round_block  # noqa: E402
from crucible.scoring.windows import load_eval_pool, round_windows  # noqa: E402

HONEST = 1  # uid; the memorizers are uids 2, 3, …
HONEST_COMMIT_BLOCK, LATER_BY_BLOCKS = 1_000, 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path("data"), help="corpus root (fetched if missing)")  # fmt: skip
    parser.add_argument("--competition", default="tiny")
    parser.add_argument("--steps", type=int, default=220, help="optimizer steps per miner")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-share", default="0.5", help="the evaluation works' share of each memorizer's tokens: fractions in (0, 1] or 'natural', comma-separated")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=4, help="rounds (block hashes) per source")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def memorizer_stream(train_ids: np.ndarray, eval_ids: np.ndarray, share: str) -> tuple[np.ndarray, float]:  # fmt: skip
    """train + eval, eval repeated to ``share`` of the tokens (``natural``: once; ``1``: eval
    alone); and the share the evaluation works actually have."""
    if share == "natural":
        repeats = 1
    else:
        fraction = float(share)
        if not 0 < fraction <= 1:
            raise SystemExit("--eval-share takes fractions in (0, 1] or 'natural'")
        if fraction == 1:
            return eval_ids, 1.0
        repeats = max(1, round(fraction * len(train_ids) / ((1 - fraction) * len(eval_ids))))
    stream = np.concatenate([train_ids, *([eval_ids] * repeats)])
    return stream, repeats * len(eval_ids) / len(stream)


def trained(tokens: np.ndarray, spec: CompetitionSpec, eos: int, args, out: Path):
    """A fresh model of the competition's default shape, trained by the miner's loop."""
    shape = ModelShape(vocab_size=spec.model.vocab_size, sequence_length=spec.model.sequence_length)
    model = build_model(build_config(shape, eos_token_id=eos), seed=args.seed)
    cfg = TrainConfig(
        out_dir=out, sequence_length=spec.model.sequence_length, batch_size=args.batch_size,
        max_steps=args.steps, seed=args.seed, device=args.device, eval_every=0,
        checkpoint_every=0, progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    train(model, tokens, cfg)
    return model.eval(), time.perf_counter() - start


def fresh_pool(data: Path, tok) -> EvalPool:
    """The ``fresh`` works as a fresh release's documents, into a pool the validator's way."""
    docs = load_documents(data, "fresh")
    return pool_from_documents([Document(i, t) for i, t in zip(docs["id"], docs["text"], strict=True)], tok)  # fmt: skip


def rounds(spec: CompetitionSpec, count: int) -> list[tuple[int, str]]:
    """(round block, block hash): rounds after the memorizer's commitment became eligible."""
    cadence = spec.evaluation.sync_cadence_blocks
    first = HONEST_COMMIT_BLOCK + LATER_BY_BLOCKS + spec.evaluation.eval_delay_blocks + cadence
    out = []
    for i in range(count):
        block = round_block(first + i * cadence, cadence)
        assert is_eligible(HONEST_COMMIT_BLOCK + LATER_BY_BLOCKS, block, spec.evaluation.eval_delay_blocks)  # fmt: skip
        out.append((block, "0x" + hashlib.sha256(f"integrity-bench:{block}".encode()).hexdigest()))
    return out


def judge(
    spec: CompetitionSpec, pool: EvalPool, models: dict, uid: int, block: int, block_hash: str
) -> dict:
    """One round of one source for one memorizer against the honest miner, scored exactly as a
    validator scores it (``models``: uid → model)."""
    _, samples, windows = round_windows(pool, spec, block_hash)
    batch = spec.evaluation.batch_size
    losses = {u: per_sample_losses(models[u], windows, batch_size=batch).losses for u in (HONEST, uid)}  # fmt: skip
    honest = Contender(HONEST, HONEST_COMMIT_BLOCK, losses[HONEST])
    memorizer = Contender(uid, HONEST_COMMIT_BLOCK + LATER_BY_BLOCKS, losses[uid])
    schedule = EpsilonSchedule(spec.epsilon.start, spec.epsilon.floor, spec.epsilon.decay_blocks)
    eps = schedule.epsilon(block - HONEST_COMMIT_BLOCK)
    wins, p_value, _, _ = beats(memorizer, honest, eps, spec.evaluation.significance_level)
    scores = score_round(
        [honest, memorizer], block=block, epsilon=schedule,
        significance_level=spec.evaluation.significance_level,
        temperature=spec.softmax_temperature, ema_alpha=spec.ema_alpha, ema_before={},
    )  # fmt: skip
    crown = max(scores.softmax, key=lambda u: (scores.softmax[u], -u))
    h, m = float(np.mean(losses[HONEST])), float(np.mean(losses[uid]))
    return {
        "block": block, "samples": len(samples), "honest_loss": h, "memorizer_loss": m,
        "advantage_nats": h - m, "advantage_pct": 100 * (h - m) / h,
        "memorizer_better": sum(a < b for a, b in zip(losses[uid], losses[HONEST], strict=True)),
        # what the sign test counts: samples the memorizer wins after the honest miner's ε
        "memorizer_wins_at_eps": sum(
            a < (1 - eps) * b for a, b in zip(losses[uid], losses[HONEST], strict=True)
        ),
        "epsilon": eps, "floor_eps_nats": spec.epsilon.floor * h,
        "advantage_over_floor": (h - m) / (spec.epsilon.floor * h),
        "p_value": p_value, "memorizer_beats": wins,
        "memorizer_competitive": uid in scores.competitive,
        "crown": "memorizer" if crown == uid else "honest",
    }  # fmt: skip


def report(figures: dict, results: dict[str, dict[str, list[dict]]]) -> None:
    """``results``: memorizer label → source → rounds."""
    print(
        f"integrity: memorizers (train + eval) against an honest miner (train), all "
        f"{figures['steps']} steps x {figures['batch']} x {figures['length']} tokens, "
        f"{figures['params'] / 1e6:.2f}M params, seed {figures['seed']}; each memorizer commits "
        f"{LATER_BY_BLOCKS} blocks after the honest miner; ε {figures['epsilon_floor']} at the floor"
    )  # fmt: skip
    print(f"{'memorizer':13} {'source':9} {'block':>6} {'honest':>7} {'memor.':>7} {'advantage':>18} {'floor ε':>8} {'adv/floor':>9} {'better':>7} {'wins@ε':>7} {'p (sign)':>9}  crown")  # fmt: skip
    for label, by_source in results.items():
        name = f"eval {figures['memorizer_eval_share'][label]:.0%}"
        for source, rows in by_source.items():
            for r in rows:
                adv = f"{r['advantage_nats']:+.4f} ({r['advantage_pct']:+.2f}%)"
                print(f"{name:13} {source:9} {r['block']:>6} {r['honest_loss']:>7.4f} {r['memorizer_loss']:>7.4f} {adv:>18} {r['floor_eps_nats']:>8.4f} {r['advantage_over_floor']:>+8.1f}x {r['memorizer_better']:>3}/{r['samples']:<3} {r['memorizer_wins_at_eps']:>3}/{r['samples']:<3} {r['p_value']:>9.2g}  {r['crown']}")  # fmt: skip
    alpha = figures["significance_level"]
    for label, by_source in results.items():
        for source, rows in by_source.items():
            n = len(rows)
            crowns = sum(r["crown"] == "memorizer" for r in rows)
            below = sum(r["advantage_nats"] < r["floor_eps_nats"] for r in rows)
            significant = sum(r["p_value"] < alpha for r in rows)
            mean_adv = float(np.mean([r["advantage_nats"] for r in rows]))
            print(f"eval {figures['memorizer_eval_share'][label]:.0%} on {source}: mean advantage {mean_adv:+.4f} nats; crown {crowns}/{n} rounds; below the floor ε {below}/{n}; significant (p < {alpha}) {significant}/{n}")  # fmt: skip
    print("goal: on fresh data the memorizer's advantage is below the floor ε and not significant")


def _rounded(key: str, value: object) -> object:
    if not isinstance(value, float):
        return value
    return float(f"{value:.3g}") if key == "p_value" else round(value, 6)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = load_competitions(specs_dir())[args.competition]
    if not CorpusPaths(args.data).fresh.is_file():
        print(f"fetching the corpus into {args.data} (~25 s)")
        fetch_corpus(args.data)
    tok = load_competition_tokenizer(spec.model, specs_dir())
    train_ids, eval_ids = (
        token_stream(args.data, "train", tok),
        token_stream(args.data, "eval", tok),
    )
    labels = [x.strip() for x in args.eval_share.split(",") if x.strip()]
    runs = {"honest": (HONEST, train_ids, 0.0)}
    for i, label in enumerate(labels):
        runs[label] = (HONEST + 1 + i, *memorizer_stream(train_ids, eval_ids, label))
    models, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="crucible-integrity-") as tmp:
        for i, (label, (uid, tokens, share)) in enumerate(runs.items()):
            who = "the honest miner" if uid == HONEST else f"memorizer {label} (eval {share:.0%})"
            print(f"training {who} on {len(tokens):,} tokens ({args.steps} steps)", flush=True)
            models[uid], seconds[label] = trained(tokens, spec, tok.eos_token_id, args, Path(tmp) / str(i))  # fmt: skip
    pools = {"held-out": load_eval_pool(args.data, tok), "fresh": fresh_pool(args.data, tok)}
    schedule = rounds(spec, args.rounds)
    results = {
        label: {
            src: [judge(spec, pool, models, runs[label][0], b, h) for b, h in schedule]
            for src, pool in pools.items()
        }  # fmt: skip
        for label in labels
    }
    figures = {
        "competition": spec.key, "steps": args.steps, "batch": args.batch_size,
        "length": spec.model.sequence_length, "seed": args.seed, "threads": args.threads,
        "params": count_parameters(models[HONEST]),
        "memorizer_eval_share": {label: round(runs[label][2], 4) for label in labels},
        "tokens": {label: len(runs[label][1]) for label in runs},
        "train_s": {label: round(s, 1) for label, s in seconds.items()},
        "significance_level": spec.evaluation.significance_level, "epsilon_floor": spec.epsilon.floor,
        "pool_tokens": {src: int(sum(len(t) for t in pool.tokens)) for src, pool in pools.items()},
    }  # fmt: skip
    report(figures, results)
    figures["results"] = {
        label: {
            src: [{k: _rounded(k, v) for k, v in r.items()} for r in rows]
            for src, rows in by.items()
        }  # fmt: skip
        for label, by in results.items()
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
