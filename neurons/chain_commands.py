"""``crucible metagraph | fund | balance | stake | hyperparameters``: the chain, for people.

What ``btcli`` does for the real network, for every ``--network`` (btcli cannot reach the local
node): the metagraph as a table, the dev faucet (local chains only), stake and unstake (signed by
the coldkey), and the subnet's hyperparameters — listed, or set by the owner's coldkey.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from crucible.neurons.common import chain_from, exits_cleanly, new_parser, subcommands
from crucible.neurons.options import add_common_options, coldkey_address, load_keys, parse_switch
from crucible.protocol.errors import ConfigError

__all__ = ["build_parser", "metagraph_rows"]

RAO_PER_TAO = 1_000_000_000
_COLUMNS = (
    "uid", "hotkey", "stake", "trust", "consensus", "incentive", "dividends", "emission",
    "vtrust", "permit", "endpoint", "commitment",
)  # fmt: skip


def _tao(rao: int) -> str:
    return f"{rao / RAO_PER_TAO:,.4f}"


def _amount_rao(text: str) -> int:
    try:
        tao = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of TAO") from exc
    if not 0 < tao <= 21_000_000:
        raise argparse.ArgumentTypeError(f"{text} TAO is outside (0, 21,000,000]")
    return round(tao * RAO_PER_TAO)


def metagraph_rows(mg) -> list[dict[str, object]]:
    """One row per neuron, as ``btcli subnets metagraph`` shows them. Trust is 0 on the real
    chain since subtensor removed it from the epoch (2025-10-29); it is kept for the layout."""
    rows = []
    for n in mg.neurons:
        rows.append(
            {
                "uid": n.uid,
                "hotkey": n.hotkey,
                "stake_tao": n.stake_rao / RAO_PER_TAO,
                "trust": getattr(n, "trust", 0.0),
                "consensus": n.consensus,
                "incentive": n.incentive,
                "dividends": n.dividends,
                "emission_tao": n.emission_rao / RAO_PER_TAO,
                "vtrust": n.validator_trust,
                "permit": n.validator_permit,
                "endpoint": None if n.endpoint is None else f"{n.endpoint.ip}:{n.endpoint.port}",
                "commitment": None if n.commitment is None else n.commitment.data,
            }
        )
    return rows


def _table_line(row: dict[str, object]) -> str:
    return (
        f"{row['uid']:>4} {str(row['hotkey'])[:10] + '…':12} {row['stake_tao']:>12,.4f} "
        f"{row['trust']:>6.4f} {row['consensus']:>9.4f} {row['incentive']:>9.4f} "
        f"{row['dividends']:>9.4f} {row['emission_tao']:>9.4f} {row['vtrust']:>6.4f} "
        f"{'*' if row['permit'] else ' ':>6} {row['endpoint'] or '-':21} "
        f"{row['commitment'] or '-'}"
    )


@exits_cleanly
def cmd_metagraph(args: argparse.Namespace) -> int:
    mg = chain_from(args).metagraph(args.netuid)
    rows = metagraph_rows(mg)
    if args.json:
        print(json.dumps({"netuid": mg.netuid, "block": mg.block, "neurons": rows}, indent=1))
        return 0
    hp = mg.hyperparameters
    print(f"netuid {mg.netuid} at block {mg.block}: {mg.n} neurons, tempo {hp.tempo}")
    print(
        f"{'uid':>4} {'hotkey':12} {'stake (TAO)':>12} {'trust':>6} {'consensus':>9} "
        f"{'incentive':>9} {'dividends':>9} {'emission':>9} {'vtrust':>6} {'permit':>6} "
        f"{'endpoint':21} commitment"
    )
    for row in rows:
        print(_table_line(row))
    return 0


@exits_cleanly
def cmd_fund(args: argparse.Namespace) -> int:
    from crucible.chain.interface import DevFaucet

    if args.network != "localnet":
        raise ConfigError(
            f"there is no dev faucet on {args.network}",
            code="no_faucet",
            fix="testnet TAO comes from the community faucet; mainnet TAO is bought",
        )
    coldkey = load_keys(args, need_coldkey=True, need_hotkey=False).coldkey
    chain = chain_from(args)
    chain.submit(DevFaucet(amount_rao=args.amount), coldkey).raise_for_failure()
    print(f"funded {coldkey.ss58_address}: balance {_tao(chain.balance(coldkey.ss58_address))} TAO")
    return 0


@exits_cleanly
def cmd_balance(args: argparse.Namespace) -> int:
    address = coldkey_address(args)  # the public key file: no password needed
    print(f"{address}: {_tao(chain_from(args).balance(address))} TAO")
    return 0


@exits_cleanly
def cmd_stake(args: argparse.Namespace) -> int:
    from crucible.chain.interface import AddStake, RemoveStake

    keys = load_keys(args, need_coldkey=True)
    hotkey = keys.hotkey.ss58_address
    kind = AddStake if args.action == "add" else RemoveStake
    chain = chain_from(args)
    chain.submit(kind(args.netuid, hotkey, args.amount), keys.coldkey).raise_for_failure()
    neuron = chain.metagraph(args.netuid).by_hotkey(hotkey)
    total = "not registered" if neuron is None else f"{_tao(neuron.stake_rao)} TAO staked"
    verb = "staked" if args.action == "add" else "unstaked"
    print(f"{verb} {_tao(args.amount)} TAO on {hotkey} (netuid {args.netuid}): {total}")
    return 0


def _hyperparameter_value(name: str, text: str) -> int | bool:
    from crucible.chain.interface import Hyperparameters

    fields = {f.name: f for f in dataclasses.fields(Hyperparameters)}
    if name not in fields:
        raise ConfigError(
            f"{name!r} is not a hyperparameter",
            code="unknown_hyperparameter",
            fix=f"one of: {', '.join(sorted(fields))}",
        )
    if fields[name].type in ("bool", bool):
        return parse_switch(text, name)
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(f"{name} takes an integer, got {text!r}") from exc


@exits_cleanly
def cmd_hyperparameters(args: argparse.Namespace) -> int:
    from crucible.chain.interface import SetHyperparameter

    chain = chain_from(args)
    if args.set:
        name, text = args.set
        value = _hyperparameter_value(name, text)
        coldkey = load_keys(args, need_coldkey=True, need_hotkey=False).coldkey
        call = SetHyperparameter(netuid=args.netuid, param=name, value=value)
        chain.submit(call, coldkey).raise_for_failure()
        print(
            f"{name} = {getattr(chain.hyperparameters(args.netuid), name)} on netuid {args.netuid}"
        )
        return 0
    values = dataclasses.asdict(chain.hyperparameters(args.netuid))
    if args.json:
        print(json.dumps(values, indent=1))
    else:
        for name, value in values.items():
            print(f"{name:30} {value}")
    return 0


def build_parser(prog: str = "crucible") -> argparse.ArgumentParser:
    parser = new_parser(prog, __doc__)
    add = subcommands(parser)
    m = add("metagraph", cmd_metagraph, "the subnet's neurons (like `btcli subnets metagraph`)")
    add_common_options(m, wallet=False)
    m.add_argument("--json", action="store_true", help="machine-readable output")
    f = add("fund", cmd_fund, "the dev faucet: mint TAO to the wallet's coldkey (localnet only)")
    add_common_options(f)
    f.add_argument("--amount", type=_amount_rao, default="1000", help="TAO")
    b = add("balance", cmd_balance, "the wallet coldkey's free balance")
    add_common_options(b)
    stake = add("stake", cmd_stake, "add or remove stake on the wallet's hotkey (coldkey signs)")
    stake.add_argument("action", choices=["add", "remove"], help="add or remove")
    stake.add_argument("--amount", type=_amount_rao, required=True, help="TAO")
    add_common_options(stake)
    h = add(
        "hyperparameters",
        cmd_hyperparameters,
        "list the subnet's hyperparameters, or set one with the owner's coldkey",
    )
    add_common_options(h)
    h.add_argument(
        "--set", nargs=2, metavar=("NAME", "VALUE"), help="set NAME to VALUE (owner only)"
    )
    h.add_argument("--json", action="store_true", help="machine-readable output")
    return parser
