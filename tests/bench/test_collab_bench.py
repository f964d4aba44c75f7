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
    assert any(line.startswith("round") and "vs one process" in line for line in lines)
