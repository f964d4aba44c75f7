"""Every command's ``--help`` shows each option's default and says what it is."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from crucible.chain.yuma import __main__ as yuma
from crucible.neurons import (
    audit,
    chain_commands,
    client,
    dashboard,
    data,
    localnet,
    miner,
    validator,
)
from crucible.protocol.errors import ConfigError

PARSERS = {
    "crucible-miner": miner.build_parser,
    "crucible-validator": validator.build_parser,
    "crucible-client": client.build_parser,
    "crucible localnet": localnet.build_parser,
    "crucible data": data.build_parser,
    "crucible yuma": yuma.build_parser,
    "crucible audit": audit.build_parser,
    "crucible dashboard": dashboard.build_parser,
    "crucible": chain_commands.build_parser,
}


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(all_parsers(sub))
    return found


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(program: str) -> None:
    problems = []
    for parser in all_parsers(PARSERS[program]()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            text = formatter._get_help_string(action)
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not text:
                problems.append(f"{name}: no help text")
            has_default = action.default not in (None, argparse.SUPPRESS) and not action.required
            if has_default and "(default" not in text:
                problems.append(f"{name}: default {action.default!r} not shown")
    assert problems == []


def test_yuma_help_prints_help_instead_of_reading_stdin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "crucible.neurons.crucible", "yuma", "--help"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "usage: crucible yuma" in out.stdout
    assert "one Yuma epoch" in out.stdout


def test_data_fetch_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`crucible data fetch` without rdata: one line naming the extra, not a traceback."""
    monkeypatch.setitem(sys.modules, "rdata", None)  # import rdata → ImportError
    with pytest.raises(ConfigError, match="needs the `data` extra") as info:
        data._fetcher()
    assert info.value.code == "missing_extra"
    assert "pip install 'crucible-subnet[data]'" in str(info.value)
