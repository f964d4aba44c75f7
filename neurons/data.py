"""``crucible data``: fetch the corpus, (re)train the tokenizer, show what is there."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from crucible.corpus.dataset import DEFAULT_DATA_DIR
from crucible.neurons.common import new_parser
from crucible.protocol.errors import ConfigError, CrucibleError, DataError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible data", __doc__)
    parser.add_argument(
        "action",
        choices=["fetch", "train-tokenizer", "info"],
        help="fetch the corpus; retrain the tokenizer on its training split; list its documents",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="corpus folder")
    parser.add_argument("--vocab-size", type=int, default=8192, help="train-tokenizer: vocabulary")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("tokenizer.json"),
        help="train-tokenizer: where to write the tokenizer file",
    )
    return parser


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "fetch":
            fetch_corpus = _fetcher()

            start = time.monotonic()
            manifest = fetch_corpus(args.data_dir)
            docs = manifest["documents"]
            held = [d["id"] for d in docs if d["split"] == "eval"]
            print(
                f"corpus in {args.data_dir}: {len(docs)} documents, {sum(d['chars'] for d in docs) / 1e6:.1f} M chars, "
                f"{len(held)} held out for evaluation, {time.monotonic() - start:.1f} s"
            )
        elif args.action == "train-tokenizer":
            from crucible.corpus.dataset import load_documents
            from crucible.corpus.tokenizer import file_sha256, train_tokenizer

            texts = load_documents(args.data_dir, "train")["text"]
            tok = train_tokenizer(texts, args.vocab_size)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tok.backend_tokenizer.save(str(args.out))
            print(f"tokenizer {args.out}: vocab {len(tok)}, sha256 {file_sha256(args.out)}")
            print("a changed tokenizer is a new competition version: put its sha256 in a new spec")
        else:
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
    except CrucibleError as exc:
        print(f"crucible data: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
