"""Training: loss goes down, and a run killed with kill -9 resumes to the same model."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from crucible.miner.train import TrainConfig, lr_at, train
from crucible.models.build import tiny_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[2])
torch.set_num_threads(1)
from pathlib import Path
from crucible.miner.train import TrainConfig, train
from crucible.models.build import tiny_model
tokens = np.random.default_rng(0).integers(0, 512, size=20_000).astype(np.int32)
cfg = TrainConfig(out_dir=Path(sys.argv[1]), sequence_length=32, batch_size=4, max_steps=int(sys.argv[3]),
                  warmup_steps=3, checkpoint_every=2, progress=False)
train(tiny_model(), tokens, cfg, on_step=lambda step, loss: __import__('time').sleep(0.15))
"""


def _tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 512, size=20_000).astype(np.int32)


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = TrainConfig(out_dir=Path("."), lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == 0.1 and lr_at(9, cfg) == 1.0
    assert lr_at(60, cfg) < lr_at(20, cfg) and abs(lr_at(110, cfg) - 0.1) < 1e-9


def test_training_lowers_the_loss_on_repeated_text(tmp_path: Path) -> None:
    tokens = np.tile(np.arange(50, dtype=np.int32), 200)  # a pattern a tiny model can learn
    losses = []
    cfg = TrainConfig(
        out_dir=tmp_path,
        sequence_length=32,
        batch_size=4,
        max_steps=30,
        lr=1e-2,
        warmup_steps=3,
        progress=False,
    )
    result = train(tiny_model(), tokens, cfg, on_step=lambda step, loss: losses.append(loss))
    assert losses[-1] < losses[0] / 2 and result.steps == 30
    assert (result.model_dir / "model.safetensors").exists()


def test_a_killed_run_resumes_to_the_same_model(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    steps = 8
    reference = train(
        tiny_model(), _tokens(),
        TrainConfig(out_dir=tmp_path / "ref", sequence_length=32, batch_size=4, max_steps=steps, warmup_steps=3, checkpoint_every=2, progress=False),
    )  # fmt: skip
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(ROOT), str(steps)])
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint" / "trainer.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint was written"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = train(
        tiny_model(seed=123), _tokens(),  # different init: everything must come from the checkpoint
        TrainConfig(out_dir=out, sequence_length=32, batch_size=4, max_steps=steps, warmup_steps=3, checkpoint_every=2, progress=False),
    )  # fmt: skip
    assert 0 < resumed.resumed_from < steps and resumed.steps == steps
    a = load_file(str(reference.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "the resumed run diverged from the uninterrupted one"
    )
