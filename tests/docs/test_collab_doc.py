"""docs/collab.md: every command parses with the program's own parser, and the numbers the page
states are the shipped spec's."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from crucible.competitions import specs_dir
from crucible.protocol.collab import load_collab_specs
from tests.docs.flags import check_command

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "collab.md").read_text()


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_every_command_on_the_page_parses() -> None:
    commands = _commands()
    assert len(commands) >= 3
    for line in commands:
        words = shlex.split(line)
        if words[0] == "torchrun":  # torchrun's own flags, then our module's arguments
            i = words.index("-m")
            assert words[i + 1] == "crucible.neurons.miner" and "--nproc-per-node" in words[:i]
            line = shlex.join(["crucible-miner", *words[i + 2 :]])
        assert check_command(line) is None, line


def test_torchrun_knows_the_flag_the_page_uses() -> None:
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "--nproc-per-node" in out.stdout or "--nproc_per_node" in out.stdout


def test_the_page_states_the_shipped_spec() -> None:
    spec = load_collab_specs(specs_dir())["collab"]
    assert f"`round_blocks` blocks ({spec.round_blocks}" in DOC
    assert (
        f"`inner_steps` ({spec.inner_steps})" in DOC and f"`batch_size` ({spec.batch_size})" in DOC
    )
    assert f"`overlap_threshold` ({spec.scoring.overlap_threshold})" in DOC
    assert f"reward share ({spec.reward_share})" in DOC
    assert f"`eval_windows`\n   ({spec.scoring.eval_windows}) held-out windows" in DOC
    assert spec.codec.topk == 64 and spec.codec.chunk == 64 and "1.56 %" in DOC
