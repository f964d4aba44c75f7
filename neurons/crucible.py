"""``crucible``: operator commands. Subcommands import lazily so each starts fast."""

from __future__ import annotations

import sys
from collections.abc import Callable

from crucible.neurons.common import run_command

USAGE = """usage: crucible COMMAND [ARGS]   (crucible COMMAND --help for each)

the local chain:
  localnet          run the embedded chain node (SQLite, block clock, exact Yuma)
  metagraph         the subnet's neurons: stake, consensus, incentive, dividends, emission, …
  fund              the dev faucet: mint TAO to your wallet's coldkey (localnet only)
  balance           your coldkey's free balance
  stake add|remove  stake on your hotkey (coldkey signs)
  hyperparameters   list the subnet's hyperparameters; --set NAME VALUE as the owner

transparency (no wallet needed):
  audit             check every validator's weights on chain against its published, signed bundle
  dashboard         a read-only web page of the subnet (chain, metagraph, leaderboards), live

tools:
  yuma              one Yuma epoch: JSON on stdin, JSON on stdout
  data              fetch the corpus, retrain the tokenizer, list the documents

the neurons have their own commands: crucible-miner, crucible-validator, crucible-client
"""

CHAIN_COMMANDS = ("metagraph", "fund", "balance", "stake", "hyperparameters")


def _localnet(rest: list[str]) -> int:
    from crucible.neurons.localnet import main

    return main(rest)


def _yuma(rest: list[str]) -> int:
    from crucible.chain.yuma.__main__ import main

    return main(rest)


def _data(rest: list[str]) -> int:
    from crucible.neurons.data import main

    return main(rest)


def _audit(rest: list[str]) -> int:
    from crucible.neurons.audit import main

    return main(rest)


def _dashboard(rest: list[str]) -> int:
    from crucible.neurons.dashboard import main

    return main(rest)


TOOLS: dict[str, Callable[[list[str]], int]] = {
    "localnet": _localnet,
    "yuma": _yuma,
    "data": _data,
    "audit": _audit,
    "dashboard": _dashboard,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command in TOOLS:
        return TOOLS[command](rest)
    if command in CHAIN_COMMANDS:
        from crucible.neurons.chain_commands import build_parser

        return run_command(build_parser(), args)
    print(f"crucible: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
