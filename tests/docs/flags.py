"""Check a documented command without running it: our CLIs parse it; btcli knows its flags.

For commands that need the real network (``--network test``), which no test can reach. Our
commands are parsed by the very parser the console script builds (an unknown flag or a bad value
is an error); a ``btcli`` command must exist and list every flag used in its own ``--help``.
Placeholders like ``<NETUID>`` are filled with a plausible value first.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

__all__ = ["check_command"]

PLACEHOLDERS = {"<NETUID>": "1", "<PUBLIC IP>": "203.0.113.7"}


def _parsers():
    from crucible.chain.yuma import __main__ as yuma
    from crucible.neurons import audit, chain_commands, client, data, localnet, miner, validator

    return {
        "crucible-miner": miner.build_parser,
        "crucible-validator": validator.build_parser,
        "crucible-client": client.build_parser,
        "crucible localnet": localnet.build_parser,
        "crucible data": data.build_parser,
        "crucible yuma": yuma.build_parser,
        "crucible audit": audit.build_parser,
        "crucible": chain_commands.build_parser,
    }


def _our_parse(program: str, argv: list[str]) -> str | None:
    parser = _parsers()[program]()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exc:
        return f"{program} {' '.join(argv)}: {err.getvalue().strip() or exc}"
    return None


@cache
def _btcli_help(path: tuple[str, ...]) -> tuple[int, str]:
    btcli = Path(sys.executable).parent / "btcli"
    out = subprocess.run(
        [str(btcli), *path, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    return out.returncode, out.stdout


def _btcli(argv: list[str]) -> str | None:
    path = tuple(a for a in argv if not a.startswith("-"))[:2]
    status, text = _btcli_help(path)
    if status != 0:
        return f"btcli {' '.join(path)} is not a btcli command"
    flags = [a.split("=")[0] for a in argv if a.startswith("--")]
    unknown = [f for f in flags if not re.search(rf"{re.escape(f)}\b", text)]
    return f"btcli {' '.join(path)} has no {unknown}" if unknown else None


def check_command(line: str) -> str | None:
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value)
    words = shlex.split(line, comments=True)
    if not words:
        return None
    if words[0] == "btcli":
        return _btcli(words[1:])
    if words[0] == "crucible" and words[1:2] in (["localnet"], ["data"], ["yuma"], ["audit"]):
        return _our_parse(f"crucible {words[1]}", words[2:])
    if words[0] in ("crucible", "crucible-miner", "crucible-validator", "crucible-client"):
        return _our_parse(words[0], words[1:])
    return f"{words[0]}: not a command the docs should show"
