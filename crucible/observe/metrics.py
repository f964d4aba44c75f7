"""Every Prometheus metric Crucible exports, defined in one place (docs/operations.md tables them).

Each app builds its metrics on its own ``CollectorRegistry`` — never the process-global default —
so several servers in one process (tests, the demo) keep separate counts. Label values are
bounded: routes are the registered path templates (an unknown path is ``unmatched``), calls and
codes come from the chain's own vocabulary, never from free text a caller sent.

``render(registry)`` is what ``GET /metrics`` answers: the text exposition format. Scraping is
cheap (counters in memory; the node's block height is one indexed SQLite read) and shows no
secret: no keys, no signatures, no hotkeys.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = [
    "CONTENT_TYPE",
    "HttpMetrics",
    "NodeMetrics",
    "ValidatorMetrics",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# request latencies from a cached GET (~1 ms) to a slow generate (~minutes)
_LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class HttpMetrics:
    """Requests served, by route template, method and status, with a latency histogram."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "crucible_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "crucible_http_request_duration_seconds",
            "Time from request received to response ready (streams: to the first byte)",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


class NodeMetrics:
    """The local chain node: height, blocks, extrinsics by call and outcome, epochs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.block_height = Gauge(
            "crucible_chain_block_height", "Number of the chain's head block", registry=registry
        )
        self.blocks = Counter(
            "crucible_chain_blocks_produced", "Blocks produced by this process", registry=registry
        )
        self.blocks_failed = Counter(
            "crucible_chain_blocks_failed",
            "Block productions that failed and were rolled back",
            registry=registry,
        )
        self.extrinsics = Counter(
            "crucible_chain_extrinsics",
            "Extrinsics submitted, by call, outcome (accepted, refused, duplicate) and code",
            ["call", "outcome", "code"],
            registry=registry,
        )
        self.epochs = Counter(
            "crucible_chain_epochs", "Yuma epochs run by this process", registry=registry
        )
        self.epoch_emission = Gauge(
            "crucible_chain_last_epoch_emission_rao",
            "Total emission (rao) distributed by the last epoch",
            registry=registry,
        )

    def track_height(self, read_height: Callable[[], int]) -> None:
        """Read the height at scrape time (always current, whoever produced the block)."""
        self.block_height.set_function(read_height)


class ValidatorMetrics:
    """A validator's rounds, models, evaluation throughput and weight submissions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rounds = Counter(
            "crucible_validator_rounds",
            "Validator rounds finished, by outcome (scored, skipped)",
            ["outcome"],
            registry=registry,
        )
        self.round_block = Gauge(
            "crucible_validator_round_block",
            "Metagraph block the last round was pinned to",
            registry=registry,
        )
        self.models_evaluated = Counter(
            "crucible_validator_models_evaluated",
            "Models whose losses were computed, summed over rounds and competitions",
            registry=registry,
        )
        self.models_rejected = Counter(
            "crucible_validator_models_rejected",
            "Models fetched and rejected (the miner's fault), by reason",
            ["reason"],
            registry=registry,
        )
        self.eval_tokens_per_s = Gauge(
            "crucible_validator_eval_tokens_per_second",
            "Tokens scored per second in the last competition scoring step (all models)",
            registry=registry,
        )
        self.weights = Counter(
            "crucible_validator_weights",
            "What each round did with its weights (set, committed, revealed, skipped, refused, …)",
            ["outcome"],
            registry=registry,
        )
