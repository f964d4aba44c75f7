"""``crucible localnet``: run the embedded chain node on 127.0.0.1 with an HTTP API.

The first start creates the subnet from the flags. A restart on the same ``--data-dir`` keeps the
chain's state: hyperparameter flags that differ from the stored values are applied (validated as
the chain's root key would be, and printed old → new); flags that fix the chain's identity
(``--netuid``, ``--owner``/``--owner-wallet``, ``--no-faucet``) must match what is stored, or the
node refuses to start. Nothing is silently ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from crucible.chain.interface import Hyperparameters
from crucible.chain.local.client import DEFAULT_LOCALNET_URL
from crucible.neurons.common import add_log_options, configure_logs, new_parser
from crucible.neurons.lifecycle import announce_ready, stops_on_signals
from crucible.protocol.errors import ConfigError, CrucibleError

__all__ = ["build_parser", "main"]

DEV_OWNER_URI = "//Alice"


def _default_port() -> int:
    """The port of ``CRUCIBLE_LOCALNET_URL`` — the variable that tells clients where the node is."""
    url = os.environ.get("CRUCIBLE_LOCALNET_URL", DEFAULT_LOCALNET_URL)
    return urlsplit(url).port or int(DEFAULT_LOCALNET_URL.rsplit(":", 1)[1])


def _switch(value: str) -> bool:
    from crucible.neurons.options import parse_switch

    try:
        return parse_switch(value, "this flag")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible localnet", __doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".crucible/localnet"), help="the chain's SQLite"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback)")
    parser.add_argument(
        "--port", type=int, default=_default_port(), help="port (env CRUCIBLE_LOCALNET_URL)"
    )
    parser.add_argument(
        "--block-time",
        type=float,
        default=12.0,
        help="seconds per block; 0 = manual (POST /dev/step)",
    )
    parser.add_argument("--netuid", type=int, default=None, help="the subnet (default: 1)")
    owner = parser.add_mutually_exclusive_group()
    owner.add_argument("--owner", default=None, help="subnet owner coldkey ss58 (default: //Alice)")
    owner.add_argument(
        "--owner-wallet",
        default=None,
        help="take the owner coldkey's address from this wallet (its coldkeypub.txt)",
    )
    parser.add_argument(
        "--wallet-path", default="~/.bittensor/wallets", help="where --owner-wallet lives"
    )
    parser.add_argument(
        "--owner-hotkey",
        default=None,
        help="the owner's hotkey ss58, registered as uid 0 (default: --owner-wallet's hotkey "
        "'default' when it has one)",
    )
    parser.add_argument("--no-faucet", action="store_true", help="disable the dev faucet")
    add_log_options(parser)
    group = parser.add_argument_group(
        "hyperparameters (a new subnet gets the real chain's defaults)"
    )
    for field in dataclasses.fields(Hyperparameters):
        kind = _switch if field.type in ("bool", bool) else int
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"new subnet: {field.default}",
        )
    return parser


def _owner_address(args: argparse.Namespace) -> str:
    if args.owner:
        return args.owner
    if args.owner_wallet:
        from crucible.neurons.options import coldkey_address

        return coldkey_address(
            argparse.Namespace(wallet=args.owner_wallet, wallet_path=args.wallet_path)
        )
    from bittensor_core import Keypair

    return Keypair.create_from_uri(DEV_OWNER_URI).ss58_address


def _owner_hotkey(args: argparse.Namespace) -> str | None:
    """The owner's hotkey: given, or the owner wallet's ``default`` hotkey (its public file)."""
    if args.owner_hotkey or not args.owner_wallet:
        return args.owner_hotkey
    import bittensor as bt

    wallet = bt.Wallet(
        name=args.owner_wallet, hotkey="default", path=str(Path(args.wallet_path).expanduser())
    )
    try:
        return wallet.hotkeypub.ss58_address
    except Exception:  # noqa: BLE001 — no hotkey in that wallet: the subnet has no owner hotkey
        return None


def _check_identity(node, args: argparse.Namespace, owner: str, explicit_owner: bool) -> None:
    stored = node.config
    if args.netuid is not None and args.netuid != stored.netuid:
        raise ConfigError(
            f"{args.data_dir} holds netuid {stored.netuid}, not {args.netuid}",
            code="conflicts_with_state",
            fix="drop --netuid, or use another --data-dir for a new chain",
        )
    if args.no_faucet == stored.faucet:
        raise ConfigError(
            f"{args.data_dir} was created with the faucet {'on' if stored.faucet else 'off'}",
            code="conflicts_with_state",
            fix="start it as it was created, or use another --data-dir",
        )
    current_owner = node.subnet_owner(stored.netuid)
    if explicit_owner and owner != current_owner:
        raise ConfigError(
            f"{args.data_dir}'s subnet is owned by {current_owner}, not {owner}",
            code="conflicts_with_state",
            fix="drop --owner/--owner-wallet, or use another --data-dir",
        )


def _open_node(args: argparse.Namespace):
    from crucible.chain.local.node import LocalNode, NodeConfig

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Hyperparameters)
        if getattr(args, f.name) is not None
    }
    owner = _owner_address(args)
    existed = (Path(args.data_dir) / "chain.sqlite").exists()
    config = NodeConfig(
        netuid=args.netuid if args.netuid is not None else 1,
        owner_coldkey=owner,
        owner_hotkey=_owner_hotkey(args),
        hyperparameters=dataclasses.replace(Hyperparameters(), **overrides),
        faucet=not args.no_faucet,
    )
    node = LocalNode(args.data_dir, config)
    if existed:
        try:
            _check_identity(node, args, owner, bool(args.owner or args.owner_wallet))
            for name, (old, new) in node.apply_hyperparameters(node.netuid, overrides).items():
                print(f"crucible localnet: {name}: {old} → {new} (from --{name.replace('_', '-')})")
        except BaseException:
            node.close()
            raise
    return node


def _serve(node, args: argparse.Namespace) -> None:
    from crucible.chain.local.server import BlockClock, create_app
    from crucible.server.runner import serve

    manual = args.block_time <= 0
    clock = None if manual else BlockClock(node, args.block_time)
    message = (
        f"crucible localnet: netuid {node.netuid}, head block {node.block()}, genesis "
        f"{node.genesis[:18]}…, data {args.data_dir}, blocks "
        f"{'manual' if manual else f'every {args.block_time} s'}, listening on "
        f"http://{args.host}:{args.port}"
    )
    if clock:
        clock.start()
    try:
        serve(
            create_app(node, manual_blocks=manual),
            args.host,
            args.port,
            log_level="warning",
            on_started=lambda: announce_ready(message),
        )
    finally:
        if clock:
            clock.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logs(args, "crucible-localnet")
    except CrucibleError as exc:
        print(f"crucible localnet: error [{exc.code}]: {exc}", file=sys.stderr)
        return exc.exit_code
    with stops_on_signals("crucible localnet", f"state in {args.data_dir}"):
        try:
            node = _open_node(args)
        except CrucibleError as exc:
            print(f"crucible localnet: error [{exc.code}]: {exc}", file=sys.stderr)
            return 2 if exc.code == "conflicts_with_state" else exc.exit_code
        try:
            _serve(node, args)
        finally:
            node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
