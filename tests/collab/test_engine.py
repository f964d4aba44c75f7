"""The pure round (``crucible.collab.engine``): the proof of own data catches a miner that
trained on other data, and the same inputs give the same judgement and checkpoint."""

from __future__ import annotations

import pytest

from crucible.collab.codec import compress
from crucible.collab.engine import Submission, assigned_windows, draw_round_data, score_payloads
from crucible.collab.shared_model import build_shared_model, genesis_params
from crucible.miner.collab_train import inner_train
from tests.collab.world import small_spec, tokens
from tests.conftest import keypair

ASSIGN, DATA = "0x" + "11" * 32, "0x" + "22" * 32


@pytest.fixture(scope="module")
def round_inputs():
    spec, train, held = small_spec(proof_z=1.645), tokens("train"), tokens("eval")
    params = genesis_params(spec)
    hotkeys = {0: keypair("own-data").ss58_address, 1: keypair("other-data").ss58_address}
    decoy = keypair("someone-else").ss58_address  # whose windows the lazy miner trained on
    subs = {}
    for uid, trained_on in ((0, hotkeys[0]), (1, decoy)):
        starts = assigned_windows(spec, trained_on, 7, ASSIGN, len(train))
        model = build_shared_model(spec, params)
        delta = inner_train(model, train, starts, steps=spec.inner_steps, batch_size=spec.batch_size,
                            lr=spec.inner_lr, weight_decay=spec.inner_weight_decay,
                            sequence_length=spec.model.sequence_length)  # fmt: skip
        subs[uid] = Submission(
            uid, hotkeys[uid], 70 + uid, f"{uid:064x}", compress(delta, spec.codec)
        )
    data = draw_round_data(spec, train, held, hotkeys, 7, ASSIGN, DATA)
    return spec, params, subs, data


def _score(spec, params, subs, data):
    model = build_shared_model(spec, params)
    return score_payloads(spec, model, params, None, subs, data, {}, {}, {})


def test_a_miner_that_trained_on_other_data_fails_the_proof(round_inputs) -> None:
    result = _score(*round_inputs)
    assert result.judged.verdicts == {0: "ok", 1: "proof of own data failed"}
    own, lazy = result.measured[0], result.measured[1]
    # the lazy Δ still helps held-out data: only the proof tells it did not train on its share
    assert lazy.held_out_after < lazy.held_out_before
    assert own.own_before - own.own_after > own.random_before - own.random_after
    assert result.judged.selected == [0] and result.judged.scores[1] == 0.0


def test_the_same_round_gives_the_same_judgement_and_checkpoint(round_inputs) -> None:
    a, b = _score(*round_inputs), _score(*round_inputs)
    assert a.measured == b.measured and a.judged == b.judged and a.next_digest == b.next_digest
