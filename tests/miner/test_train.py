"""Training: loss goes down, a run killed with kill -9 resumes to the same model, and the\ntraining loss is the model's own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from crucible.miner.train import CausalLMLoss, TrainConfig, lr_at, train
from crucible.models.build import tiny_model
from crucible.protocol.errors import ConfigError

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


def test_the_training_loss_is_the_models_own_loss_with_its_gradients() -> None:
    """``CausalLMLoss`` (the LM head chunk by chunk) against ``model(labels=...)``."""
    ids = torch.from_numpy(np.random.default_rng(2).integers(0, 512, size=(3, 40)))
    theirs, ours = tiny_model(), tiny_model()
    want = theirs(input_ids=ids, labels=ids).loss
    got = CausalLMLoss(ours)(ids)
    want.backward()
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for (name, a), b in zip(theirs.named_parameters(), ours.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name


def test_a_checkpoint_with_moments_by_position_still_resumes(tmp_path: Path) -> None:
    """Checkpoints written before moments were keyed by parameter name resume the same way."""
    torch.set_num_threads(1)
    cfg = TrainConfig(out_dir=tmp_path / "new", sequence_length=32, batch_size=4, max_steps=4, warmup_steps=2, checkpoint_every=2, progress=False)  # fmt: skip
    reference = train(tiny_model(), _tokens(), cfg)
    stopped = replace(cfg, out_dir=tmp_path / "old", token_budget=2 * 4 * 32)
    assert train(tiny_model(), _tokens(), stopped).steps == 2
    path = tmp_path / "old" / "checkpoint" / "optimizer.safetensors"
    by_name = load_file(str(path))
    model = tiny_model()
    decay = [n for n, p in model.named_parameters() if p.dim() >= 2]
    order = decay + [n for n, p in model.named_parameters() if p.dim() < 2]
    save_file({k.replace(f"{n}.", f"{i}.", 1): v for i, n in enumerate(order) for k, v in by_name.items() if k.rsplit(".", 1)[0] == n}, str(path))  # fmt: skip
    assert all(k.split(".")[0].isdigit() for k in load_file(str(path)))
    resumed = train(tiny_model(seed=5), _tokens(), replace(cfg, out_dir=tmp_path / "old"))
    a = load_file(str(reference.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert resumed.resumed_from == 2 and all(torch.equal(a[k], b[k]) for k in a)


def test_an_unknown_parallel_strategy_is_refused() -> None:
    with pytest.raises(ConfigError, match="parallel='zero'"):
        TrainConfig(out_dir=Path("."), parallel="zero")
