"""``crucible yuma`` / ``python -m crucible.chain.yuma``: one Yuma epoch, exactly as subtensor
computes it, from input JSON on stdin to output JSON on stdout.

The input is ``EpochInput``'s JSON form (``crucible/chain/yuma/types.py``): stake per uid (rao),
weights and bonds as sparse u16 rows, validator permits, registration and last-update blocks and
the subnet's hyperparameters. Exit status 2 with one line on stderr for input that is not JSON or
not a valid epoch.
"""

from __future__ import annotations

import argparse
import json
import sys

from crucible.chain.yuma import EpochInput, EpochInputError, run_epoch


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="crucible yuma",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: crucible yuma < epoch.json > result.json",
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    try:
        inp = EpochInput.from_json(json.load(sys.stdin))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        print(f"error: the input is not JSON: {exc}", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: the input JSON is nested too deeply", file=sys.stderr)
        return 2
    except EpochInputError as exc:
        print(f"error: bad epoch input: {exc}", file=sys.stderr)
        return 2
    json.dump(run_epoch(inp).to_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
