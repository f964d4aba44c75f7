"""``python bench/collab.py --quick`` (docs/collab.md) runs every part of the benchmark end to end
and ends with its JSON line; the figures it prints are the ones the page and the note quote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_quick_collab_bench_prints_every_figure() -> None:
    command = [sys.executable, "bench/collab.py", "--quick", "--data-dir", "tests/fixtures/corpus"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["rounds"] == 2
    runs = ("collab", "collab_fresh_adamw", "dense_average", "dense_diloco", "single_process")
    for run in runs:
        curve = figures[f"{run}_curve"]
        assert len(curve) == 3 and curve[-1] < curve[0], run
        assert figures[f"{run}_final_loss"] == pytest.approx(curve[-1], abs=1e-4)
    assert figures["delta_compression"] >= 150
    assert figures["free_rider_zero_weight_round"] == {
        k: 1 for k in ("random", "zero", "replay", "copy")
    }
    shares = figures["honest_pay_shares"]
    assert set(shares) == {f"m{i}" for i in range(4)}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert figures["honest_payloads_sent"] == 8  # four miners, two rounds
    assert 0 <= figures["honest_payloads_not_counted"] <= 8
    assert any(line.startswith("honest pay over 2 rounds") for line in lines)
    assert any(line.startswith("round") and "vs one process" in line for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_collab_only_run_takes_spec_overrides_and_reports_pay() -> None:
    override = json.dumps({"scoring": {"eval_windows": 6}})
    command = [sys.executable, "bench/collab.py", "--quick", "--collab-only", "--override", override,
               "--data-dir", "tests/fixtures/corpus"]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(figures["collab_curve"]) == 3
    assert figures["honest_payloads_sent"] == 8
    assert sum(figures["honest_pay_shares"].values()) == pytest.approx(1.0, abs=1e-3)


def test_a_bench_override_is_validated_like_the_spec_file() -> None:
    from bench.collab import bench_spec

    spec = bench_spec(False, {"outer_lr": 1.5, "scoring": {"eval_windows": 16}})
    assert (spec.outer_lr, spec.scoring.eval_windows, spec.scoring.gain_z) == (1.5, 16, 2.0)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        bench_spec(False, {"scoring": {"eval_windows": 0}})
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        bench_spec(False, {"outer_lrr": 1.0})  # a misspelt field is refused, not ignored
    with pytest.raises(ValueError, match="takes an object of its fields"):
        bench_spec(False, {"scoring": 5})
