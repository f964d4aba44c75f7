"""Yuma epoch time at 256/64, 1024/128 and 4096/256 uids/validators, both variants.

Baseline in the same run: the literal scalar oracle (``chain.yuma.reference``) at 256 uids, and an
exactness check (vectorised == oracle) there. Prints a table, then one JSON line.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crucible.chain.yuma import EpochInput, EpochParams, run_epoch  # noqa: E402
from crucible.chain.yuma.reference import reference_epoch  # noqa: E402

SIZES = [(256, 64), (1024, 128), (4096, 256)]


def make_input(
    n: int, validators: int, variant: str, seed: int = 0, liquid_alpha: bool = False
) -> EpochInput:
    rng = random.Random(seed)
    stake = [rng.randrange(10**12, 10**14) if i < validators else 0 for i in range(n)]
    weights = [
        [(j, rng.randrange(1, 65536)) for j in range(n)] if i < validators else [] for i in range(n)
    ]
    bonds = [
        [(j, rng.randrange(0, 65536)) for j in range(n)] if i < validators else [] for i in range(n)
    ]
    return EpochInput(
        variant=variant,
        block=10_000,
        params=EpochParams(
            max_allowed_validators=validators,
            last_mechanism_step_block=9_640,
            rao_emission=10**9,
            liquid_alpha=liquid_alpha,
        ),
        stake=stake,
        last_update=[9_990] * n,
        block_at_registration=[rng.randrange(0, 9_000) for _ in range(n)],
        validator_permit=[i < validators for i in range(n)],
        weights=weights,
        bonds=bonds,
    )


def timed(fn, inp: EpochInput, repeats: int) -> tuple[float, object]:
    samples, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(inp)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), out


# (label, variant, liquid alpha): liquid alpha only exists in Yuma3 and is the costliest path
# (a 30-term exp series per weight entry), so it is timed as its own row.
CASES = [("yuma3", "yuma3", False), ("yuma3+liquid", "yuma3", True), ("classic", "classic", False)]


def main() -> None:
    figures: dict[str, float | bool] = {}
    rows = []
    for label, variant, liquid in CASES:
        key = label.replace("+", "_")
        for n, validators in SIZES:
            inp = make_input(n, validators, variant, liquid_alpha=liquid)
            seconds, _ = timed(run_epoch, inp, 5 if n <= 1024 else 3)
            figures[f"{key}_{n}_ms"] = round(seconds * 1000, 2)
            rows.append((label, f"{n}/{validators}", f"{seconds * 1000:9.1f} ms", ""))
        inp = make_input(256, 64, variant, liquid_alpha=liquid)
        oracle_s, oracle_out = timed(reference_epoch, inp, 1)
        fast_s, fast_out = timed(run_epoch, inp, 5)
        exact = fast_out == oracle_out
        figures[f"{key}_256_oracle_ms"] = round(oracle_s * 1000, 1)
        figures[f"{key}_256_speedup_vs_oracle"] = round(oracle_s / fast_s, 1)
        figures[f"{key}_256_exact"] = exact
        rows.append(
            (
                label,
                "256/64 oracle",
                f"{oracle_s * 1000:9.1f} ms",
                f"x{oracle_s / fast_s:.0f} slower than vectorised, exact={exact}",
            )
        )
    print(f"{'variant':13} {'uids/validators':16} {'epoch time':>12}  note")
    for label, size, seconds, note in rows:
        print(f"{label:13} {size:16} {seconds:>12}  {note}")
    print("targets: 256 uids <= 20 ms, 4096 uids <= 1500 ms; times are medians of 3-5 runs")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
