"""The README's "three users" section, run as written, in order, in one terminal session.

A fresh HOME (so ``btcli wallet create`` writes real bittensor 11 wallets there), a fresh working
directory, free loopback ports given through the documented variables (``CRUCIBLE_LOCALNET_URL``,
``CRUCIBLE_MINER_PORT``, ``CRUCIBLE_GATEWAY_PORT``, ``CRUCIBLE_GATEWAY_URL``). Shell blocks are
typed line by line; Python blocks are saved to a file and run with ``python`` in the same session.
The one change to the text: the training command's ``--steps 2000`` becomes ``--steps 2`` (a
tiny budget; the README's number is what a real miner would run). If this machine already
fetched the corpus, its verified downloads are reused (``crucible data fetch`` checks every
checksum and would fetch anything missing).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.chain.nodeproc import free_port
from tests.docs.shell import Session, code_blocks

ROOT = Path(__file__).resolve().parents[2]
TINY_BUDGET = {"--steps 2000": "--steps 2"}


def _walk_env(home: Path) -> dict[str, str]:
    gateway = free_port()
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BT_", "HF_", "TRANSFORMERS_", "CRUCIBLE_", "PYTHON"))
    }
    return {
        **keep,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "CRUCIBLE_LOCALNET_URL": f"http://127.0.0.1:{free_port()}",
        "CRUCIBLE_MINER_PORT": str(free_port()),
        "CRUCIBLE_VALIDATOR_PORT": str(free_port()),
        "CRUCIBLE_GATEWAY_PORT": str(gateway),
        "CRUCIBLE_GATEWAY_URL": f"http://127.0.0.1:{gateway}/v1",
    }


def _commands(block: str) -> list[str]:
    lines = [line.strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.timeout(900)
def test_the_readme_three_users_section_runs_as_written(tmp_path: Path) -> None:
    blocks = code_blocks((ROOT / "README.md").read_text(), "## The three users")
    assert [lang for lang, _ in blocks] == ["", "", "", "", "", "python", "python"]
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    if (ROOT / "data" / "downloads").is_dir():
        shutil.copytree(ROOT / "data" / "downloads", work / "data" / "downloads")
    session = Session(work, _walk_env(home))
    outputs: dict[str, list[str]] = {}
    try:
        for index, (lang, text) in enumerate(blocks):
            if lang == "python":
                (work / f"snippet{index}.py").write_text(text)
                outputs[f"python {index}"] = session.run(f"python snippet{index}.py", 300)
                continue
            for command in _commands(text):
                for old, new in TINY_BUDGET.items():
                    command = command.replace(old, new)
                outputs[command] = session.run(command)
    finally:
        stopped = session.close()
        (tmp_path / "transcript.txt").write_text("\n".join(session.transcript))
        print("\n".join(session.transcript[-300:]))
    assert session.services == 4  # localnet, miner serve, gateway, validator run
    assert sum("stopped cleanly on SIGTERM" in line for line in stopped) == 4, stopped
    _check_what_the_users_saw(outputs)


def _one(outputs: dict[str, list[str]], prefix: str) -> str:
    (key,) = [k for k in outputs if k.startswith(prefix)]
    return "\n".join(outputs[key])


def _check_what_the_users_saw(outputs: dict[str, list[str]]) -> None:
    assert "immunity_period = 100" in _one(outputs, "crucible hyperparameters")
    assert "registered" in _one(outputs, "crucible-miner register")
    assert "trained 2 steps" in _one(outputs, "crucible-miner train")
    assert "your mean loss" in _one(outputs, "crucible-miner eval")
    assert "committed at block" in _one(outputs, "crucible-miner publish")
    assert "staked 500.0000 TAO" in _one(outputs, "crucible stake add")
    assert "→" in _one(outputs, "crucible-validator run --rounds 1")
    assert "uid 1" in _one(outputs, "crucible-validator explain 1")
    assert "crucible-data@1:local:" in _one(outputs, "crucible data release fresh")
    assert "ok, " in _one(outputs, "crucible data releases")
    assert "identical" in _one(outputs, "crucible-validator verify")
    assert "predicted vtrust" in _one(outputs, "crucible-validator consensus")
    assert "uid 1" in _one(outputs, "crucible-client ask")
    assert "matches chain" in _one(outputs, "crucible-client miners")
    assert "tiny@3:local:" in "\n".join(outputs["python 5"])
    assert "CompletionChoice" in "\n".join(outputs["python 6"])


@pytest.mark.parametrize("doc", ["docs/going-live.md"])
def test_docs_command_blocks_name_real_commands_and_flags(doc: str) -> None:
    """Commands for the real network cannot run here; each must still parse with the parser
    it names (our CLIs), or name a btcli command whose --help lists every flag used."""
    from tests.docs.flags import check_command

    text = (ROOT / doc).read_text()
    commands = [
        c for lang, block in code_blocks(text, "# ", "\0") if lang == "" for c in _commands(block)
    ]
    assert commands, f"{doc} shows no commands"
    problems = [p for c in commands if (p := check_command(c))]
    assert problems == []


def test_the_flag_check_catches_what_broke_before() -> None:
    """btcli 11.3 refuses the old ``--wallet.name`` flags; a flag our parser lacks is caught."""
    from tests.docs.flags import check_command

    assert "has no ['--wallet.name', '--wallet.hotkey']" in str(
        check_command("btcli wallet create --wallet.name crucible --wallet.hotkey miner1")
    )
    assert "unrecognized arguments: --no-such-flag" in str(
        check_command("crucible-miner train --no-such-flag")
    )
    assert check_command("crucible-miner train --out runs/m1 --steps 2000 --from-leader") is None
