"""What every entry point does the same way: specs, stores, chain, errors → exit codes."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from crucible.competitions import specs_dir
from crucible.protocol.errors import CrucibleError

__all__ = [
    "add_store_options",
    "chain_from",
    "exits_cleanly",
    "load_specs",
    "store_resolver",
]


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store-dir",
        type=Path,
        default=Path(os.environ.get("CRUCIBLE_STORE", ".crucible/store")),
        help="local model store folder",
    )
    parser.add_argument("--specs", type=Path, default=specs_dir(), help="competition specs folder")


def load_specs(args: argparse.Namespace):
    from crucible.protocol.competition import load_competitions

    return load_competitions(args.specs)


def store_resolver(args: argparse.Namespace):
    from crucible.store.local import LocalStore
    from crucible.store.resolve import model_store_resolver

    return model_store_resolver(LocalStore(args.store_dir), os.environ.get("HF_TOKEN"))


def chain_from(args: argparse.Namespace):
    from crucible.chain.connect import connect

    return connect(str(args.network), endpoint=args.chain_endpoint)


def exits_cleanly(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Our errors become one clear line and an exit code; bugs keep their traceback."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(args)
        except CrucibleError as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            return 130

    return run
