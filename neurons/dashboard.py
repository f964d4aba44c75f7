"""``crucible dashboard``: a read-only web page of the subnet, refreshed live.

No wallet needed. It polls the chain every ``--refresh`` seconds through the same ``Chain`` as
every command (``--network``) and shows the chain (block, epochs, hyperparameters), the metagraph
(role, stake, incentive, dividends, emission, vtrust, endpoint, commitment), per competition the
leaderboard of the newest audited bundle with each model's loss per round and each uid's
incentive per epoch (plots of what this dashboard has seen since it started), every validator's
bundle with the verdict ``crucible audit`` gives it, and the fresh data releases on chain. The
page loads nothing from elsewhere: open it on a machine without internet.
"""

from __future__ import annotations

import argparse
import os
import sys

from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    load_specs,
    new_parser,
    run_command,
)
from crucible.neurons.lifecycle import announce_ready, stops_on_signals
from crucible.neurons.options import add_common_options

__all__ = ["build_parser", "main"]

DEFAULT_DASHBOARD_PORT = 8600


def _epoch_rule(network: str) -> str:
    return "local" if network == "localnet" else "subtensor"


@exits_cleanly
def cmd_dashboard(args: argparse.Namespace) -> int:
    from crucible.dashboard import Dashboard, DashboardConfig, build_app
    from crucible.server import serve
    from crucible.store.documents import DocumentStore
    from crucible.validator.bundle_fetch import first_of, http_source, store_source

    source = first_of(http_source(args.timeout), store_source(DocumentStore(args.store_dir)))
    config = DashboardConfig(
        netuid=args.netuid,
        network=str(args.network),
        epoch_rule=_epoch_rule(str(args.network)),
        refresh_s=args.refresh,
        history_points=args.history,
    )
    dashboard = Dashboard(config, chain_from(args), source, load_specs(args))
    message = f"crucible dashboard: netuid {args.netuid} on http://{args.host}:{args.port}/"
    with stops_on_signals("crucible dashboard"):
        serve(
            build_app(dashboard),
            args.host,
            args.port,
            log_level="warning",
            on_started=lambda: announce_ready(message),
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible dashboard", __doc__)
    parser.set_defaults(fn=cmd_dashboard, command="dashboard", long_running=True)
    add_common_options(parser, wallet=False)
    add_store_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CRUCIBLE_DASHBOARD_PORT", DEFAULT_DASHBOARD_PORT)),
        help="port (env CRUCIBLE_DASHBOARD_PORT)",
    )
    parser.add_argument("--refresh", type=float, default=3.0, help="seconds between polls")
    parser.add_argument("--history", type=int, default=200, help="points kept per plotted series")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per bundle endpoint")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
