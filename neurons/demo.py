"""``make demo``: the whole subnet on this machine, step by step, with what each step shows.

1. One Yuma epoch on a small worked example (the exact chain math, ``crucible.chain.yuma``).
2. The corpus (``crucible data fetch``) and a local chain node process (``crucible localnet``)
   owned by a wallet whose hotkey (uid 0) publishes the competition's fresh data.
3. A validator and seven miners register with signed extrinsics: good (trained), weak, a copycat,
   an oversized and a hostile-config model, a liar serving another model than it committed, and a
   memorizer trained on every public work, the held-out split included.
4. The first round, before any fresh data exists, is on the public held-out split: the memorizer
   takes the crown — why fresh data matters.
5. The owner publishes the held-back works as a fresh release (``crucible data release``); the
   next round is judged on it, the memorizer gains nothing, the liar pays its serving share, and
   every hostile model is rejected with its reason while the round completes.
6. Anyone checks: ``verify`` (signature, recomputation, the chain), ``explain``, ``crucible audit``.
7. A client asks the subnet, directly and through the OpenAI-compatible gateway.
8. Collaborative training: three miners and a free rider train one shared model in rounds
   (compressed pseudo-gradients, scored after each deadline, aggregated by the validator),
   against one process on the same tokens; who earned what and why, from the bundle.
9. What an operator sees: the node's JSON-line log, its ``/metrics`` and the dashboard
   (``crucible dashboard``); ``make demo KEEP=1`` keeps it all up, live.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from crucible.chain.yuma import EpochInput, EpochParams, run_epoch
from crucible.neurons.demo_parts import (
    ROOT,
    TAO,
    DemoWorld,
    banner,
    cli,
    register,
    start_node,
)

SHAPE_ARGS = {"layers": 2, "hidden": 96, "heads": 3, "ffn": 256}
MINERS = ("good", "weak", "copycat", "oversized", "hostile", "liar", "memorizer")


def show_yuma_example() -> None:
    banner("1. Yuma consensus on a worked example (exact I32F32, as subtensor)")
    inp = EpochInput(
        variant="yuma3", block=1000, params=EpochParams(last_mechanism_step_block=640, rao_emission=TAO),
        stake=[TAO, 3 * TAO, 0, 0], last_update=[990, 990, 0, 0], block_at_registration=[1, 1, 1, 1],
        validator_permit=[True, True, False, False],
        weights=[[(2, 65535), (3, 65535)], [(2, 65535), (3, 21845)], [], []], bonds=[[], [], [], []],
    )  # fmt: skip
    out = run_epoch(inp)
    print("validators 0 (25% stake) and 1 (75%) weight miners 2 and 3 (0.5/0.5 and 0.75/0.25)")
    print(
        f"{'uid':>4} {'consensus':>10} {'incentive':>10} {'dividends':>10} {'vtrust':>8} {'emission rao':>14}"
    )
    for uid in range(4):
        print(
            f"{uid:>4} {out.consensus[uid]:>10} {out.incentive[uid]:>10} {out.dividends[uid]:>10} "
            f"{out.validator_trust[uid]:>8} {out.emission[uid]:>14}"
        )


def prepare_corpus(root: Path) -> Path:
    from crucible.corpus.fetch import fetch_corpus
    from crucible.protocol.errors import DataError

    if (root / "corpus" / "fresh.jsonl").exists():
        print(f"corpus already in {root}/corpus")
        return root
    try:
        manifest = fetch_corpus(root)
        print(
            f"fetched {len(manifest['documents'])} public-domain works into {root}/corpus (crucible data fetch)"
        )
        return root
    except DataError as exc:
        print(
            f"could not fetch the corpus ({exc}); using the small committed fixture corpus instead"
        )
        return ROOT / "tests" / "fixtures" / "corpus"


def main() -> int:
    from crucible.neurons.demo_collab import collab_step
    from crucible.neurons.demo_dashboard import dashboard_step
    from crucible.neurons.demo_miners import prepare_miners
    from crucible.neurons.demo_rounds import (
        client_step,
        publish_release,
        run_and_show,
        transparency,
    )

    show_yuma_example()
    with tempfile.TemporaryDirectory(prefix="crucible-demo-") as tmp_name:
        tmp = Path(tmp_name)
        banner("2. Corpus and the local chain node (SQLite, signed extrinsics, exact Yuma)")
        corpus = prepare_corpus(ROOT / "data")
        world: DemoWorld = start_node(tmp)
        try:
            print(
                f"node at {world.chain.url}: head block {world.chain.block()}; the owner's hotkey is uid 0"
            )
            banner("3. A validator and seven miners register, train, publish and serve")
            register(world, "validator", stake_tao=500)
            for name in MINERS:
                register(world, name)
            world.chain.step(10)
            runtime = prepare_miners(world, corpus, SHAPE_ARGS)
            cli(world, "crucible", "metagraph")
            banner("4. Round 1, before any fresh data: the public held-out split")
            run_and_show(world, runtime, "the memorizer trained on these very works")
            banner("5. The owner publishes the held-back works as a fresh release")
            publish_release(world, corpus)
            run_and_show(world, runtime, "text no model has seen")
            world.chain.step(10 - world.chain.block() % 10)
            print("after the next epoch (crucible metagraph):")
            cli(world, "crucible", "metagraph")
            banner("6. Anyone can check: verify, explain, crucible audit")
            transparency(world, runtime)
            banner("7. A client asks the subnet (crucible-client ask) and through the gateway")
            client_step(world)
            banner("8. Collaborative training: four miners, one model, paid by what they improve")
            collab_step(world, runtime, corpus)
            banner("9. What an operator sees: JSON logs, /metrics, crucible dashboard (KEEP=1)")
            dashboard_step(world, runtime, runtime[0].competitions)
        finally:
            world.close()
    banner("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
