"""Training under torchrun: 2 CPU processes (gloo) train exactly like one process on the same
global batch, with DDP and with FSDP; their checkpoint resumes in one process; the
``crucible-miner train`` command itself runs under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from crucible.competitions import specs_dir
from crucible.miner.distributed import Cluster, cluster_from_env
from crucible.miner.train import TrainConfig, batch_at, train
from crucible.models.build import tiny_model
from crucible.models.io import load_model_dir
from crucible.neurons.miner import main as miner_main
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
STEPS, STOP_AFTER = 4, 2
BUDGET = STOP_AFTER * 4 * 2 * 32  # the tokens of STOP_AFTER steps: batch 4 x 2 micro-steps x 32
# One worker per process: the same arguments on every rank; each rank reports what it saw.
WORKER = """
import json, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from crucible.miner.distributed import cluster_from_env, process_group
from crucible.miner.train import TrainConfig, train
from crucible.models.build import tiny_model
out, parallel, report = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
tokens = np.random.default_rng(0).integers(0, 512, size=20_000).astype(np.int32)
windows = np.random.default_rng(1).integers(0, 512, size=(4, 32))
cfg = TrainConfig(out_dir=out, sequence_length=32, batch_size=4, grad_accum=2, max_steps=int(sys.argv[4]),
                  token_budget=int(sys.argv[5]), warmup_steps=2, checkpoint_every=1, eval_every=2,
                  progress=False, parallel=parallel)
cluster, losses = cluster_from_env(), []
with process_group(cluster, "cpu"):
    result = train(tiny_model(), tokens, cfg, eval_windows=windows, cluster=cluster,
                   on_step=lambda step, loss: losses.append(loss))
report.mkdir(parents=True, exist_ok=True)
(report / f"rank{cluster.rank}.json").write_text(json.dumps(
    {"losses": losses, "eval": result.eval_loss, "steps": result.steps, "world": cluster.world}))
"""


def _tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 512, size=20_000).astype(np.int32)


def _config(out: Path, **overrides: object) -> TrainConfig:
    settings: dict = dict(
        out_dir=out, sequence_length=32, batch_size=4, grad_accum=2, max_steps=STEPS,
        warmup_steps=2, checkpoint_every=1, eval_every=2, progress=False,
    )  # fmt: skip
    return TrainConfig(**(settings | overrides))


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_each_rank_reads_its_own_share_of_every_global_batch() -> None:
    cfg = _config(Path("."), batch_size=6)
    whole = batch_at(_tokens(), cfg, step=5, micro=1)
    for world in (1, 2, 3):
        shares = [
            batch_at(_tokens(), cfg, 5, 1, Cluster(rank, world, rank).rows(6))
            for rank in range(world)
        ]
        assert torch.equal(torch.cat(shares), whole) and len({len(s) for s in shares}) == 1
    with pytest.raises(ConfigError, match="does not split evenly over 4 processes"):
        Cluster(0, 4, 0).rows(6)


def test_the_cluster_comes_from_torchruns_environment() -> None:
    assert cluster_from_env({}) == Cluster(0, 1, 0) and not Cluster().distributed
    on_node = cluster_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert on_node == Cluster(3, 4, 1) and not on_node.is_main
    assert on_node.device("cuda") == "cuda:1" and on_node.device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="inconsistent torchrun environment"):
        cluster_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="not integers"):
        cluster_from_env({"WORLD_SIZE": "two"})


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference, in one process: the whole run, and the same run stopped where the
    distributed one stops (its held-out loss at that step)."""
    torch.set_num_threads(1)
    losses: list[float] = []
    windows = np.random.default_rng(1).integers(0, 512, size=(4, 32))
    whole = train(
        tiny_model(), _tokens(), _config(tmp_path_factory.mktemp("one")),
        eval_windows=windows, on_step=lambda step, loss: losses.append(loss),
    )  # fmt: skip
    stopped = train(
        tiny_model(), _tokens(), _config(tmp_path_factory.mktemp("half"), token_budget=BUDGET),
        eval_windows=windows,
    )  # fmt: skip
    assert stopped.steps == STOP_AFTER
    return {"losses": losses, "eval": whole.eval_loss, "model": whole.model_dir,
            "eval_when_stopped": stopped.eval_loss}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_like_one_and_their_checkpoint_resumes_in_one(
    parallel: str, one_process, tmp_path: Path
) -> None:
    losses, eval_loss, model_dir = one_process["losses"], one_process["eval"], one_process["model"]
    out, report, script = tmp_path / "run", tmp_path / "report", tmp_path / "worker.py"
    script.write_text(WORKER)
    _torchrun(str(script), str(out), parallel, str(report), str(STEPS), str(BUDGET))
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [STOP_AFTER, STOP_AFTER] and ranks[0]["world"] == 2
    assert ranks[0]["losses"] == ranks[1]["losses"]  # every rank knows the global mean loss
    assert np.allclose(ranks[0]["losses"], losses[:STOP_AFTER], rtol=1e-5, atol=0)
    assert ranks[0]["eval"] == pytest.approx(one_process["eval_when_stopped"], rel=1e-5)
    assert ranks[1]["eval"] is None  # only rank 0 evaluates
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "model", "train_config.json"]
    assert json.loads((out / "checkpoint" / "trainer.json").read_text())["step"] == STOP_AFTER

    resumed_losses: list[float] = []
    resumed = train(
        tiny_model(seed=9), _tokens(), _config(out),  # everything comes from the checkpoint
        eval_windows=np.random.default_rng(1).integers(0, 512, size=(4, 32)),
        on_step=lambda step, loss: resumed_losses.append(loss),
    )  # fmt: skip
    assert resumed.resumed_from == STOP_AFTER and resumed.steps == STEPS
    assert np.allclose(resumed_losses, losses[STOP_AFTER:], rtol=1e-5, atol=0)
    assert resumed.eval_loss == pytest.approx(eval_loss, rel=1e-5)
    a, b = load_file(str(model_dir / "model.safetensors")), load_file(str(resumed.model_dir / "model.safetensors"))  # fmt: skip
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


@pytest.mark.slow
def test_the_train_command_runs_under_torchrun_like_one_process(tmp_path: Path) -> None:
    args = ["train", "--data-dir", str(FIXTURE), "--steps", "2", "--batch-size", "4",
            "--layers", "1", "--hidden", "32", "--heads", "2", "--ffn", "64", "--quiet",
            "--eval-every", "0", "--checkpoint-every", "1", "--threads", "1", "--offline"]  # fmt: skip
    done = _torchrun("-m", "crucible.neurons.miner", *args, "--out", str(tmp_path / "two"))
    said = [line for line in done.stdout.splitlines() if line.startswith("trained")]
    assert len(said) == 1 and "trained 2 steps on 2 processes (ddp)" in said[0]  # rank 0 only
    threads = torch.get_num_threads()
    try:
        assert miner_main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    spec = load_competitions(specs_dir())["tiny"]
    two = load_model_dir(tmp_path / "two" / "model", spec.model).model.state_dict()
    one = load_model_dir(tmp_path / "one" / "model", spec.model).model.state_dict()
    assert all(torch.allclose(one[k], two[k], rtol=0, atol=1e-5) for k in one)
    meta = [json.loads((tmp_path / d / "checkpoint" / "trainer.json").read_text()) for d in ("one", "two")]  # fmt: skip
    assert meta[0]["step"] == meta[1]["step"] == 2
    assert meta[1]["loss"] == pytest.approx(meta[0]["loss"], rel=1e-5)


def _documented_train_commands() -> list[list[str]]:
    """Every ``crucible-miner train`` / ``torchrun … -m crucible.neurons.miner train`` command in
    docs/training.md and in ``train --help``, as the argument list after ``train``."""
    import shlex

    from crucible.neurons.miner import TRAIN_HELP

    text = (ROOT / "docs" / "training.md").read_text() + TRAIN_HELP.replace("\\\\", "\\")
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip().startswith(("torchrun", "crucible-miner")):
            continue  # prose
        words = shlex.split(line.split("#")[0])
        for entry in (["crucible-miner", "train"], ["crucible.neurons.miner", "train"]):
            starts = [i for i in range(len(words) - 1) if words[i : i + 2] == entry]
            commands += [words[i + 2 :] for i in starts]
    return commands


def test_the_documented_commands_parse_and_the_small_example_fits_its_competition() -> None:
    from crucible.models.build import ModelShape, build_config, build_model, count_parameters
    from crucible.neurons.miner import build_parser, cmd_train

    commands = _documented_train_commands()
    assert len(commands) >= 7  # 3 + 2 in the doc, 2 in the help
    specs = load_competitions(specs_dir())
    for words in commands:
        args = build_parser().parse_args(["train", *words])
        assert args.fn is cmd_train
        if args.competition == "small":
            limits = specs["small"].model
            shape = ModelShape(args.architecture, limits.vocab_size, limits.sequence_length,
                               args.layers, args.hidden, args.heads, args.ffn)  # fmt: skip
            size = count_parameters(build_model(build_config(shape), device="meta"))
            assert limits.min_parameters <= size <= limits.max_parameters
            assert args.batch_size % 8 == 0  # splits over the 8 processes of the example
