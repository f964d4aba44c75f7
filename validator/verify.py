"""``verify --reevaluate``: recompute a bundle's losses from the models and the block hash."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from crucible.corpus.tokenizer import load_tokenizer
from crucible.models.io import load_model_dir
from crucible.protocol.competition import CompetitionSpec
from crucible.scoring.losses import per_sample_losses
from crucible.scoring.windows import load_eval_pool, round_windows
from crucible.validator.bundle import Bundle

__all__ = ["reevaluate"]


def reevaluate(
    bundle: Bundle,
    competitions: Mapping[str, CompetitionSpec],
    specs_dir: Path,
    data_dir: Path,
    models_dir: Path,
) -> list[str]:
    """Differences between the bundle's losses and the ones recomputed here (empty = none)."""
    differences = []
    specs = {s.key: s for s in competitions.values()}
    for r in bundle.rounds:
        spec = specs.get(r.competition)
        if spec is None or spec.spec_hash != r.spec_hash:
            differences.append(f"{r.competition}: spec not available with hash {r.spec_hash[:12]}")
            continue
        tok = load_tokenizer(specs_dir / spec.model.tokenizer)
        seed, samples, windows = round_windows(load_eval_pool(data_dir, tok), spec, r.block_hash)
        if seed != r.seed or [s.sample_id for s in samples] != r.sample_ids:
            differences.append(f"{r.competition}: samples differ from the bundle's")
            continue
        for uid, digest in sorted(r.model_hashes.items()):
            path = Path(models_dir) / digest
            if not path.is_dir():
                differences.append(
                    f"{r.competition}: model of uid {uid} ({digest[:12]}) is not in the cache"
                )
                continue
            losses = per_sample_losses(
                load_model_dir(path, spec.model).model,
                windows,
                batch_size=spec.evaluation.batch_size,
            ).losses
            if uid in r.losses and losses != r.losses[uid]:
                worst = max(abs(a - b) for a, b in zip(losses, r.losses[uid], strict=True))
                differences.append(
                    f"{r.competition}: uid {uid} losses differ (max |Δ| = {worst:.3g})"
                )
    return differences
