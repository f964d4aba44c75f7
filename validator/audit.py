"""``crucible audit``: does every validator's weight on chain follow from a bundle anyone can check?

For one validator: find the bundle its on-chain anchor names (from its endpoint, or a shared
store), check the signature and that it is the validator's own, that the anchor names it, that
it recomputes bit for bit with the very code the validator runs, that its spec hashes are the
competitions we know, that its inputs are the chain's (round block hashes, commitments, commit
blocks, hotkey-bound model hashes) and that the weights the chain holds for the validator are
the bundle's. A validator with weights on chain and no bundle behind them is flagged: that is
how weight copying (setting weights without evaluating) shows up.

Across validators: the agreement of their bundles' weights (1 − total variation distance) and
each validator's vtrust predicted by running the exact Yuma epoch on those weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from crucible.chain.interface import Chain, Metagraph, Neuron
from crucible.chain.weights import max_upscale_u16
from crucible.chain.yuma import EpochInput, EpochParams, run_epoch
from crucible.protocol.anchor import parse_anchor
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import CrucibleError
from crucible.validator.bundle import Bundle, TamperedBundle, parse_bundle, recompute
from crucible.validator.verify import check_round_inputs, check_weights

__all__ = [
    "BundleSource",
    "ValidatorAudit",
    "agreement",
    "audit_subnet",
    "audit_validator",
    "predicted_vtrust",
    "weights_delta_u16",
]

RAO_PER_TAO = 1_000_000_000
# (validator neuron, bundle id or "latest") → the raw bytes, or None if nowhere to be found
BundleSource = Callable[[Neuron, str], bytes | None]


@dataclass
class ValidatorAudit:
    uid: int
    hotkey: str
    stake_tao: float
    has_weights: bool
    bundle: Bundle | None = None
    bundle_age_blocks: int | None = None
    signature_ok: bool | None = None
    anchored: bool | None = None
    recomputes: bool | None = None
    inputs_ok: bool | None = None
    weights_delta_u16: int | None = None
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def weights_delta_u16(bundle: Bundle, mg: Metagraph) -> int | None:
    """max |Δ| between the bundle's weights and the chain's row for its validator, as the chain
    stores them (max-upscaled u16); None when the chain holds no weights from it."""
    validator = mg.by_hotkey(bundle.validator_hotkey)
    row = {u: v for u, v in mg.weights.get(validator.uid, {}).items() if v} if validator else {}
    if not row:
        return None
    uids = sorted(bundle.weights_u16)
    mine = dict(zip(uids, max_upscale_u16([bundle.weights_u16[u] for u in uids]), strict=True))
    return max(abs(row.get(u, 0) - mine.get(u, 0)) for u in set(row) | set(mine))


def _spec_notes(bundle: Bundle, specs: Mapping[str, CompetitionSpec]) -> list[str]:
    known = {s.key: s.spec_hash for s in specs.values()}
    return [
        f"{r.competition}: spec {r.spec_hash[:12]} is not the one we know ({known.get(r.competition, 'none')[:12]})"
        for r in bundle.rounds
        if known.get(r.competition) != r.spec_hash
    ]


def _load(
    result: ValidatorAudit, neuron: Neuron, source: BundleSource, anchor: str | None
) -> Bundle | None:
    raw = source(neuron, anchor or "latest")
    if raw is None:
        result.verdict = (
            "FLAGGED: weights on chain but no bundle"
            if result.has_weights
            else "no bundle, no weights"
        )
        return None
    try:
        bundle = parse_bundle(raw)
    except TamperedBundle as exc:
        result.signature_ok, result.verdict = False, f"TAMPERED: {exc.message}"
        return None
    result.signature_ok = True
    if anchor is not None and bundle.bundle_id != anchor:
        result.verdict = (
            f"TAMPERED: asked for the anchored bundle {anchor[:16]}…, got {bundle.bundle_id[:16]}…"
        )
        return None
    if bundle.validator_hotkey != neuron.hotkey:
        result.verdict = f"TAMPERED: signed by {bundle.validator_hotkey[:12]}…, not this validator"
        return None
    return bundle


def _judge(result: ValidatorAudit, bundle: Bundle, chain: Chain, mg: Metagraph, specs) -> None:
    result.recomputes = recompute(bundle).identical
    found = check_round_inputs(bundle, chain, mg)
    result.inputs_ok = not found.problems
    result.notes += _spec_notes(bundle, specs) + found.problems + found.unverifiable
    weights = check_weights(bundle, mg)
    result.weights_delta_u16 = weights_delta_u16(bundle, mg)
    result.notes += weights.problems + weights.unverifiable
    if not result.recomputes:
        result.verdict = "FAILED: does not recompute"
    elif not result.inputs_ok or _spec_notes(bundle, specs):
        result.verdict = "FAILED: inputs are not the chain's"
    elif weights.problems:
        result.verdict = f"FAILED: chain weights differ (max |Δ| {result.weights_delta_u16} u16)"
    elif weights.unverifiable:
        result.verdict = "unverified: " + weights.unverifiable[0]
    elif not result.anchored:
        result.verdict = "unverified: the bundle is not anchored on chain"
    else:
        result.verdict = "ok"


def audit_validator(
    neuron: Neuron,
    mg: Metagraph,
    chain: Chain,
    source: BundleSource,
    specs: Mapping[str, CompetitionSpec],
) -> ValidatorAudit:
    row = mg.weights.get(neuron.uid, {})
    result = ValidatorAudit(
        neuron.uid, neuron.hotkey, neuron.stake_rao / RAO_PER_TAO, any(row.values())
    )
    anchor = parse_anchor(neuron.commitment.data if neuron.commitment else None)
    try:
        bundle = _load(result, neuron, source, anchor)
        if bundle is None:
            return result
        result.bundle, result.bundle_age_blocks = bundle, mg.block - bundle.block
        result.anchored = anchor == bundle.bundle_id
        _judge(result, bundle, chain, mg, specs)
    except CrucibleError as exc:  # the chain or the source failed mid-audit: say so, go on
        result.verdict = f"unverified: {exc.code}: {exc.message}"
    return result


def audit_subnet(
    chain: Chain,
    netuid: int,
    source: BundleSource,
    specs: Mapping[str, CompetitionSpec],
    only: int | None = None,
) -> tuple[Metagraph, list[ValidatorAudit]]:
    """Every validator with a permit (or with weights on chain), or just uid ``only``."""
    mg = chain.metagraph(netuid)

    def chosen(n: Neuron) -> bool:
        if only is not None:
            return n.uid == only
        return n.validator_permit or any(mg.weights.get(n.uid, {}).values())

    return mg, [audit_validator(n, mg, chain, source, specs) for n in mg.neurons if chosen(n)]


def _normalised(weights: Mapping[int, float]) -> dict[int, float]:
    total = math.fsum(weights.values())
    return {u: w / total for u, w in weights.items()} if total > 0 else {}


def agreement(a: Bundle, b: Bundle) -> float:
    """1 − total variation distance between two bundles' weight vectors (1.0: identical)."""
    wa, wb = _normalised(a.weights), _normalised(b.weights)
    return 1.0 - 0.5 * math.fsum(abs(wa.get(u, 0.0) - wb.get(u, 0.0)) for u in set(wa) | set(wb))


def predicted_vtrust(weights: Mapping[int, Mapping[int, int]], mg: Metagraph) -> dict[int, float]:
    """Each validator's trust if the validators set these weights (uid → u16 row) now: the exact
    Yuma epoch over the metagraph's stake, permits and bonds."""
    hp = mg.hyperparameters
    rows = []
    for n in mg.neurons:
        row = weights.get(n.uid, {})
        uids = sorted(u for u in row if u < mg.n)
        values = max_upscale_u16([row[u] for u in uids])
        rows.append([(u, v) for u, v in zip(uids, values, strict=True) if v])
    inp = EpochInput(
        variant="yuma3" if hp.yuma3_enabled else "classic",
        block=mg.block,
        params=EpochParams(
            kappa=hp.kappa, bonds_penalty=hp.bonds_penalty, bonds_moving_average=hp.bonds_moving_average,
            liquid_alpha=hp.liquid_alpha_enabled, alpha_low=hp.alpha_low, alpha_high=hp.alpha_high,
            alpha_sigmoid_steepness=hp.alpha_sigmoid_steepness, activity_cutoff_blocks=hp.activity_cutoff,
            max_allowed_validators=hp.max_allowed_validators, stake_threshold=hp.stake_threshold_rao,
            tempo=hp.tempo, rao_emission=RAO_PER_TAO,
        ),
        stake=[n.stake_rao for n in mg.neurons],
        last_update=[mg.block for _ in mg.neurons],
        block_at_registration=[n.block_at_registration for n in mg.neurons],
        validator_permit=[n.validator_permit for n in mg.neurons],
        weights=rows,
        bonds=[sorted(mg.bonds.get(n.uid, {}).items()) for n in mg.neurons],
    )  # fmt: skip
    trust = run_epoch(inp).validator_trust
    return {uid: trust[uid] / 65535 for uid in weights if uid < mg.n}
