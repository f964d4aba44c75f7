"""Options every command shares, named like bittensor 11's (and read from ``BT_*`` variables).

Resolution order: default → environment → flag; ``describe`` prints each resolved setting and
where it came from. Keys are resolved once into Keypairs (a Wallet object re-reads its key file
on every signature).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from crucible.protocol.errors import ConfigError

__all__ = ["Keys", "add_common_options", "describe", "load_keys"]

_ENV = {
    "network": ("BT_NETWORK", "localnet"),
    "chain_endpoint": ("BT_CHAIN_ENDPOINT", None),
    "netuid": ("BT_NETUID", "1"),
    "wallet": ("BT_WALLET_NAME", "default"),
    "wallet_hotkey": ("BT_WALLET_HOTKEY", "default"),
    "wallet_path": ("BT_WALLET_PATH", "~/.bittensor/wallets"),
}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("network and wallet (bittensor 11 names; BT_* env vars)")
    group.add_argument(
        "--network", help="localnet (default) | finney | test | local | ws://… | wss://…"
    )
    group.add_argument("--chain-endpoint", help="node URL (localnet: http://127.0.0.1:9946)")
    group.add_argument("--netuid", type=int)
    group.add_argument("--wallet", help="wallet name")
    group.add_argument("--wallet-hotkey", help="hotkey name")
    group.add_argument("--wallet-path", help="wallets directory")


def resolve(args: argparse.Namespace) -> dict[str, tuple[object, str]]:
    out: dict[str, tuple[object, str]] = {}
    for name, (env, default) in _ENV.items():
        flag = getattr(args, name, None)
        if flag is not None:
            out[name] = (flag, "flag")
        elif env in os.environ:
            out[name] = (os.environ[env], f"env {env}")
        else:
            out[name] = (default, "default")
    try:
        out["netuid"] = (int(out["netuid"][0]), out["netuid"][1])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"netuid must be an integer, got {out['netuid'][0]!r}") from exc
    for name, (value, _) in out.items():
        setattr(args, name, value)
    return out


def describe(resolved: dict[str, tuple[object, str]]) -> str:
    return "\n".join(
        f"  {name:15} = {value!s:40} ({origin})" for name, (value, origin) in resolved.items()
    )


@dataclass(frozen=True)
class Keys:
    hotkey: object  # bittensor_core.Keypair
    coldkey: object | None


def load_keys(args: argparse.Namespace, *, need_coldkey: bool = False) -> Keys:
    """The wallet's hotkey (and coldkey if asked), non-interactively."""
    import bittensor as bt

    wallet = bt.Wallet(
        name=str(args.wallet),
        hotkey=str(args.wallet_hotkey),
        path=str(Path(str(args.wallet_path)).expanduser()),
    )
    try:
        hotkey = wallet.hotkey
        coldkey = wallet.coldkey if need_coldkey else None
    except Exception as exc:  # the SDK raises its own keyfile errors; say what to do
        raise ConfigError(
            f"cannot open wallet {args.wallet}/{args.wallet_hotkey} under {args.wallet_path}: {exc}",
            fix="create it with `btcli wallet create` (or pass --wallet/--wallet-hotkey/--wallet-path)",
        ) from exc
    return Keys(hotkey, coldkey)
