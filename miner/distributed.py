"""Data-parallel training across processes started by ``torchrun``: who this process is, the
process group, wrapping the model (DDP replicas or FSDP shards), and the few collectives the
training loop needs.

``torchrun --nproc-per-node N`` starts N copies of the same command and tells each its place in
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them the process is a cluster of one and nothing
here talks to anyone. Every rank runs the same loop on the same arguments, reads its own rows of
each global batch, and the gradients are averaged across ranks (DDP: all-reduce; FSDP: reduce-
scatter into the shard each rank owns). Only rank 0 writes (checkpoints, the model, the log);
the checkpoint always holds full tensors, so a run can resume on any number of processes.

Backends: gloo on CPUs (for testing and small CPU runs), NCCL on GPUs, one GPU per process
(``cuda:LOCAL_RANK``). FSDP (``fully_shard``) shards the parameters, gradients and AdamW moments
of each decoder layer, for models whose training state does not fit one GPU several times over
(the ``small`` competition on 8–16 GB cards).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

from crucible.protocol.errors import ConfigError

__all__ = [
    "SINGLE",
    "STRATEGIES",
    "Cluster",
    "barrier",
    "cluster_from_env",
    "full_tensor",
    "gradient_sync",
    "is_sharded",
    "like_parameter",
    "process_group",
    "sum_across",
    "wrap",
]

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def rows(self, global_rows: int) -> slice:
        """This rank's contiguous share of a global batch of ``global_rows`` sequences."""
        if global_rows % self.world:
            raise ConfigError(
                f"a global batch of {global_rows} sequences does not split evenly over "
                f"{self.world} processes",
                code="bad_training_config",
                fix="make --batch-size a multiple of --nproc-per-node",
            )
        share = global_rows // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def device(self, requested: str) -> str:
        """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
        if self.distributed and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested


SINGLE = Cluster()


def cluster_from_env(env: Mapping[str, str] = os.environ) -> Cluster:
    """The place torchrun gave this process, or a cluster of one."""
    try:
        cluster = Cluster(
            int(env.get("RANK", "0")),
            int(env.get("WORLD_SIZE", "1")),
            int(env.get("LOCAL_RANK", "0")),
        )
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK are not integers: {exc}") from exc
    if not (cluster.world >= 1 and 0 <= cluster.rank < cluster.world and cluster.local_rank >= 0):
        raise ConfigError(f"inconsistent torchrun environment: {cluster}")
    return cluster


@contextmanager
def process_group(cluster: Cluster, device: str) -> Iterator[None]:
    """The process group for the duration (nothing for a cluster of one)."""
    if not cluster.distributed:
        yield
        return
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if is_cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, cluster: Cluster, strategy: str, device: str) -> torch.nn.Module:
    """``module`` (the loss of a causal LM, holding the model as ``.model``) ready to train on
    this cluster: unchanged alone, a DDP replica, or FSDP-sharded per decoder layer."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown parallel strategy {strategy!r}; use one of {STRATEGIES}")
    if not cluster.distributed:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = torch.device(device).type == "cuda"
        return DistributedDataParallel(
            module, device_ids=[torch.device(device).index or 0] if on_gpu else None
        )
    from torch.distributed.fsdp import fully_shard

    for layer in _decoder_layers(module.model):
        fully_shard(layer)
    fully_shard(module)  # embeddings, final norm and the (tied) head: one group at the root
    return module


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    body = model.base_model
    layers = getattr(body, "layers", None) or getattr(body, "h", None)  # Llama / GPT-2
    if layers is None:
        raise ConfigError(f"FSDP: no decoder layers found in {type(model).__name__}")
    return list(layers)


@contextmanager
def gradient_sync(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the all-reduce on all but the last micro-batch of a step (gradient accumulation)."""
    if enabled or not dist.is_initialized():
        yield
        return
    if hasattr(module, "no_sync"):  # DDP
        with module.no_sync():
            yield
        return
    module.set_requires_gradient_sync(False)  # FSDP
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def sum_across(values: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """Element-wise sum over all ranks (the values themselves for a cluster of one)."""
    if not cluster.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: object, cluster: Cluster) -> object:
    """Rank 0's ``obj`` on every rank (picklable Python data between our own processes only)."""
    if not cluster.distributed:
        return obj
    box = [obj if cluster.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(cluster: Cluster) -> None:
    if cluster.distributed:
        dist.barrier()


def is_sharded(module: torch.nn.Module) -> bool:
    """True once FSDP has replaced the module's parameters by shards."""
    return any(isinstance(p, DTensor) for p in module.parameters())


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU; for an FSDP shard this is a collective every rank must call."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def like_parameter(full: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A full tensor (e.g. an AdamW moment read from a checkpoint) laid out like ``parameter``:
    this rank's shard of it when the parameter is FSDP-sharded."""
    full = full.to(device=parameter.device, dtype=parameter.dtype)
    if isinstance(parameter, DTensor):
        return distribute_tensor(full, parameter.device_mesh, parameter.placements)
    return full
