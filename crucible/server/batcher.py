"""Continuous batching: every admitted request of a model shares one forward pass per step.

``Capacity`` decides *who* runs (tier, stake, the public budget, a bounded queue); the
``Batcher`` decides *how*: one engine thread per server steps all running requests of a model
together. A request joins at the next step and leaves as soon as it ends, so a short request
never waits for a long one to finish. Each step does, per model:

1. **scoring** — log-probability requests, right-padded into one forward (causal attention: a
   real position never sees the padding after it);
2. **prefill** — newly admitted generations read their prompts the same way, and their key/value
   caches join the decoding batch;
3. **decode** — one token for every cached generation in one forward: the caches are
   left-padded to a common length, an attention mask hides the padding, and each row gets its
   own position ids, so each row computes what it would compute alone;
4. **window** — generations past the model's context re-read their last window (as the
   unbatched path does), batched together since every window has the same length.

Sampling, stop sequences and log-probabilities are per request (``server.sequence``); only the
forward pass is shared. Results equal the one-at-a-time computation up to float rounding of a
batched matrix product (greedy tokens identical, log-probabilities within 1e-6 here).

A forward that raises is retried one request at a time, so a request that breaks the model fails
alone. Cancelled requests (``Sequence.cancel``, set when nobody waits) leave at the next step.
``on_done`` runs on the engine thread once a request has left the batch for good — the moment
its ``Grant`` may be released. ``run_alone`` is the unbatched path, kept for comparison
(``bench/serve.py``) and for servers that turn batching off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F
from transformers import DynamicCache

from crucible.server.errors import Overloaded, WorkCancelled
from crucible.server.sequence import Sequence

__all__ = ["Batcher", "run_alone", "score_alone"]

log = logging.getLogger(__name__)

# Architectures whose logits are exactly ``lm_head(base_model(ids))``: the head is applied only to
# the positions a step needs, not to every padded position of the batch.
SPLIT_HEAD = frozenset({"LlamaForCausalLM", "GPT2LMHeadModel"})
FORWARD_TOKENS = 8192  # padded tokens per prefill/scoring forward (bounds activation memory)


class _Runner:
    """Forward passes of one model: hidden states, and the head applied where asked."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        head = model.get_output_embeddings()
        self.head = head if head is not None and type(model).__name__ in SPLIT_HEAD else None
        pad = getattr(model.config, "pad_token_id", None)
        self.fill = 1 if pad == 0 else 0  # padding that is never the pad token: no HF warning

    def forward(self, ids: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, object]:
        if self.head is not None:
            out = self.model.base_model(input_ids=ids, **kwargs)
            return out.last_hidden_state, out.get("cache")
        out = self.model(input_ids=ids, **kwargs)
        return out.logits, out.get("cache")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return (self.head(hidden) if self.head is not None else hidden).float()


def _right_padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.long)


def _chunks(items: list, lengths: list[int]) -> list[list]:
    """Consecutive groups (by length) whose padded size stays within ``FORWARD_TOKENS``."""
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    out: list[list] = []
    for i in order:
        if out and (len(out[-1]) + 1) * lengths[i] <= FORWARD_TOKENS:
            out[-1].append(items[i])
        else:
            out.append([items[i]])
    return out


def _token_logprobs(runner: _Runner, hidden: torch.Tensor, ids: list[int]) -> list[float]:
    """``hidden`` (positions × features) of one row → log p(ids[i+1] | ids[:i+1])."""
    logits = runner.logits(hidden[: len(ids) - 1])
    target = torch.tensor(ids[1:], dtype=torch.long)[:, None]
    values = F.log_softmax(logits, dim=-1).gather(1, target).squeeze(1)
    return values.tolist()


# -- the unbatched path ------------------------------------------------------------------------


def decode_step(
    model: torch.nn.Module, ids: list[int], past: Any, max_positions: int
) -> tuple[torch.Tensor, Any]:
    """One unbatched forward for the next token: the logits (positions × vocabulary) and the
    key/value cache to pass next time (``None`` once ``ids`` fill the model's context)."""
    if past is not None and len(ids) <= max_positions:
        # the key/value cache holds the prefix: feed only the newest token
        result = model(input_ids=torch.tensor([ids[-1:]]), cache=past, use_cache=True)
    else:  # first step, or past the model's context: recompute over the last window
        result = model(
            input_ids=torch.tensor([ids[-max_positions:]]), use_cache=len(ids) < max_positions
        )
    return result.logits[0], (result.get("cache") if len(ids) < max_positions else None)


def run_alone(model: torch.nn.Module, seq: Sequence, max_positions: int) -> None:
    """One generation, one forward per token, exactly as the server ran before batching."""
    past, started = None, False
    with torch.inference_mode():
        while not seq.done:
            if seq.cancel.is_set():
                raise WorkCancelled(f"generation stopped after {len(seq.new)} tokens: abandoned")
            logits, past = decode_step(model, seq.ids, past, max_positions)
            if started:
                seq.step(logits[-1].float())
            else:
                started = True
                seq.start(
                    logits[-1].float(), logits[:-1].float() if seq.wants_prompt_logits else None
                )


def score_alone(model: torch.nn.Module, token_ids: list[int]) -> list[float]:
    """log p(token[i+1] | token[:i+1]) of one sequence in one forward (the unbatched path)."""
    with torch.inference_mode():
        ids = torch.tensor([token_ids], dtype=torch.long)
        logits = model(input_ids=ids).logits[0, :-1, :].float()
        values = F.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None]).squeeze(1)
        return values.tolist()


# -- the batched path --------------------------------------------------------------------------


@dataclass
class _Generation:
    seq: Sequence
    on_done: Callable[[], None]
    started: bool = False
    settled: bool = False


@dataclass
class _Scoring:
    token_ids: list[int]
    on_result: Callable[[list[float] | BaseException], None]
    cancel: threading.Event
    on_done: Callable[[], None]
    answered: bool = False
    settled: bool = False

    def answer(self, result: list[float] | BaseException) -> None:
        if not self.answered:
            self.answered = True
            self.on_result(result)


Job = _Generation | _Scoring


def _settle(job: Job) -> None:
    """The job has left the batcher for good: run its ``on_done`` (once)."""
    if job.settled:
        return
    job.settled = True
    try:
        job.on_done()
    except Exception:  # a callback bug must not take the engine down
        log.exception("batcher on_done callback failed")


def _isolated(jobs: list[Job], compute: Callable[[list], list]) -> list[object]:
    """``compute(jobs)`` (one result per job, no side effects); if it raises, each job alone,
    so only a job that breaks the model fails. A failed job's result is its exception."""
    if not jobs:
        return []
    try:
        return compute(jobs)
    except Exception as exc:
        if len(jobs) == 1:
            log.warning("a forward pass failed: %r", exc)
            return [exc]
    out: list[object] = []
    for job in jobs:
        try:
            out.extend(compute([job]))
        except Exception as exc:
            log.warning("a forward pass failed: %r", exc)
            out.append(exc)
    return out


class _Decoding:
    """The cached generations of one model, their key/value caches left-padded to one length."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.jobs: list[_Generation] = []
        self.keys: list[torch.Tensor] = []  # per layer: (rows, heads, columns, head_dim)
        self.values: list[torch.Tensor] = []
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # (rows, columns): 1 = a real position
        self.lengths = torch.zeros(0, dtype=torch.long)  # real positions per row

    def add(self, rows: list[tuple[_Generation, list[tuple[torch.Tensor, torch.Tensor]]]]) -> None:
        """Join ``rows``, each with its per-layer (keys, values) of shape (1, heads, n, dim)."""
        if not rows:
            return
        width = max([self.mask.shape[1]] + [layers[0][0].shape[2] for _, layers in rows])
        layer_count = len(rows[0][1])
        keys = [[_left_pad(k, width)] for k in self.keys] or [[] for _ in range(layer_count)]
        values = [[_left_pad(v, width)] for v in self.values] or [[] for _ in range(layer_count)]
        masks, lengths = [_left_pad_mask(self.mask, width)], [self.lengths]
        for job, layers in rows:
            n = layers[0][0].shape[2]
            for i, (k, v) in enumerate(layers):
                keys[i].append(_left_pad(k, width))
                values[i].append(_left_pad(v, width))
            masks.append(_left_pad_mask(torch.ones((1, n), dtype=torch.long), width))
            lengths.append(torch.tensor([n], dtype=torch.long))
            self.jobs.append(job)
        self.keys = [torch.cat(parts, 0) for parts in keys]
        self.values = [torch.cat(parts, 0) for parts in values]
        self.mask, self.lengths = torch.cat(masks, 0), torch.cat(lengths, 0)

    def step(self, runner: _Runner) -> torch.Tensor:
        """One token for every row: the logits (rows × vocabulary) that predict the next one."""
        rows = len(self.jobs)
        last = torch.tensor([[job.seq.ids[-1]] for job in self.jobs], dtype=torch.long)
        mask = torch.cat([self.mask, torch.ones((rows, 1), dtype=torch.long)], 1)
        cache = DynamicCache(ddp_cache_data=list(zip(self.keys, self.values, strict=True)))
        hidden, cache = runner.forward(
            last,
            attention_mask=None if bool(mask.all()) else mask,  # alone: exactly the unbatched call
            position_ids=self.lengths[:, None],
            cache=cache,
            use_cache=True,
        )
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self.mask, self.lengths = mask, self.lengths + 1
        return runner.logits(hidden[:, -1])

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices) and drop columns that are padding in every row kept."""
        if len(rows) == len(self.jobs):
            return
        if not rows:
            self._reset()
            return
        self.jobs = [self.jobs[i] for i in rows]
        index = torch.tensor(rows, dtype=torch.long)
        self.lengths = self.lengths.index_select(0, index)
        lead = int((self.mask.shape[1] - self.lengths).min())
        self.mask = self.mask.index_select(0, index)[:, lead:]
        self.keys = [k.index_select(0, index)[:, :, lead:] for k in self.keys]
        self.values = [v.index_select(0, index)[:, :, lead:] for v in self.values]


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(t, (0, 0, width - t.shape[2], 0)) if t.shape[2] < width else t


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(mask, (width - mask.shape[1], 0)) if mask.shape[1] < width else mask


class _Group:
    """Everything running on one model (and context length); touched by the engine thread only."""

    def __init__(self, model: torch.nn.Module, max_positions: int) -> None:
        self.runner, self.max_positions = _Runner(model), max_positions
        self.scoring: list[_Scoring] = []
        self.arriving: list[_Generation] = []
        self.decoding = _Decoding()
        self.windowed: list[_Generation] = []

    @property
    def idle(self) -> bool:
        return not (self.scoring or self.arriving or self.decoding.jobs or self.windowed)

    def add(self, job: Job) -> None:
        (self.scoring if isinstance(job, _Scoring) else self.arriving).append(job)

    def step(self) -> None:
        self._drop_cancelled()
        self._retire()
        if self.scoring:
            jobs, self.scoring = self.scoring, []
            for job, result in zip(jobs, _isolated(jobs, self._score), strict=True):
                job.answer(result)  # a list of values, or the exception
                _settle(job)
        if self.arriving:
            jobs, self.arriving = self.arriving, []
            self.windowed += [j for j in jobs if len(j.seq.ids) >= self.max_positions]
            self._prefill([j for j in jobs if len(j.seq.ids) < self.max_positions])
        if self.decoding.jobs:
            self._decode()
            self._retire()
        if self.windowed:
            self._window(list(self.windowed))
        self._retire()

    def fail_all(self, error: BaseException) -> None:
        for job in self.scoring:
            job.answer(error)
            _settle(job)
        for job in self.arriving + self.decoding.jobs + self.windowed:
            job.seq.fail(error)
            _settle(job)
        self.scoring, self.arriving, self.windowed = [], [], []
        self.decoding = _Decoding()

    # -- the four kinds of forward ---------------------------------------------------------

    def _score(self, jobs: list[_Scoring]) -> list[list[float]]:
        out: dict[int, list[float]] = {}
        for chunk in _chunks(jobs, [len(j.token_ids) for j in jobs]):
            hidden, _ = self.runner.forward(
                _right_padded([j.token_ids for j in chunk], self.runner.fill), use_cache=False
            )
            for i, job in enumerate(chunk):
                out[id(job)] = _token_logprobs(self.runner, hidden[i], job.token_ids)
        return [out[id(job)] for job in jobs]

    def _prefill_forward(self, jobs: list[_Generation]) -> list[tuple]:
        """Per job: (logits of the last prompt position, prompt logits or None, its cache)."""
        out: dict[int, tuple] = {}
        for chunk in _chunks(jobs, [len(j.seq.ids) for j in jobs]):
            lengths = [len(j.seq.ids) for j in chunk]
            hidden, cache = self.runner.forward(
                _right_padded([j.seq.ids for j in chunk], self.runner.fill), use_cache=True
            )
            last = self.runner.logits(hidden[torch.arange(len(chunk)), torch.tensor(lengths) - 1])
            for i, (job, n) in enumerate(zip(chunk, lengths, strict=True)):
                layers = [
                    (c.keys[i : i + 1, :, :n], c.values[i : i + 1, :, :n]) for c in cache.layers
                ]
                prompt = (
                    self.runner.logits(hidden[i, : n - 1]) if job.seq.wants_prompt_logits else None
                )
                out[id(job)] = (last[i], prompt, layers)
        return [out[id(job)] for job in jobs]

    def _prefill(self, jobs: list[_Generation]) -> None:
        """Read the prompts; a request that ends on its first token (or fails) leaves at once."""
        joining = []
        for job, result in zip(jobs, _isolated(jobs, self._prefill_forward), strict=True):
            if isinstance(result, BaseException):
                job.seq.fail(result)
            else:
                last, prompt, layers = result
                job.started = True
                job.seq.start(last, prompt)
            if job.seq.done:
                _settle(job)
            else:
                joining.append((job, layers))
        self.decoding.add(joining)

    def _decode(self) -> None:
        jobs = self.decoding.jobs
        try:
            logits = self.decoding.step(self.runner)
        except Exception as exc:  # a model that breaks on a decode step breaks for every row
            log.warning("decode step of %d rows failed: %r", len(jobs), exc)
            for job in jobs:
                job.seq.fail(exc)
            return
        for i, job in enumerate(jobs):
            job.seq.step(logits[i])
        # a row whose cache reached the context re-reads its last window from now on
        lengths = self.decoding.lengths.tolist()
        for job, n in zip(jobs, lengths, strict=True):
            if n >= self.max_positions and not job.seq.done:
                self.windowed.append(job)

    def _window_forward(self, jobs: list[_Generation]) -> list[tuple]:
        p = self.max_positions
        ids = torch.tensor([j.seq.ids[-p:] for j in jobs], dtype=torch.long)
        hidden, _ = self.runner.forward(ids, use_cache=False)
        last = self.runner.logits(hidden[:, -1])
        return [
            (
                last[i],
                self.runner.logits(hidden[i, :-1])
                if not j.started and j.seq.wants_prompt_logits
                else None,
            )
            for i, j in enumerate(jobs)
        ]

    def _window(self, jobs: list[_Generation]) -> None:
        for job, result in zip(jobs, _isolated(jobs, self._window_forward), strict=True):
            if isinstance(result, BaseException):
                job.seq.fail(result)
            elif job.started:
                job.seq.step(result[0])
            else:
                job.started = True
                job.seq.start(*result)

    # -- bookkeeping -----------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        kept = []
        for job in self.scoring:
            if job.cancel.is_set():
                job.answer(WorkCancelled("scoring abandoned before it ran"))
                _settle(job)
            else:
                kept.append(job)
        self.scoring = kept
        for job in self.arriving + self.decoding.jobs + self.windowed:
            if job.seq.cancel.is_set() and not job.seq.done:
                abandoned = f"generation stopped after {len(job.seq.new)} tokens: abandoned"
                job.seq.fail(WorkCancelled(abandoned))

    def _retire(self) -> None:
        """Done (or failed) requests leave for good; rows now in window mode leave the cache."""
        windowed = {id(j) for j in self.windowed}
        leaving = [j for j in self.arriving + self.windowed if j.seq.done]
        self.arriving = [j for j in self.arriving if not j.seq.done]
        self.windowed = [j for j in self.windowed if not j.seq.done]
        rows = []
        for i, job in enumerate(self.decoding.jobs):
            if job.seq.done:
                leaving.append(job)
            elif id(job) not in windowed:
                rows.append(i)
        self.decoding.keep(rows)
        for job in leaving:
            _settle(job)


class Batcher:
    """The engine thread of one server (module doc). ``submit_*`` are thread-safe.

    The thread starts with the first request and ends after ``idle_s`` without work, so an idle
    server holds no thread; ``close()`` (the server's shutdown) fails what is left and joins."""

    def __init__(self, *, idle_s: float = 2.0, name: str = "crucible-batcher") -> None:
        self._idle_s, self._name = idle_s, name
        self._cond = threading.Condition()
        self._inbox: list[tuple[torch.nn.Module, int, Job]] = []
        self._groups: dict[tuple[int, int], _Group] = {}  # the engine thread's alone
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit_generate(
        self, model: torch.nn.Module, max_positions: int, seq: Sequence, on_done: Callable[[], None]
    ) -> None:
        """Run ``seq`` on ``model``; its events go to its sink, ``on_done`` once it has left."""
        self._submit(model, max_positions, _Generation(seq, on_done))

    def submit_score(
        self,
        model: torch.nn.Module,
        token_ids: list[int],
        on_result: Callable[[list[float] | BaseException], None],
        cancel: threading.Event,
        on_done: Callable[[], None],
    ) -> None:
        """Score ``token_ids``; ``on_result`` gets the values (or the exception), then ``on_done``."""
        self._submit(model, 0, _Scoring(list(token_ids), on_result, cancel, on_done))

    def _submit(self, model: torch.nn.Module, max_positions: int, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise Overloaded("this server is shutting down", fix="ask another miner")
            self._inbox.append((model, max_positions, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop: requests still waiting or running fail with ``WorkCancelled``."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while (arrivals := self._take()) is not None:
                    for model, max_positions, job in arrivals:
                        key = (id(model), max_positions)
                        if key not in self._groups:
                            self._groups[key] = _Group(model, max_positions)
                        self._groups[key].add(job)
                    for key, group in list(self._groups.items()):
                        try:
                            group.step()
                        except Exception as exc:  # a bug here must not strand the requests
                            log.exception("batcher step failed; failing its requests")
                            group.fail_all(exc)
                        if group.idle:
                            del self._groups[key]
        finally:
            self._stop_all()

    def _take(self) -> list[tuple[torch.nn.Module, int, Job]] | None:
        """New work; ``None`` (and this thread is no longer the engine) once closed or idle."""
        with self._cond:
            while not self._inbox and not self._groups and not self._closed:
                if not self._cond.wait(self._idle_s) and not self._inbox:
                    self._thread = None  # decided under the lock: a submit now starts a new one
                    return None
            if self._closed:
                return None
            arrivals, self._inbox = self._inbox, []
            return arrivals

    def _stop_all(self) -> None:
        """This thread ends: if it still was the engine (closed, or a bug), fail what is left."""
        with self._cond:
            mine = self._thread is threading.current_thread()
            if mine:
                self._thread = None
            leftover, self._inbox = (self._inbox, []) if mine else ([], self._inbox)
        error = WorkCancelled("the server is shutting down")
        for _, _, job in leftover:
            if isinstance(job, _Scoring):
                job.answer(error)
            else:
                job.seq.fail(error)
            _settle(job)
        for group in self._groups.values():
            group.fail_all(error)
        self._groups.clear()
