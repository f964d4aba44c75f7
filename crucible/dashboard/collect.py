"""One poll of the subnet as plain data: the chain, the metagraph, the audited bundles, the
leaderboards, the data releases — and the bounded history the dashboard has seen so far.

Everything here reads through the ``Chain`` interface and the bundle code ``crucible audit``
runs (``validator.audit.audit_subnet`` with a ``bundle_fetch`` source); nothing signs or writes.
Every value a neuron controls (commitments, bundle contents, verdict notes) stays plain text
here; ``page.py`` escapes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from crucible.chain.interface import Chain, Metagraph, Neuron
from crucible.protocol.competition import CompetitionSpec
from crucible.scoring.round_data import candidate_releases
from crucible.validator.audit import BundleSource, ValidatorAudit, audit_subnet
from crucible.validator.bundle import Bundle, CompetitionRound

__all__ = [
    "FAILED",
    "AuditRow",
    "ChainView",
    "History",
    "LeaderRow",
    "Leaderboard",
    "NeuronRow",
    "ReleaseRow",
    "Snapshot",
    "collect",
    "epoch_blocks",
]

RAO_PER_TAO = 1_000_000_000
Point = tuple[int, float]  # (block, value)


@dataclass(frozen=True)
class ChainView:
    network: str
    netuid: int
    block: int
    block_hash: str
    tempo: int
    last_epoch_block: int | None  # None: no epoch has run yet
    next_epoch_block: int | None  # None: tempo 0, epochs never run
    hyperparameters: dict[str, int | bool]


@dataclass(frozen=True)
class NeuronRow:
    uid: int
    hotkey: str
    role: str  # "owner", "validator" (has a permit) or "miner"
    stake_tao: float
    incentive: float
    dividends: float
    emission_tao: float
    vtrust: float
    endpoint: str | None
    commitment: str | None
    commitment_block: int | None


@dataclass(frozen=True)
class AuditRow:
    uid: int
    hotkey: str
    stake_tao: float
    bundle_id: str | None
    bundle_block: int | None
    verdict: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class LeaderRow:
    uid: int
    hotkey: str
    mean_loss_nats: float | None  # None: no finite loss on this round's samples
    win_rate: float | None
    weight: float


@dataclass(frozen=True)
class Leaderboard:
    competition: str
    round_block: int
    validator_uid: int
    bundle_id: str
    rows: tuple[LeaderRow, ...]  # leader first


@dataclass(frozen=True)
class ReleaseRow:
    competition: str
    release_id: str
    publisher: str
    commit_block: int


@dataclass(frozen=True)
class Snapshot:
    chain: ChainView
    neurons: tuple[NeuronRow, ...]
    audits: tuple[AuditRow, ...]
    leaderboards: tuple[Leaderboard, ...]
    releases: tuple[ReleaseRow, ...]
    ignored_releases: tuple[tuple[str, str, str], ...]  # (competition, hotkey, why)
    loss_history: dict[str, dict[int, list[Point]]]  # competition → uid → (round block, loss)
    incentive_history: dict[int, list[Point]]  # uid → (epoch block, incentive)
    error: str | None = None  # the last poll failed: what is shown is from an earlier one


def epoch_blocks(block: int, tempo: int, netuid: int, rule: str) -> tuple[int | None, int | None]:
    """(last, next) epoch block around ``block``. The ``Chain`` interface does not expose the
    schedule, so it is computed from the tempo: "subtensor" is the real chain's rule (the epoch
    runs where (block + netuid + 1) % (tempo + 1) == 0); "local" is the embedded chain's (every
    ``tempo`` blocks since genesis, as long as the tempo was never changed)."""
    if tempo <= 0:
        return None, None
    if rule == "local":
        last = block // tempo * tempo
        return (last or None), last + tempo
    period = tempo + 1
    phase = (block + netuid + 1) % period
    last = block if phase == tempo else block - phase - 1
    return (last if last > 0 else None), last + period


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _role(n: Neuron, mg: Metagraph) -> str:
    if mg.owner_hotkey is not None and n.hotkey == mg.owner_hotkey:
        return "owner"
    return "validator" if n.validator_permit else "miner"


def neuron_rows(mg: Metagraph) -> tuple[NeuronRow, ...]:
    return tuple(
        NeuronRow(
            uid=n.uid,
            hotkey=n.hotkey,
            role=_role(n, mg),
            stake_tao=n.stake_rao / RAO_PER_TAO,
            incentive=n.incentive,
            dividends=n.dividends,
            emission_tao=n.emission_rao / RAO_PER_TAO,
            vtrust=n.validator_trust,
            endpoint=n.endpoint.url if n.endpoint else None,
            commitment=n.commitment.data if n.commitment else None,
            commitment_block=n.commitment.block if n.commitment else None,
        )  # fmt: skip
        for n in mg.neurons
    )


def audit_rows(audits: list[ValidatorAudit]) -> tuple[AuditRow, ...]:
    return tuple(
        AuditRow(
            uid=a.uid,
            hotkey=a.hotkey,
            stake_tao=a.stake_tao,
            bundle_id=a.bundle.bundle_id if a.bundle else None,
            bundle_block=a.bundle.block if a.bundle else None,
            verdict=a.verdict,
            notes=tuple(a.notes),
        )  # fmt: skip
        for a in audits
    )


def mean_loss(losses: list[float]) -> float | None:
    return _finite(math.fsum(losses) / len(losses)) if losses else None


def _leaderboard(r: CompetitionRound, bundle: Bundle, validator_uid: int) -> Leaderboard:
    uids = sorted(set(r.losses) | set(r.win_rates))
    rows = [
        LeaderRow(
            uid=u,
            hotkey=r.hotkeys.get(u, ""),
            mean_loss_nats=mean_loss(r.losses.get(u, [])),
            win_rate=_finite(r.win_rates.get(u)),
            weight=_finite(bundle.weights.get(u, 0.0)) or 0.0,
        )
        for u in uids
    ]
    loss_key = [math.inf if x.mean_loss_nats is None else x.mean_loss_nats for x in rows]
    order = sorted(range(len(rows)), key=lambda i: (-rows[i].weight, loss_key[i], rows[i].uid))
    rows_sorted = tuple(rows[i] for i in order)
    return Leaderboard(r.competition, r.round_block, validator_uid, bundle.bundle_id, rows_sorted)


FAILED = ("FAILED", "TAMPERED", "FLAGGED")


def leaderboards(audits: list[ValidatorAudit], known: set[str]) -> tuple[Leaderboard, ...]:
    """Per known competition, the newest round a bundle scored (the newest bundle wins a tie).
    A bundle the audit failed is listed with its verdict but never feeds a leaderboard: one
    validator's bad bundle cannot take over what the page shows."""
    best: dict[str, tuple[tuple[int, int], CompetitionRound, Bundle, int]] = {}
    for a in audits:
        bundle = a.bundle
        if bundle is None or a.verdict.startswith(FAILED):
            continue
        for r in bundle.rounds:
            rank = (r.round_block, bundle.block)
            if r.competition not in known:
                continue
            if r.competition not in best or rank > best[r.competition][0]:
                best[r.competition] = (rank, r, bundle, a.uid)
    return tuple(_leaderboard(r, bundle, uid) for _, (_, r, bundle, uid) in sorted(best.items()))


def release_rows(
    specs: Mapping[str, CompetitionSpec], mg: Metagraph
) -> tuple[tuple[ReleaseRow, ...], tuple[tuple[str, str, str], ...]]:
    """What ``crucible data releases`` lists: releases committed by each active competition's
    publishers up to this block, and the commitments that look like releases but are ignored."""
    found, ignored = [], []
    for spec in sorted((s for s in specs.values() if s.active), key=lambda s: s.id):
        refs, passed = candidate_releases(spec, mg, mg.block)
        found += [ReleaseRow(spec.key, r.release_id, r.publisher, r.commit_block) for r in refs]
        ignored += [(spec.key, hotkey, why) for hotkey, why in sorted(passed.items())]
    return tuple(found), tuple(ignored)


@dataclass
class History:
    """What this dashboard has polled so far, bounded: at most ``max_points`` per series (the
    newest kept) and series only for uids and competitions currently seen. Per instance."""

    max_points: int = 200
    losses: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    incentives: dict[int, dict[int, float]] = field(default_factory=dict)
    hotkeys: dict[int, str] = field(default_factory=dict)

    def _trim(self, series: dict[int, float]) -> None:
        for key in sorted(series)[: max(0, len(series) - self.max_points)]:
            del series[key]

    def record(self, mg: Metagraph, boards: tuple[Leaderboard, ...], epoch: int | None) -> None:
        for uid, hotkey in list(self.hotkeys.items()):
            if uid >= mg.n or mg.neurons[uid].hotkey != hotkey:  # the uid was replaced
                self.incentives.pop(uid, None)
                for per_uid in self.losses.values():
                    per_uid.pop(uid, None)
        self.hotkeys = {n.uid: n.hotkey for n in mg.neurons}
        if epoch is not None:
            for n in mg.neurons:
                self.incentives.setdefault(n.uid, {})[epoch] = n.incentive
                self._trim(self.incentives[n.uid])
        for board in boards:
            per_uid = self.losses.setdefault(board.competition, {})
            for row in board.rows:
                if row.mean_loss_nats is not None and row.uid < mg.n:
                    per_uid.setdefault(row.uid, {})[board.round_block] = row.mean_loss_nats
                    self._trim(per_uid[row.uid])

    def loss_points(self) -> dict[str, dict[int, list[Point]]]:
        return {
            name: {uid: sorted(s.items()) for uid, s in sorted(per_uid.items())}
            for name, per_uid in sorted(self.losses.items())
        }

    def incentive_points(self) -> dict[int, list[Point]]:
        return {uid: sorted(s.items()) for uid, s in sorted(self.incentives.items())}


def _hyperparameters(mg: Metagraph) -> dict[str, int | bool]:
    hp = mg.hyperparameters
    return {f.name: getattr(hp, f.name) for f in fields(hp)}


def collect(
    chain: Chain,
    netuid: int,
    source: BundleSource,
    specs: Mapping[str, CompetitionSpec],
    history: History,
    *,
    network: str = "localnet",
    epoch_rule: str = "local",
) -> Snapshot:
    """One poll: the metagraph and every validator's audited bundle, folded into ``history``."""
    mg, audits = audit_subnet(chain, netuid, source, specs)
    hp = mg.hyperparameters
    last, upcoming = epoch_blocks(mg.block, hp.tempo, netuid, epoch_rule)
    view = ChainView(
        network, netuid, mg.block, mg.block_hash, hp.tempo, last, upcoming, _hyperparameters(mg)
    )
    boards = leaderboards(audits, {s.key for s in specs.values()})
    history.record(mg, boards, last)
    releases, ignored = release_rows(specs, mg)
    return Snapshot(
        chain=view, neurons=neuron_rows(mg), audits=audit_rows(audits), leaderboards=boards,
        releases=releases, ignored_releases=ignored, loss_history=history.loss_points(),
        incentive_history=history.incentive_points(),
    )  # fmt: skip
