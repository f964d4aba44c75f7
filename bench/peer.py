"""How long a collab validator takes to copy a round's payloads from the miners' own endpoints.

Every miner is a real payload server on 127.0.0.1 (``crucible.server.objects`` over its own
``LocalStore``, one uvicorn thread each) holding one real payload: a random pseudo-gradient of
the shipped spec's model, compressed and encoded as ``crucible-miner collab`` does (≈ 31.7 KB).
The validator copies them with the very function its round runs (``peer_sync.pull_payloads``,
its 16 workers and ``payload_limits``), every copy re-hashed. The baseline, in the same run:
reading the same payloads from one shared store (``fetch_payload``), what a validator does when
it shares a disk with the miners. Then the same round with hostile miners among the honest ones:
*silent* (accept the connection and never answer) and *trickling* (a byte every 50 ms): what
they cost the round, and that they cost the honest nothing but time.

    python bench/peer.py            # 16 and 64 miners, then 64 with 8 and 16 hostile (≈ 1 min)
    python bench/peer.py --quick    # 8 miners, 2 hostile (the suite runs it)
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from crucible.collab.codec import PayloadMeta, compress, encode_payload, max_payload_bytes  # noqa: E402
from crucible.collab.payload_store import PAYLOAD_FILE, fetch_payload, put_payload  # noqa: E402
from crucible.collab.peer_sync import PayloadPull, payload_limits, pull_payloads  # noqa: E402
from crucible.collab.shared_model import genesis_params, param_shapes  # noqa: E402
from crucible.competitions import specs_dir  # noqa: E402
from crucible.protocol.collab import load_collab_specs  # noqa: E402
from crucible.server.objects import ClientLimit, build_object_server  # noqa: E402
from crucible.server.runner import run_in_thread  # noqa: E402
from crucible.store.local import LocalStore  # noqa: E402

HOTKEY = "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM"  # any well-formed ss58 address


def _payloads(count: int) -> tuple[list[bytes], int]:
    """``count`` distinct real payloads of the shipped spec, and the cap a validator reads them at."""
    spec = load_collab_specs(specs_dir())["collab"]
    shapes = param_shapes(genesis_params(spec))
    out = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        delta = {n: torch.randn(s, generator=g) * 1e-3 for n, s in shapes.items()}
        out.append(
            encode_payload(compress(delta, spec.codec), PayloadMeta(spec.key, 1, "ab" * 32, HOTKEY))
        )
    return out, max_payload_bytes(shapes, spec.codec)


def _hostile(kind: str, stack: ExitStack) -> str:
    """A server that never answers (``silent``) or sends a byte every 50 ms (``trickle``)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                if kind == "trickle":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n"
                    )  # under the cap
                while not stop.wait(0.05):
                    if kind == "trickle":
                        conn.sendall(b"x")
            except OSError:
                pass

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    stack.callback(sock.close)
    stack.callback(stop.set)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def copy_round(tmp: Path, payloads: list[bytes], cap: int, silent: int, trickle: int) -> dict:
    """One round's copy: every honest miner serving its payload, the hostile ones theirs."""
    with ExitStack() as stack:
        pulls = []
        for i, raw in enumerate(payloads):
            store = LocalStore(tmp / f"miner{i}")
            digest = put_payload(store, raw)
            server = stack.enter_context(
                run_in_thread(
                    build_object_server(store, {PAYLOAD_FILE}, limit=ClientLimit(100, 100))
                )
            )
            pulls.append(PayloadPull(i, server.url, digest))
        for j, kind in enumerate(["silent"] * silent + ["trickle"] * trickle):
            pulls.append(PayloadPull(len(payloads) + j, _hostile(kind, stack), f"{j:064x}"))
        validator = LocalStore(tmp / f"validator-{len(payloads)}-{silent}-{trickle}")
        started = time.perf_counter()
        why = pull_payloads(validator, pulls, cap, payload_limits(cap))
        seconds = time.perf_counter() - started
    copied = sum(validator.exists("local", p.content_hash) for p in pulls[: len(payloads)])
    return {"seconds": seconds, "copied": copied, "refused": sorted({w.split(":")[0] for w in why.values()}),
            "honest_refused": sum(uid < len(payloads) for uid in why)}  # fmt: skip


def shared_disk(tmp: Path, payloads: list[bytes], cap: int) -> float:
    """The baseline: the same payloads read from one shared store."""
    store = LocalStore(tmp / "shared")
    digests = [put_payload(store, raw) for raw in payloads]
    started = time.perf_counter()
    for d in digests:
        fetch_payload(store, "local", d, tmp / "read", cap)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 miners, 2 hostile")
    args = parser.parse_args()
    sizes, hostile = ([8], [(1, 1)]) if args.quick else ([16, 64], [(4, 4), (8, 8)])
    figures: dict = {}
    payloads, cap = _payloads(max(sizes))
    print(f"payload {len(payloads[0]):,} bytes (cap {cap:,}); {payload_limits(cap)}")
    print(
        f"{'miners':>7} {'hostile':>8} {'over HTTP, s':>13} {'payloads/s':>11} {'shared disk, s':>15} {'copied':>7}  refused"
    )
    with tempfile.TemporaryDirectory(prefix="crucible-bench-peer-") as name:
        tmp = Path(name)
        for n in sizes:
            run = copy_round(tmp / f"h{n}", payloads[:n], cap, 0, 0)
            base = shared_disk(tmp / f"s{n}", payloads[:n], cap)
            print(
                f"{n:>7} {0:>8} {run['seconds']:>13.3f} {n / run['seconds']:>11.0f} {base:>15.3f} {run['copied']:>7}"
            )
            figures[f"honest_{n}_seconds"] = round(run["seconds"], 3)
            figures[f"shared_disk_{n}_seconds"] = round(base, 3)
            figures[f"honest_{n}_copied"] = run["copied"]
        n = max(sizes)
        for silent, trickle in hostile:
            run = copy_round(tmp / f"x{silent}-{trickle}", payloads[:n], cap, silent, trickle)
            bad = silent + trickle
            print(
                f"{n:>7} {bad:>8} {run['seconds']:>13.3f} {n / run['seconds']:>11.0f} {'':>15} {run['copied']:>7}  {', '.join(run['refused'])}"
            )
            figures[f"hostile_{bad}_seconds"] = round(run["seconds"], 3)
            figures[f"hostile_{bad}_honest_copied"] = run["copied"]
            figures[f"hostile_{bad}_honest_refused"] = run["honest_refused"]
    figures["miners"] = n
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
