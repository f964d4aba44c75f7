"""Tensors a process keeps on its own disk between runs (a collab miner's error-feedback residual,
its AdamW moments): one safetensors file tagged with its kind, written atomically, and read back
only when it holds exactly the tensors expected, each fp32 of the expected shape — checked from
the header before any tensor is read (never a pickle)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from crucible.protocol.errors import ConfigError
from crucible.store.atomic import write_atomic

__all__ = ["TensorFileKind"]


@dataclass(frozen=True)
class TensorFileKind:
    format: str  # the file's metadata tag, e.g. "crucible-collab-residual/1"
    noun: str  # what the errors call one file: "residual"
    plural: str  # … and its tensors: "residuals"
    fix: str  # what a user does about a refused file

    def save(self, path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
        """Write ``tensors`` atomically (a crash leaves the old file or the new one)."""
        write_atomic(path, safetensors.torch.save(dict(tensors), metadata={"format": self.format}))

    def load(self, path: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """The tensors in ``path``: exactly the names of ``shapes``, each fp32 of its shape;
        otherwise ``ConfigError`` naming the first difference (an unreadable file too)."""
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("format") != self.format:
                    raise ConfigError(f"{path} is not a collab {self.noun} file", fix=self.fix)
                if set(f.keys()) != set(shapes):
                    raise ConfigError(f"{path} holds {self.plural} for other tensors", fix=self.fix)
                for name, shape in shapes.items():
                    sl = f.get_slice(name)
                    if tuple(sl.get_shape()) != tuple(shape) or sl.get_dtype() != "F32":
                        raise ConfigError(f"{path}: {name!r} is not fp32 {shape}", fix=self.fix)
                return {name: f.get_tensor(name) for name in shapes}
        except (OSError, SafetensorError) as exc:
            raise ConfigError(f"cannot read {self.noun} file {path}: {exc}", fix=self.fix) from exc
