"""``crucible localnet``: run the embedded chain node on 127.0.0.1 with an HTTP API."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from crucible.chain.interface import Hyperparameters
from crucible.chain.local.client import DEFAULT_LOCALNET_URL
from crucible.chain.local.node import LocalNode, NodeConfig

__all__ = ["build_parser", "main"]

DEV_OWNER_URI = "//Alice"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crucible localnet", description=__doc__)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".crucible/localnet"),
        help="where the chain's SQLite lives",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=int(DEFAULT_LOCALNET_URL.rsplit(":", 1)[1]))
    parser.add_argument(
        "--block-time",
        type=float,
        default=12.0,
        help="seconds per block; 0 = manual (POST /dev/step)",
    )
    parser.add_argument("--netuid", type=int, default=1)
    parser.add_argument(
        "--owner", default=None, help="subnet owner coldkey ss58 (default: the dev key //Alice)"
    )
    parser.add_argument("--owner-hotkey", default=None)
    parser.add_argument("--no-faucet", action="store_true", help="disable the dev faucet")
    for field in dataclasses.fields(Hyperparameters):
        flag = "--" + field.name.replace("_", "-")
        kind = (
            (lambda v: v.lower() in ("1", "true", "on", "yes"))
            if field.type in ("bool", bool)
            else int
        )
        parser.add_argument(
            flag, type=kind, default=None, help=f"hyperparameter (default {field.default})"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn
    from bittensor_core import Keypair

    from crucible.chain.local.server import BlockClock, create_app

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Hyperparameters)
        if getattr(args, f.name) is not None
    }
    owner = args.owner or Keypair.create_from_uri(DEV_OWNER_URI).ss58_address
    config = NodeConfig(
        netuid=args.netuid,
        owner_coldkey=owner,
        owner_hotkey=args.owner_hotkey,
        hyperparameters=dataclasses.replace(Hyperparameters(), **overrides),
        faucet=not args.no_faucet,
    )
    node = LocalNode(args.data_dir, config)
    manual = args.block_time <= 0
    clock = None if manual else BlockClock(node, args.block_time)
    print(
        f"crucible localnet: netuid {node.netuid}, head block {node.block()}, genesis {node.genesis[:18]}…, "
        f"data {args.data_dir}, blocks {'manual' if manual else f'every {args.block_time} s'}, "
        f"listening on http://{args.host}:{args.port}",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(node, manual_blocks=manual),
            host=args.host,
            port=args.port,
            log_level="warning",
        )
    )
    if clock:
        clock.start()
    stopped = threading.Event()

    def stop(*_: object) -> None:
        server.should_exit = True
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    finally:
        if clock:
            clock.stop()
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
