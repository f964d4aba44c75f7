"""Sampling from a block hash, batched evaluation, bundles and state on disk."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from crucible.models.build import tiny_model
from crucible.scoring.losses import WORST_LOSS, batch_size_for_budget, per_sample_losses
from crucible.scoring.sampling import (
    EvalPool,
    is_eligible,
    round_block,
    seed_from_block_hash,
    select_samples,
)
from crucible.validator.state import ModelEntry, ValidatorState, load_state, save_state

ROOT = Path(__file__).resolve().parents[2]


def pool() -> EvalPool:
    rng = np.random.default_rng(0)
    return EvalPool.from_documents(
        [(f"doc{i}", rng.integers(0, 512, size=300 + 50 * i).tolist()) for i in range(4)]
    )


def test_round_block_seed_and_eligibility() -> None:
    assert round_block(1234, 100) == 1200 and round_block(1200, 100) == 1200
    assert seed_from_block_hash("0xabc", "tiny@1") == seed_from_block_hash("0xabc", "tiny@1")
    assert seed_from_block_hash("0xabc", "tiny@1") != seed_from_block_hash("0xabd", "tiny@1")
    assert is_eligible(commit_block=90, at_round_block=100, eval_delay_blocks=10)
    assert not is_eligible(commit_block=91, at_round_block=100, eval_delay_blocks=10)


def test_same_hash_same_samples_other_hash_other_samples() -> None:
    p = pool()
    a = select_samples(p, seed_from_block_hash("0x01", "tiny@1"), 16, 64)
    b = select_samples(p, seed_from_block_hash("0x01", "tiny@1"), 16, 64)
    c = select_samples(p, seed_from_block_hash("0x02", "tiny@1"), 16, 64)
    assert a == b and a != c
    assert all(len(p.window(s, 64)) == 64 for s in a)


def test_batched_losses_equal_one_at_a_time_and_a_hand_computation() -> None:
    model = tiny_model()
    windows = np.random.default_rng(1).integers(0, 512, size=(6, 32))
    batched = per_sample_losses(model, windows, batch_size=4)
    single = [
        per_sample_losses(model, windows[i : i + 1], batch_size=1).losses[0] for i in range(6)
    ]
    assert np.allclose(batched.losses, single, atol=1e-5)
    with torch.no_grad():
        logits = model(torch.from_numpy(windows[:1])).logits[0, :-1]
        by_hand = (
            -torch.log_softmax(logits, -1)
            .gather(1, torch.from_numpy(windows[0, 1:, None]))
            .mean()
            .item()
        )
    assert batched.losses[0] == pytest.approx(by_hand, abs=1e-5)
    assert per_sample_losses(model, windows, batch_size=4).losses == batched.losses  # deterministic


def test_a_broken_model_scores_worst_with_a_reason() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(float("nan"))
    result = per_sample_losses(model, np.zeros((3, 16), dtype=np.int64), batch_size=2)
    assert result.losses == [WORST_LOSS] * 3 and result.error == "non-finite loss"
    bad_ids = np.full((2, 8), 10_000)  # beyond the vocabulary
    assert per_sample_losses(tiny_model(), bad_ids, batch_size=2).error.startswith("model failed")


def test_batch_size_respects_the_memory_budget() -> None:
    assert batch_size_for_budget(1_000_000, 8192, 256, 64, budget_bytes=10**12) == 64
    assert batch_size_for_budget(1_000_000, 8192, 256, 64, budget_bytes=100_000_000) == 3


def test_state_migrates_from_v1(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"schema_version": 1, "scores": {"3": 0.25}, "hotkeys": ["x"]}))
    assert load_state(path).ema == {"tiny": {3: 0.25}}


def test_state_is_never_corrupt_after_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    script = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from pathlib import Path\n"
        "from validator.state import ValidatorState, ModelEntry, save_state\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    s = ValidatorState(ema={'tiny': {u: i / 1000 for u in range(200)}}, last_weights_block=i,\n"
        "        models={u: ModelEntry(hotkey='h' * 48, commitment='c' * 100, commit_block=i, status='ok') for u in range(50)})\n"
        "    save_state(s, Path(sys.argv[1]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(ROOT)])
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_state(path)  # parses: the file is a whole old or new version
    assert state.last_weights_block >= 1 and len(state.models) == 50
    save_state(
        ValidatorState(
            models={1: ModelEntry(hotkey="h", commitment="c", commit_block=1, status="ok")}
        ),
        path,
    )
    assert load_state(path).models[1].status == "ok"
