"""Burned registration of the wallet's hotkey — the same for a miner and a validator."""

from __future__ import annotations

import argparse

from crucible.neurons.common import chain_from
from crucible.neurons.options import load_keys

__all__ = ["register_hotkey"]


def register_hotkey(args: argparse.Namespace) -> int:
    from crucible.chain.interface import RAO_PER_TAO, BurnedRegister

    keys = load_keys(args, need_coldkey=True)
    chain = chain_from(args)
    hotkey = keys.hotkey.ss58_address
    existing = chain.metagraph(args.netuid).by_hotkey(hotkey)
    if existing is not None:
        print(f"{hotkey} is already registered on netuid {args.netuid} as uid {existing.uid}")
        return 0
    result = chain.submit(BurnedRegister(netuid=args.netuid, hotkey=hotkey), keys.coldkey)
    result.raise_for_failure()
    burned = result.data.get("burn_rao", 0) / RAO_PER_TAO
    print(f"registered {hotkey} as uid {result.data.get('uid')} (burned {burned:.4f} TAO)")
    return 0
