"""Options every command shares, named like bittensor 11's (and read from ``BT_*`` variables).

Resolution order: default → environment → flag; ``describe`` prints each resolved setting and
where it came from. Keys are resolved once into Keypairs (a Wallet object re-reads its key file
on every signature).

Offline mode is a setting like the others: ``--offline`` / ``--no-offline`` or
``CRUCIBLE_OFFLINE``; by default it is on for ``localnet`` and off for the real network (an
explicit ``HF_HUB_OFFLINE`` in the environment counts as the operator's choice). It is applied by
``apply_offline`` when a command starts — never on import.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from crucible.protocol.errors import ConfigError

__all__ = [
    "HF_OFFLINE_VARIABLES",
    "Keys",
    "add_common_options",
    "apply_offline",
    "coldkey_address",
    "describe",
    "load_keys",
    "parse_switch",
    "resolve",
]

# name → (environment variable, default); a default of None is decided in ``resolve``
_ENV: dict[str, tuple[str, str | None]] = {
    "network": ("BT_NETWORK", "localnet"),
    "chain_endpoint": ("BT_CHAIN_ENDPOINT", None),
    "netuid": ("BT_NETUID", "1"),
    "wallet": ("BT_WALLET_NAME", "default"),
    "wallet_hotkey": ("BT_WALLET_HOTKEY", "default"),
    "wallet_path": ("BT_WALLET_PATH", "~/.bittensor/wallets"),
    "offline": ("CRUCIBLE_OFFLINE", None),
}
HF_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def _env_help(name: str, text: str) -> str:
    env, default = _ENV[name]
    return f"{text} (default: {default if default is not None else 'see below'}; env {env})"


def add_common_options(parser: argparse.ArgumentParser, *, wallet: bool = True) -> None:
    """Network options, and the wallet options unless the command needs no keys."""
    group = parser.add_argument_group("network and wallet (bittensor 11 names; BT_* env vars)")
    unset = argparse.SUPPRESS  # absent from args unless given: ``resolve`` fills in env/default
    group.add_argument(
        "--network",
        default=unset,
        help=_env_help("network", "localnet | finney | test | local | ws://… | wss://…"),
    )
    group.add_argument(
        "--chain-endpoint",
        default=unset,
        help="node URL; localnet: http://127.0.0.1:9946 or CRUCIBLE_LOCALNET_URL (env BT_CHAIN_ENDPOINT)",
    )
    group.add_argument("--netuid", type=int, default=unset, help=_env_help("netuid", "subnet"))
    if wallet:
        group.add_argument("--wallet", default=unset, help=_env_help("wallet", "wallet name"))
        group.add_argument(
            "--wallet-hotkey", default=unset, help=_env_help("wallet_hotkey", "hotkey name")
        )
        group.add_argument(
            "--wallet-path", default=unset, help=_env_help("wallet_path", "wallets directory")
        )
    group.add_argument(
        "--offline",
        action=argparse.BooleanOptionalAction,
        default=unset,
        help="never reach a model or dataset hub (default: on for localnet, off for the real "
        "network; env CRUCIBLE_OFFLINE)",
    )


def parse_switch(value: str, what: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{what} must be one of {_TRUE + _FALSE}, got {value!r}")


def _resolve_offline(args: argparse.Namespace, network: str) -> tuple[bool, str]:
    flag = getattr(args, "offline", None)
    if flag is not None:
        return bool(flag), "flag"
    if "CRUCIBLE_OFFLINE" in os.environ:
        return parse_switch(
            os.environ["CRUCIBLE_OFFLINE"], "CRUCIBLE_OFFLINE"
        ), "env CRUCIBLE_OFFLINE"
    if "HF_HUB_OFFLINE" in os.environ:
        return parse_switch(os.environ["HF_HUB_OFFLINE"], "HF_HUB_OFFLINE"), "env HF_HUB_OFFLINE"
    if network == "localnet":
        return True, "default for localnet"
    return False, f"default for the real network ({network})"


def resolve(args: argparse.Namespace) -> dict[str, tuple[object, str]]:
    """Fill every shared option into ``args`` and return name → (value, origin)."""
    out: dict[str, tuple[object, str]] = {}
    for name, (env, default) in _ENV.items():
        if name == "offline":
            continue
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
    out["offline"] = _resolve_offline(args, str(out["network"][0]))
    for name, (value, _) in out.items():
        setattr(args, name, value)
    return out


def apply_offline(offline: bool) -> None:
    """Tell the hub libraries (which read these variables when first imported) what was chosen."""
    for variable in HF_OFFLINE_VARIABLES:
        os.environ[variable] = "1" if offline else "0"


def describe(resolved: dict[str, tuple[object, str]]) -> str:
    return "\n".join(
        f"  {name:15} = {value!s:40} ({origin})" for name, (value, origin) in resolved.items()
    )


@dataclass(frozen=True)
class Keys:
    hotkey: object  # bittensor_core.Keypair
    coldkey: object | None


def load_keys(
    args: argparse.Namespace, *, need_coldkey: bool = False, need_hotkey: bool = True
) -> Keys:
    """The wallet's hotkey (and coldkey if asked), non-interactively."""
    import bittensor as bt

    wallet = bt.Wallet(
        name=str(args.wallet),
        hotkey=str(args.wallet_hotkey),
        path=str(Path(str(args.wallet_path)).expanduser()),
    )
    try:
        hotkey = wallet.hotkey if need_hotkey else None
        coldkey = wallet.coldkey if need_coldkey else None
    except Exception as exc:  # the SDK raises its own keyfile errors; say what to do
        which = f"{args.wallet}/{args.wallet_hotkey}" if need_hotkey else str(args.wallet)
        raise ConfigError(
            f"cannot open wallet {which} under {args.wallet_path}: {exc}",
            fix="create it with `btcli wallet create --wallet NAME --wallet-hotkey HOTKEY` "
            "(or pass --wallet/--wallet-hotkey/--wallet-path)",
        ) from exc
    return Keys(hotkey, coldkey)


def coldkey_address(args: argparse.Namespace) -> str:
    """The wallet's coldkey address, from its public key file (no password needed)."""
    import bittensor as bt

    wallet = bt.Wallet(name=str(args.wallet), path=str(Path(str(args.wallet_path)).expanduser()))
    try:
        return wallet.coldkeypub.ss58_address
    except Exception as exc:  # the SDK raises its own keyfile errors; say what to do
        raise ConfigError(
            f"cannot read the coldkey of wallet {args.wallet} under {args.wallet_path}: {exc}",
            fix="create it with `btcli wallet create --wallet NAME --wallet-hotkey HOTKEY`",
        ) from exc
