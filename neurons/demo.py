"""``make demo``: the whole subnet on this machine, step by step, with what each step shows.

1. One Yuma epoch on a small worked example (the exact chain math, ``chain.yuma``).
2. The corpus (``crucible data fetch``) and a real local chain node process (``crucible localnet``).
3. A validator and four miners register with signed extrinsics; the validator earns its permit.
4. Miners train (good), start from scratch (weak), copy the good model, or break the rules
   (oversized); they publish to the model store, commit on chain and serve over signed HTTP.
5. The validator evaluates everyone on fresh samples seeded by a block hash, compares them with
   time priority and a significance test, probes the miners, sets weights; an epoch pays out.
6. Anyone recomputes the score bundle; ``explain`` says why each uid earned what it did.
7. A client asks the subnet, directly and through the OpenAI-compatible gateway.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bittensor_core import Keypair

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, Metagraph, ServeEndpoint
from crucible.chain.local.client import LocalChain
from crucible.chain.yuma import EpochInput, EpochParams, run_epoch
from crucible.competitions import specs_dir

TAO = 10**9
ROOT = Path(__file__).resolve().parents[1]


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def show_yuma_example() -> None:
    banner("1. Yuma consensus on a worked example (exact I32F32, as subtensor)")
    inp = EpochInput(
        variant="yuma3",
        block=1000,
        params=EpochParams(last_mechanism_step_block=640, rao_emission=TAO),
        stake=[TAO, 3 * TAO, 0, 0],
        last_update=[990, 990, 0, 0],
        block_at_registration=[1, 1, 1, 1],
        validator_permit=[True, True, False, False],
        weights=[[(2, 65535), (3, 65535)], [(2, 65535), (3, 21845)], [], []],
        bonds=[[], [], [], []],
    )
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


def start_node(data_dir: Path, owner: Keypair) -> tuple[subprocess.Popen[bytes], LocalChain]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "crucible.neurons.crucible", "localnet", "--data-dir", str(data_dir),
        "--port", str(port), "--block-time", "0", "--owner", owner.ss58_address, "--tempo", "10",
        "--commit-reveal-enabled", "false", "--weights-rate-limit", "2", "--immunity-period", "50",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT)
    chain = LocalChain(f"http://127.0.0.1:{port}")
    for _ in range(300):
        try:
            chain.block()
            return proc, chain
        except Exception:
            if proc.poll() is not None:
                raise SystemExit("the local chain node failed to start") from None
            time.sleep(0.1)
    raise SystemExit("the local chain node did not answer within 30 s")


def show_metagraph(mg: Metagraph, names: dict[str, str]) -> None:
    print(f"block {mg.block}  hash {mg.block_hash[:18]}…")
    print(
        f"{'uid':>4} {'name':12} {'stake TAO':>10} {'permit':>7} {'incentive':>10} {'dividends':>10} {'emission TAO':>13}"
    )
    for n in mg.neurons:
        print(
            f"{n.uid:>4} {names.get(n.hotkey, '?'):12} {n.stake_rao / TAO:>10.3f} {str(n.validator_permit):>7} "
            f"{n.incentive:>10.4f} {n.dividends:>10.4f} {n.emission_rao / TAO:>13.4f}"
        )


def prepare_corpus(root: Path) -> Path:
    from crucible.corpus.fetch import fetch_corpus
    from crucible.protocol.errors import DataError

    if (root / "corpus" / "eval.jsonl").exists():
        print(f"corpus already in {root}/corpus")
        return root
    try:
        manifest = fetch_corpus(root)
        print(
            f"fetched {len(manifest['documents'])} public-domain works into {root}/corpus (crucible data fetch)"
        )
        return root
    except DataError as exc:
        fixture = ROOT / "tests" / "fixtures" / "corpus"
        print(
            f"could not fetch the corpus ({exc}); using the small committed fixture corpus instead"
        )
        return fixture


def register(chain: LocalChain, name: str, stake_tao: int = 0) -> tuple[int, Keypair]:
    coldkey = Keypair.create_from_uri(f"//Crucible/{name}/coldkey")
    hotkey = Keypair.create_from_uri(f"//Crucible/{name}/hotkey")
    chain.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
    result = chain.submit(
        BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey
    ).raise_for_failure()
    if stake_tao:
        chain.submit(
            AddStake(netuid=1, hotkey=hotkey.ss58_address, amount_rao=stake_tao * TAO), coldkey
        ).raise_for_failure()
    print(
        f"{name:10} uid {result.data['uid']}  hotkey {hotkey.ss58_address[:12]}…  burned {result.data['burn_rao'] / TAO:.3f} TAO"
    )
    return result.data["uid"], hotkey


def main() -> int:
    import dataclasses
    import json

    import openai

    from crucible.chain.interface import SetCommitment
    from crucible.client.gateway import ApiKeys, build_gateway
    from crucible.client.subnet import Subnet
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.miner.publish import publish
    from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
    from crucible.miner.train import TrainConfig, train
    from crucible.models.build import ModelShape, build_config, build_model, count_parameters
    from crucible.models.io import load_model_dir, save_model_dir
    from crucible.protocol.commitment import ModelCommitment
    from crucible.protocol.competition import load_competitions
    from crucible.scoring.windows import load_eval_pool
    from crucible.server import run_in_thread
    from crucible.store.local import LocalStore
    from crucible.store.resolve import model_store_resolver
    from crucible.validator.bundle import load_bundle, recompute
    from crucible.validator.explain import explain
    from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
    from crucible.validator.state import ValidatorState

    show_yuma_example()
    owner = Keypair.create_from_uri("//Alice")
    with tempfile.TemporaryDirectory(prefix="crucible-demo-") as tmp_name:
        tmp = Path(tmp_name)
        banner("2. Corpus and the local chain node (SQLite, signed extrinsics, exact Yuma)")
        corpus = prepare_corpus(ROOT / "data")
        proc, chain = start_node(tmp / "chain", owner)
        servers = []
        try:
            print(f"node at {chain.url}: head block {chain.block()}, genesis {chain.genesis[:18]}…")
            banner("3. Register a validator and four miners (burned registration)")
            names: dict[str, str] = {}
            keys: dict[str, tuple[int, Keypair]] = {}
            for name, stake in (
                ("validator", 500),
                ("good", 0),
                ("weak", 0),
                ("copycat", 0),
                ("oversized", 0),
            ):
                keys[name] = register(chain, name, stake)
                names[keys[name][1].ss58_address] = name
            chain.step(10)
            print(
                "after the first epoch (emission falls back to stake; the validator gets its permit):"
            )
            show_metagraph(chain.metagraph(1), names)

            banner("4. Miners train, publish (store + on-chain commitment) and serve")
            specs = load_competitions(specs_dir())
            spec = specs["tiny"]
            tok = load_tokenizer(specs_dir() / spec.model.tokenizer)
            tokens = token_stream(corpus, "train", tok)
            shape = ModelShape(layers=2, hidden=96, heads=3, ffn=256)
            good = build_model(build_config(shape, eos_token_id=tok.eos_token_id), seed=1)
            print(
                f"good miner trains a {count_parameters(good):,}-parameter Llama on {len(tokens):,} training tokens "
                "(crucible-miner train):"
            )
            trained = train(
                good,
                tokens,
                TrainConfig(
                    out_dir=tmp / "train",
                    max_steps=80,
                    batch_size=8,
                    lr=4e-3,
                    warmup_steps=10,
                    checkpoint_every=40,
                    progress=True,
                ),
            )
            weak = save_model_dir(
                build_model(build_config(shape, eos_token_id=tok.eos_token_id), seed=2),
                tmp / "weak",
            )
            store = LocalStore(tmp / "store")
            for name, path in (("good", trained.model_dir), ("weak", weak)):
                result = publish(path, spec, store, chain, 1, keys[name][1])
                print(f"{name:10} committed at block {result.block}: {result.commitment}")
            big = save_model_dir(
                build_model(
                    build_config(
                        ModelShape(layers=6, hidden=256, heads=4, ffn=1024),
                        eos_token_id=tok.eos_token_id,
                    )
                ),
                tmp / "big",
            )
            try:
                publish(big, spec, store, chain, 1, keys["oversized"][1])
            except Exception as exc:  # shown to the viewer: publish refuses it before committing
                print(f"oversized  publish refused: {exc}")
            stored = store.put(big)  # ...so it commits by hand; validators reject it just the same
            raw = ModelCommitment.for_model(
                spec.key,
                "local",
                stored.revision,
                stored.content_hash,
                keys["oversized"][1].ss58_address,
            )
            chain.submit(
                SetCommitment(netuid=1, data=str(raw)), keys["oversized"][1]
            ).raise_for_failure()
            chain.step(3)
            result = publish(trained.model_dir, spec, store, chain, 1, keys["copycat"][1])
            print(f"copycat    re-published the good model 3 blocks later: {result.commitment}")
            for name, path in (
                ("good", trained.model_dir),
                ("weak", weak),
                ("copycat", trained.model_dir),
            ):
                uid, hotkey = keys[name]
                commitment = chain.commitments(1)[hotkey.ss58_address]
                served = ServedModel(
                    load_model_dir(path, spec.model).model,
                    tok,
                    spec.key,
                    commitment.data,
                    commitment.block,
                    spec.model.sequence_length,
                )
                server = run_in_thread(
                    build_miner_server(
                        hotkey, chain, 1, ModelSlot(served), metagraph_refresh_s=1
                    ).app
                )
                servers.append(server)
                chain.submit(
                    dataclasses.replace(ServeEndpoint(netuid=1, ip="127.0.0.1", port=server.port)),
                    hotkey,
                ).raise_for_failure()
                print(f"{name:10} serves on {server.url} (crucible-miner serve)")

            banner("5. The validator's round (crucible-validator run)")
            chain.step(20 - chain.block() % 20)
            vuid, vhotkey = keys["validator"]
            rt = ValidatorRuntime(
                chain,
                vhotkey,
                ValidatorConfig(1, tmp / "validator", progress=False),
                specs,
                {"tiny": tok},
                {"tiny": load_eval_pool(corpus, tok)},
                model_store_resolver(store),
            )
            state = ValidatorState()
            outcome = run_round(rt, state)
            bundle = load_bundle(outcome.bundle_path)
            r = bundle.rounds[0]
            print(
                f"round block {r.round_block}, block hash {r.block_hash[:18]}…, seed {r.seed}, {len(r.sample_ids)} held-out samples"
            )
            for uid in sorted(r.losses):
                mean = sum(r.losses[uid]) / len(r.losses[uid])
                status = (
                    "competitive"
                    if uid in r.competitive
                    else f"not competitive: {r.not_competitive[uid]}"
                )
                print(f"  uid {uid} mean loss {mean:.4f} nats — {status}")
            for uid, why in sorted(outcome.rejections.items()):
                print(f"  uid {uid} rejected: {why}")
            print(f"weights {outcome.weights} → {outcome.set_weights}")
            chain.step(10 - chain.block() % 10)
            print("after the next epoch:")
            show_metagraph(chain.metagraph(1), names)

            banner("6. Anyone can check: crucible-validator verify / explain")
            report = recompute(bundle)
            print(
                f"bundle {outcome.bundle_path.name[:16]}… recomputed: {'identical' if report.identical else report.differences}"
            )
            for name in ("good", "copycat"):
                print(explain(keys[name][0], bundle, state).to_text())

            banner("7. A client asks the subnet (crucible-client ask) and through the gateway")
            subnet = Subnet(chain, 1, Keypair.create_from_uri("//Crucible/client"), top_k=3)
            from crucible.protocol.messages import SamplingParams

            answer = subnet.ask(
                "It is a truth universally acknowledged",
                max_tokens=24,
                sampling=SamplingParams(temperature=0.8, seed=7),
            )
            print(
                f"answer from uid {answer.uid} ({names[answer.hotkey]}) in {answer.latency_ms:.0f} ms: {answer.text!r}"
            )
            api_key = "demo-key-0123456789abcdef"
            with run_in_thread(
                build_gateway(subnet, ApiKeys({api_key: "demo"}), usage_log=tmp / "usage.jsonl")
            ) as gw:
                client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)
                completion = client.completions.create(
                    model="crucible-subnet", prompt="Thou art", max_tokens=12
                )
                served_by = (
                    completion.model_extra.get("crucible", {}).get("served_by")
                    if completion.model_extra
                    else None
                )
                print(
                    f"openai.OpenAI(base_url={gw.url}/v1).completions.create → {completion.choices[0].text!r}"
                )
                print(f"served by {json.dumps(served_by)}")
        finally:
            for server in servers:
                server.stop()
            chain.close()
            proc.terminate()
            proc.wait(timeout=10)
    banner("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
