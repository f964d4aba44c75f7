"""``crucible``: operator commands. Subcommands import lazily so each starts fast."""

from __future__ import annotations

import sys

USAGE = """usage: crucible COMMAND [ARGS]

commands:
  localnet   run the embedded local chain node (see `crucible localnet --help`)
  yuma       run one Yuma epoch: JSON on stdin, JSON on stdout
  data       fetch the corpus, train the tokenizer (see `crucible data --help`)
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command == "localnet":
        from crucible.chain.local.cli import main as localnet

        return localnet(rest)
    if command == "yuma":
        from crucible.chain.yuma.__main__ import main as yuma

        return yuma()
    if command == "data":
        try:
            from crucible.corpus.cli import main as data
        except ImportError:
            print(
                "crucible data: the corpus tools are not installed in this checkout",
                file=sys.stderr,
            )
            return 2
        return data(rest)
    print(f"crucible: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
