"""What every entry point does the same way: parsers, specs, stores, chain, errors → exit codes."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from crucible.competitions import specs_dir
from crucible.neurons.lifecycle import Stopped, install_stop_handlers
from crucible.neurons.options import apply_offline, describe, resolve
from crucible.observe.logs import LOG_FORMATS, configure_logging
from crucible.protocol.errors import ConfigError, CrucibleError

__all__ = [
    "HelpFormatter",
    "add_log_options",
    "add_store_options",
    "configure_logs",
    "chain_from",
    "exits_cleanly",
    "load_specs",
    "new_parser",
    "run_command",
    "spec_named",
    "store_resolver",
    "subcommands",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every default and keeps the docstrings' line breaks.

    Like ``ArgumentDefaultsHelpFormatter``, but silent where there is no default to show (a
    required option, or ``None`` meaning "not set"): "(default: None)" tells nobody anything.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text or action.required or default in (None, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def new_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter
    )


def subcommands(parser: argparse.ArgumentParser) -> Callable[..., argparse.ArgumentParser]:
    """``add(name, fn, help)`` → a sub-parser whose ``--help`` shows defaults too."""
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_text: str):
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        p.set_defaults(fn=fn, log_neuron=parser.prog)
        add_log_options(p)
        return p

    return add


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="log lines: JSON (one event per line) or human; auto = human on a terminal",
    )


def configure_logs(args: argparse.Namespace, neuron: str | None = None) -> None:
    """Structured logging on stderr, once per process (``observe.logs``); the level is
    ``CRUCIBLE_LOG_LEVEL`` (debug adds one ``request`` event per request served)."""
    name = neuron or getattr(args, "log_neuron", None) or "crucible"
    level = os.environ.get("CRUCIBLE_LOG_LEVEL", "info").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"CRUCIBLE_LOG_LEVEL={level.lower()!r} is not debug, info, warning or error"
        )
    configure_logging(name, getattr(args, "log_format", "auto"), level=getattr(logging, level))


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store-dir",
        type=Path,
        default=Path(os.environ.get("CRUCIBLE_STORE", ".crucible/store")),
        help="local model store folder (env CRUCIBLE_STORE)",
    )
    parser.add_argument("--specs", type=Path, default=specs_dir(), help="competition specs folder")


def load_specs(args: argparse.Namespace):
    from crucible.protocol.competition import load_competitions

    return load_competitions(args.specs)


def spec_named(args: argparse.Namespace):
    specs = load_specs(args)
    if args.competition not in specs:
        raise ConfigError(f"no competition {args.competition!r}; known: {sorted(specs)}")
    return specs[args.competition]


def store_resolver(args: argparse.Namespace):
    from crucible.store.local import LocalStore
    from crucible.store.resolve import model_store_resolver

    return model_store_resolver(
        LocalStore(args.store_dir), os.environ.get("HF_TOKEN"), offline=bool(args.offline)
    )


def chain_from(args: argparse.Namespace):
    from crucible.chain.connect import connect

    return connect(str(args.network), endpoint=args.chain_endpoint)


def exits_cleanly(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Our errors become one clear line and an exit code; bugs keep their traceback; a stop
    signal that reaches a one-shot command is an interruption (128 + signal)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        install_stop_handlers()
        try:
            configure_logs(args)
            return fn(args)
        except CrucibleError as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return exc.exit_code
        except (Stopped, KeyboardInterrupt) as exc:
            stop = exc if isinstance(exc, Stopped) else Stopped(2)
            print(f"interrupted by {stop.name}", file=sys.stderr)
            return stop.exit_code

    return run


def run_command(
    parser: argparse.ArgumentParser, argv: list[str] | None, *, show_settings: bool = False
) -> int:
    """Parse, resolve the shared options (with their origins), apply offline mode, run."""
    args = parser.parse_args(argv)
    try:
        resolved = resolve(args)
    except ConfigError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return exc.exit_code
    apply_offline(bool(args.offline))
    if show_settings or getattr(args, "long_running", False):
        print(f"{parser.prog} {args.command} settings:\n{describe(resolved)}", file=sys.stderr)
    return args.fn(args)
