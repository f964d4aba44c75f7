"""``python -m chain.yuma``: one epoch's input JSON on stdin → output JSON on stdout."""

from __future__ import annotations

import json
import sys

from crucible.chain.yuma import EpochInput, EpochInputError, run_epoch


def main() -> int:
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
