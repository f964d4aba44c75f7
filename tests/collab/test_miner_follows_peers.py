"""A collab miner with a store of its own follows the aggregator over HTTP: the signed pointer
and the checkpoint come from the aggregator's bundle server on 127.0.0.1, and a checkpoint the
aggregator is too busy to serve right now (HTTP 429) is tried again within the round, not
skipped."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse

from crucible.chain.interface import ServeEndpoint
from crucible.collab.checkpoint import CheckpointPointer, publish_pointer, store_checkpoint
from crucible.collab.shared_model import genesis_params
from crucible.miner.collab import CollabMiner, follow
from crucible.server.runner import run_in_thread
from crucible.store.documents import DocumentStore
from crucible.store.local import LocalStore
from crucible.validator.bundle_server import build_bundle_server
from tests.collab.world import make_world

BUSY = 2  # the aggregator answers the first checkpoint requests with 429


def test_a_miner_retries_a_checkpoint_the_aggregator_is_too_busy_to_serve(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.register("ann")
    spec, aggregator = world.spec, world.keys["val"]
    r = spec.round_of(world.node.block()) + 1
    world.step_to(spec.window(r)[0])
    theirs, their_docs = LocalStore(tmp_path / "agg"), DocumentStore(tmp_path / "agg")
    params = {k: v + 0.01 for k, v in genesis_params(spec).items()}  # not checkpoint 0
    ckpt = store_checkpoint(theirs, params, None, competition=spec.key)
    pointer = CheckpointPointer(spec.key, r, ckpt, None, aggregator.ss58_address,
                                world.node.block()).signed(aggregator)  # fmt: skip
    publish_pointer(their_docs, pointer)
    app = build_bundle_server(their_docs, lambda: None, objects=theirs,
                              latest_pointer=lambda c: pointer.to_bytes())  # fmt: skip
    asked: list[int] = []

    @app.middleware("http")
    async def busy_at_first(request: Request, call_next):
        if request.url.path.startswith("/v1/objects/"):
            asked.append(1)
            if len(asked) <= BUSY:
                return JSONResponse(status_code=429, content={"error": {"code": "rate_limited"}})
        return await call_next(request)

    with run_in_thread(app) as server:
        world.node.submit(
            ServeEndpoint(1, "127.0.0.1", server.port), aggregator
        ).raise_for_failure()
        mine = tmp_path / "ann-store"
        miner = CollabMiner(world.node, world.keys["ann"], 1, spec, LocalStore(mine),
                            DocumentStore(mine), world.train, tmp_path / "ann")  # fmt: skip
        (report,) = list(follow(miner, rounds=1, poll_s=0.05))
    assert report.outcome == "committed" and report.base_checkpoint == ckpt, report
    assert len(asked) == BUSY + 1  # two refusals, then the copy
    assert LocalStore(mine).exists("local", ckpt)
