"""Score bundles: everything needed to recompute a round's weights, content-addressed and signed.

A bundle is canonical JSON named by its sha256 (the ``bundle_id``, computed without the
signature) and signed by the validator's hotkey over that id (``protocol.auth.sign_document``,
kind ``bundle``). ``load_bundle`` refuses a file whose name is not its hash or whose signature
does not verify for the hotkey it names; ``recompute`` reruns the same
``score_round``/``merge_competitions`` the validator ran to get the same weights bit for bit;
``validator.verify`` checks its inputs against the chain.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crucible.chain.weights import weights_to_u16
from crucible.protocol.auth import Signer, sign_document, verify_document
from crucible.protocol.errors import AuthError, CrucibleError
from crucible.scoring.compete import (
    Contender,
    EpsilonSchedule,
    RoundScores,
    merge_competitions,
    score_round,
)
from crucible.store.atomic import write_atomic
from crucible.validator.collab_record import CollabRound, rejudge, rejudge_differences

__all__ = [
    "BUNDLE_SCHEMA",
    "Bundle",
    "CarriedCompetition",
    "bundle_bytes",
    "CompetitionRound",
    "RecomputeReport",
    "TamperedBundle",
    "load_bundle",
    "merged_weights",
    "parse_bundle",
    "recompute",
    "rescore_round",
    "rescored",
    "write_bundle",
]

BUNDLE_SCHEMA = 2
SIGNED_KIND = "bundle"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompetitionRound(_Model):
    competition: str
    spec_hash: str
    round_block: int
    block_hash: str
    seed: int
    sample_ids: list[str]
    batch_size: int = Field(default=16, ge=1, le=4096)  # what the losses were computed with
    data_sources: list[dict] = Field(default_factory=list)  # scoring.round_data.SourceUse
    cutoff_block: int | None = None  # models committed eval_delay before it (a release's block)
    ignored_releases: dict[str, str] = Field(default_factory=dict)  # publisher/hotkey → why
    epsilon_start: float
    epsilon_floor: float
    epsilon_decay_blocks: int
    significance_level: float
    softmax_temperature: float
    ema_alpha: float
    reward_share: float
    serving_share: float
    commit_blocks: dict[int, int]
    hotkeys: dict[int, str] = Field(default_factory=dict)  # uid → hotkey when evaluated
    commitments: dict[int, str] = Field(default_factory=dict)  # uid → raw commitment
    precision: str = "fp32"  # evaluation dtype: every validator computes in fp32
    model_hashes: dict[int, str]
    losses: dict[int, list[float]]
    eval_errors: dict[int, str] = Field(default_factory=dict)
    held: dict[int, str] = Field(default_factory=dict)  # not evaluated, validator-side: EMA kept
    competitive: list[int]
    not_competitive: dict[int, str]
    pairs: list[dict]
    win_rates: dict[int, float]
    softmax: dict[int, float]
    ema_before: dict[int, float]
    ema_after: dict[int, float]
    serving_failed: dict[int, str] = Field(default_factory=dict)
    serving_inconclusive: dict[int, str] = Field(default_factory=dict)
    probe_seed: int = 0  # drawn in secret for the round, published here afterwards
    probe_sample_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> CompetitionRound:
        """An untrusted file: every scored uid has a commit block and one loss per sample."""
        missing = sorted(set(self.losses) - set(self.commit_blocks))
        if missing:
            raise ValueError(f"uids {missing[:5]} have losses but no commit block")
        lengths = {len(v) for v in self.losses.values()}
        if lengths - {len(self.sample_ids)}:
            raise ValueError(
                f"loss lists of lengths {sorted(lengths)} for {len(self.sample_ids)} samples"
            )
        return self


class CarriedCompetition(_Model):
    """A competition whose round block was already scored in an earlier bundle: its EMA enters
    this round's weights unchanged (a round is never scored twice)."""

    competition: str
    round_block: int
    ema: dict[int, float]
    reward_share: float
    serving_share: float
    serving_failed: dict[int, str] = Field(default_factory=dict)


class Bundle(_Model):
    schema_version: int = BUNDLE_SCHEMA
    code_version: str
    validator_hotkey: str
    netuid: int
    block: int
    rounds: list[CompetitionRound]
    carried: list[CarriedCompetition] = Field(default_factory=list)
    collab: list[CollabRound] = Field(default_factory=list)  # collaborative-training rounds
    rejections: dict[int, str]
    weights: dict[int, float]
    weights_u16: dict[int, int]
    burn_uid: int | None = None  # where withheld serving shares go (the subnet owner's uid)
    signature: str = ""  # by validator_hotkey over bundle_id; not part of the id

    def canonical(self) -> bytes:
        """The signed content: everything but the signature, as canonical JSON."""
        return json.dumps(
            self.model_dump(mode="json", exclude={"signature"}),
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @property
    def bundle_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def signed(self, signer: Signer) -> Bundle:
        if signer.ss58_address != self.validator_hotkey:
            raise AuthError(
                "a bundle is signed by the validator hotkey it names", code="wrong_signer"
            )
        return self.model_copy(
            update={"signature": sign_document(signer, SIGNED_KIND, self.bundle_id)}
        )

    def check_signature(self) -> None:
        verify_document(self.signature, SIGNED_KIND, self.bundle_id, self.validator_hotkey)


class TamperedBundle(CrucibleError, ValueError):
    """A bundle file that is not what it claims: altered, renamed, re-signed or not a bundle."""

    code = "tampered_bundle"


def bundle_bytes(bundle: Bundle) -> bytes:
    """The signed bundle as canonical JSON (what is stored, served and fetched)."""
    if not bundle.signature:
        raise TamperedBundle("refusing to publish an unsigned bundle", code="unsigned_bundle")
    return json.dumps(
        bundle.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()


def write_bundle(bundle: Bundle, directory: Path) -> Path:
    return write_atomic(Path(directory) / f"{bundle.bundle_id}.json", bundle_bytes(bundle))


def parse_bundle(raw: bytes, name: str | None = None) -> Bundle:
    """A bundle from bytes, refused unless its signature verifies (and it hashes to ``name``)."""
    try:
        bundle = Bundle.model_validate_json(raw)
    except ValidationError as exc:
        raise TamperedBundle(f"not a score bundle: {exc.error_count()} schema errors") from exc
    if name is not None and name != bundle.bundle_id:
        raise TamperedBundle(f"{name} is not the hash of its content: the bundle was altered")
    try:
        bundle.check_signature()
    except AuthError as exc:
        raise TamperedBundle(exc.message, code=exc.code) from exc
    return bundle


def load_bundle(path: Path) -> Bundle:
    path = Path(path)
    return parse_bundle(path.read_bytes(), path.stem)


class RecomputeReport(BaseModel):
    identical: bool
    differences: list[str]
    weights: dict[int, float]


def rescore_round(r: CompetitionRound) -> RoundScores:
    """The competition math of one round, from the bundle's own inputs (the validator's code)."""
    contenders = [Contender(uid, r.commit_blocks[uid], r.losses[uid]) for uid in sorted(r.losses)]
    return score_round(
        contenders,
        block=r.round_block,
        epsilon=EpsilonSchedule(r.epsilon_start, r.epsilon_floor, r.epsilon_decay_blocks),
        significance_level=r.significance_level,
        temperature=r.softmax_temperature,
        ema_alpha=r.ema_alpha,
        ema_before=r.ema_before,
        held=sorted(set(r.held) - set(r.losses)),
    )


def merged_weights(
    bundle: Bundle,
    scores: list[RoundScores] | None = None,
    collab: list[dict[int, float]] | None = None,
) -> dict[int, float]:
    """The weight vector of a bundle: its rounds' EMAs (or ``scores``' when recomputing), its
    carried competitions and its collab rounds' weights (or ``collab``'s), merged by reward
    share; withheld serving shares to ``burn_uid``."""
    emas = {
        r.competition: (r.ema_after if scores is None else scores[i].ema_after)
        for i, r in enumerate(bundle.rounds)
    }
    parts = [
        (r.competition, r.reward_share, r.serving_share, r.serving_failed) for r in bundle.rounds
    ]
    for c in bundle.carried:
        emas[c.competition] = c.ema
        parts.append((c.competition, c.reward_share, c.serving_share, c.serving_failed))
    for i, r in enumerate(bundle.collab):
        emas[r.competition] = r.weights if collab is None else collab[i]
        parts.append((r.competition, r.reward_share, 0.0, {}))
    shares = {name: reward for name, reward, _, _ in parts}
    serving = {name: share for name, _, share, _ in parts}
    failed = {name: set(uids) for name, _, _, uids in parts}
    return merge_competitions(emas, shares, serving, failed, bundle.burn_uid)


_JUDGED = ("scores", "verdicts", "selected", "ratings_after", "weights")


def rescored(bundle: Bundle) -> Bundle:
    """The bundle with every intermediate and the weights recomputed from its losses (unsigned)."""
    scores = [rescore_round(r) for r in bundle.rounds]
    rounds = [
        r.model_copy(
            update={
                "competitive": s.competitive,
                "not_competitive": s.not_competitive,
                "pairs": [p.__dict__ for p in s.pairs],
                "win_rates": s.win_rates,
                "softmax": s.softmax,
                "ema_before": s.ema_before,
                "ema_after": s.ema_after,
            }
        )  # fmt: skip
        for r, s in zip(bundle.rounds, scores, strict=True)
    ]
    judged = [rejudge(r) for r in bundle.collab]
    collab = [
        r.model_copy(update={k: getattr(j, k) for k in _JUDGED})
        for r, j in zip(bundle.collab, judged, strict=True)
    ]
    weights = merged_weights(bundle, scores, [j.weights for j in judged])
    uids, values = weights_to_u16(weights) if weights else ((), ())
    return bundle.model_copy(
        update={
            "rounds": rounds,
            "collab": collab,
            "weights": weights,
            "weights_u16": dict(zip(uids, values, strict=True)),
            "signature": "",
        }
    )


def recompute(bundle: Bundle) -> RecomputeReport:
    differences: list[str] = []
    scores = [rescore_round(r) for r in bundle.rounds]
    for r, got in zip(bundle.rounds, scores, strict=True):
        for name in ("competitive", "win_rates", "softmax", "ema_after", "not_competitive"):
            if getattr(got, name) != getattr(r, name):
                differences.append(
                    f"{r.competition}.{name}: bundle {getattr(r, name)} != recomputed {getattr(got, name)}"
                )
    for r in bundle.collab:
        differences.extend(rejudge_differences(r))
    weights = merged_weights(bundle, scores, [rejudge(r).weights for r in bundle.collab])
    if weights != bundle.weights:
        differences.append(f"weights: bundle {bundle.weights} != recomputed {weights}")
    return RecomputeReport(identical=not differences, differences=differences, weights=weights)
