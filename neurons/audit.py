"""``crucible audit``: check every validator's weights on chain against its published bundle.

No wallet needed. For each validator with a permit (or ``--validator UID``): its latest bundle is
fetched from its endpoint (or ``--store-dir``, a store it publishes to), its signature and
on-chain anchor checked, its inputs checked against the chain, its weights recomputed with the
validator's own code (``--reevaluate``: its losses too, from the models, and its collab rounds
from the checkpoints and payloads, copied from the validator's endpoint when ``--store-dir`` lacks
them) and compared with the weights the chain holds for it. Then the pairwise agreement of the validators' bundles and the
vtrust the exact Yuma epoch predicts from them. Exit status 1 if any validator fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    load_specs,
    new_parser,
    run_command,
    store_resolver,
)
from crucible.neurons.options import add_common_options

__all__ = ["build_parser", "main"]


def _row(a) -> str:
    def flag(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "NO")

    age = "-" if a.bundle_age_blocks is None else f"{a.bundle_age_blocks} blk"
    delta = "-" if a.weights_delta_u16 is None else str(a.weights_delta_u16)
    return (
        f"{a.uid:>4} {a.hotkey[:10] + '…':12} {a.stake_tao:>10,.1f} {age:>9} {flag(a.signature_ok):>5} "
        f"{flag(a.anchored):>6} {flag(a.inputs_ok):>6} {delta:>8}  {a.verdict}"
    )


def _print(audits, agreement_rows, vtrust) -> None:
    print(
        f"{'uid':>4} {'hotkey':12} {'stake TAO':>10} {'bundle':>9} {'sig':>5} {'anchor':>6} "
        f"{'inputs':>6} {'max|Δ|':>8}  verdict"
    )
    for a in audits:
        print(_row(a))
        for note in a.notes:
            print(f"{'':>6}· {note}")
    if agreement_rows:
        print("agreement between validators' bundles (1 − total variation):")
        for (u, v), value in agreement_rows.items():
            print(f"  uid {u} ~ uid {v}: {value:.4f}")
    if vtrust:
        print("predicted vtrust if every audited bundle's weights were on chain (exact Yuma):")
        for uid, value in sorted(vtrust.items()):
            print(f"  uid {uid}: {value:.4f}")


@exits_cleanly
def cmd_audit(args: argparse.Namespace) -> int:
    from crucible.store.documents import DocumentStore
    from crucible.validator.audit import agreement, audit_subnet, predicted_vtrust
    from crucible.validator.bundle_fetch import first_of, http_source, store_source
    from crucible.validator.collab_verify import reevaluate_bundle_collab
    from crucible.validator.verify import reevaluate

    source = first_of(http_source(args.timeout), store_source(DocumentStore(args.store_dir)))
    specs = load_specs(args)
    mg, audits = audit_subnet(chain_from(args), args.netuid, source, specs, args.validator)
    if args.reevaluate:
        endpoints = {n.uid: n.endpoint.url for n in mg.neurons if n.endpoint is not None}
        for a in audits:
            if a.bundle is not None:
                diffs = reevaluate(
                    a.bundle,
                    specs,
                    args.specs,
                    args.data_dir,
                    args.models_dir,
                    store_resolver(args),
                )
                # collab rounds: what this store lacks is copied from the validator's endpoint
                diffs += reevaluate_bundle_collab(
                    a.bundle, args.specs, args.data_dir, store_resolver(args)("local"),
                    [endpoints[a.uid]] if a.uid in endpoints else [],
                )  # fmt: skip
                a.notes += diffs
                if diffs and a.ok:
                    a.verdict = "FAILED: losses do not recompute"
    bundles = {a.uid: a.bundle for a in audits if a.bundle is not None}
    pairs = {(u, v): agreement(bundles[u], bundles[v]) for u in bundles for v in bundles if u < v}
    vtrust = predicted_vtrust({u: b.weights_u16 for u, b in bundles.items()}, mg) if bundles else {}
    if args.json:
        rows = [
            {k: v for k, v in a.__dict__.items() if k != "bundle"}
            | {"bundle_id": a.bundle.bundle_id if a.bundle else None}
            for a in audits
        ]
        print(json.dumps({"block": mg.block, "validators": rows, "agreement": {f"{u}-{v}": x for (u, v), x in pairs.items()}, "predicted_vtrust": vtrust}, indent=1))  # fmt: skip
    else:
        print(f"netuid {mg.netuid} at block {mg.block}: {len(audits)} validator(s) audited")
        _print(audits, pairs, vtrust)
    failed = [a for a in audits if a.verdict.startswith(("FAILED", "TAMPERED", "FLAGGED"))]
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible audit", __doc__)
    parser.set_defaults(fn=cmd_audit, command="audit")
    add_common_options(parser, wallet=False)
    add_store_options(parser)
    parser.add_argument("--validator", type=int, help="audit only this uid")
    parser.add_argument(
        "--reevaluate", action="store_true", help="also recompute the losses from the models"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="corpus (--reevaluate)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(".crucible/validator/models"),
        help="verified models to re-evaluate with (--reevaluate)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
