"""``python bench/peer.py --quick`` (docs/collab.md): real payload servers on loopback, hostile
ones among them; every honest payload is copied, and the JSON line carries the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_quick_peer_bench_copies_every_honest_payload_past_hostile_miners() -> None:
    out = subprocess.run([sys.executable, "bench/peer.py", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["miners"] == 8 and figures["honest_8_copied"] == 8
    assert figures["hostile_2_honest_copied"] == 8 and figures["hostile_2_honest_refused"] == 0
    assert "peer_slow, peer_unreachable" in out.stdout  # the trickler and the silent one
