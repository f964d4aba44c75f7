"""Save and load model directories: safetensors only, constraints checked before instantiation.

A model directory holds ``config.json`` and ``model.safetensors`` (nothing else is accepted except
``generation_config.json`` and ``crucible.json``, the tokenizer reference:
``{"tokenizer_sha256": "<hex>"}``, which must name the competition's tokenizer when present; a
model without it is taken to use the competition's tokenizer, whose vocabulary size it must have). Loading never unpickles and never runs remote code: the config is
parsed as plain JSON and checked, the safetensors header is read to count parameters, and only
then is the model built from the config and the tensors loaded strictly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, LlamaConfig, PreTrainedModel

from crucible.models.build import build_model
from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import ModelRejected
from crucible.store.atomic import fsync_file

__all__ = [
    "ALLOWED_FILES",
    "TOKENIZER_REF",
    "LoadedModel",
    "ModelReport",
    "inspect_model_dir",
    "load_model_dir",
    "save_model_dir",
]

TOKENIZER_REF = "crucible.json"
ALLOWED_FILES = frozenset(
    {"config.json", "model.safetensors", "generation_config.json", TOKENIZER_REF}
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")
MAX_CONFIG_BYTES = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONFIG_CLASSES = {
    "LlamaForCausalLM": ("llama", LlamaConfig),
    "GPT2LMHeadModel": ("gpt2", GPT2Config),
}


@dataclass(frozen=True)
class ModelReport:
    architecture: str
    parameters: int
    total_bytes: int
    vocab_size: int
    max_positions: int


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    report: ModelReport


def save_model_dir(
    model: PreTrainedModel, directory: Path, *, tokenizer_sha256: str | None = None
) -> Path:
    """config.json + model.safetensors (+ the tokenizer reference when ``tokenizer_sha256`` is
    given), written to a temp dir and renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        # tied weights share storage; safetensors refuses aliases, so keep one copy
        if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" in state:
            state.pop("lm_head.weight")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(model.config.to_json_string())
        if tokenizer_sha256 is not None:
            if not _SHA256.match(tokenizer_sha256):
                raise ModelRejected("bad_config", f"{tokenizer_sha256!r} is not a sha256 hex")
            ref = json.dumps({"tokenizer_sha256": tokenizer_sha256}, sort_keys=True)
            (tmp / TOKENIZER_REF).write_text(ref)
        for f in tmp.iterdir():
            fsync_file(f)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _reject(reason: str, message: str) -> ModelRejected:
    return ModelRejected(reason, message)


def inspect_model_dir(directory: Path, constraints: ModelConstraints) -> tuple[dict, ModelReport]:
    """Every check that needs no model instantiation; returns the parsed config and a report."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _reject("missing", f"{directory} is not a model directory")
    total = 0
    for entry in directory.iterdir():
        if entry.is_symlink() or not entry.is_file():
            raise _reject(
                "unexpected_file",
                f"{entry.name}: only plain files are allowed in a model directory",
            )
        if entry.name.endswith(PICKLE_SUFFIXES):
            raise _reject(
                "pickle_refused",
                f"{entry.name}: pickle-based weights are refused; publish safetensors",
            )
        if entry.name not in ALLOWED_FILES:
            raise _reject(
                "unexpected_file",
                f"{entry.name} is not part of a model (allowed: {sorted(ALLOWED_FILES)})",
            )
        total += entry.stat().st_size
    if total > constraints.max_bytes:
        raise _reject(
            "too_large", f"model is {total} bytes; the competition allows {constraints.max_bytes}"
        )
    for required in ("config.json", "model.safetensors"):
        if not (directory / required).is_file():
            raise _reject("missing", f"{required} is missing")
    raw = (directory / "config.json").read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        raise _reject("bad_config", "config.json is implausibly large")
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _reject("bad_config", f"config.json is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _reject("bad_config", "config.json must hold an object")
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise _reject("remote_code", "config.json asks for remote code; never run")
    archs = config.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in constraints.architectures:
        raise _reject(
            "architecture",
            f"architectures {archs!r} not in the allowed {list(constraints.architectures)}",
        )
    model_type, _ = _CONFIG_CLASSES[archs[0]]
    if config.get("model_type") != model_type:
        raise _reject(
            "architecture", f"model_type {config.get('model_type')!r} does not match {archs[0]}"
        )
    vocab = config.get("vocab_size")
    if vocab != constraints.vocab_size:
        raise _reject(
            "tokenizer",
            f"vocab_size {vocab} differs from the competition tokenizer's {constraints.vocab_size}",
        )
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(positions, int) or positions < constraints.sequence_length:
        raise _reject(
            "sequence_length",
            f"the model handles {positions} positions; {constraints.sequence_length} needed",
        )
    _check_tokenizer_ref(directory / TOKENIZER_REF, constraints)
    try:
        with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
            parameters = 0
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                parameters += math.prod(shape)
    except Exception as exc:  # the safetensors parser raises its own types for corrupt headers
        raise _reject("corrupt", f"model.safetensors cannot be read: {exc}") from exc
    if not constraints.min_parameters <= parameters <= constraints.max_parameters:
        raise _reject(
            "parameters",
            f"{parameters} parameters outside [{constraints.min_parameters}, {constraints.max_parameters}]",
        )
    return config, ModelReport(archs[0], parameters, total, vocab, positions)


def _check_tokenizer_ref(path: Path, constraints: ModelConstraints) -> None:
    if not path.is_file():
        return
    try:
        ref = json.loads(path.read_bytes()[:4096])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _reject("bad_config", f"{TOKENIZER_REF} is not JSON: {exc}") from exc
    if not isinstance(ref, dict) or set(ref) != {"tokenizer_sha256"}:
        raise _reject("bad_config", f'{TOKENIZER_REF} must be {{"tokenizer_sha256": "<hex>"}}')
    if ref["tokenizer_sha256"] != constraints.tokenizer_sha256:
        raise _reject(
            "tokenizer",
            f"the model was trained with tokenizer {str(ref['tokenizer_sha256'])[:16]}…; the "
            f"competition's is {constraints.tokenizer_sha256[:16]}…",
        )


def load_model_dir(
    directory: Path, constraints: ModelConstraints, *, device: str = "cpu"
) -> LoadedModel:
    config_dict, report = inspect_model_dir(directory, constraints)
    _, config_cls = _CONFIG_CLASSES[report.architecture]
    try:
        config = config_cls.from_dict(config_dict)
        model = build_model(config)
        state = load_file(str(Path(directory) / "model.safetensors"), device="cpu")
    except Exception as exc:
        raise _reject("corrupt", f"cannot build the model from its files: {exc}") from exc
    tied = getattr(config, "tie_word_embeddings", False)
    expected = set(model.state_dict())
    missing = expected - set(state) - ({"lm_head.weight"} if tied else set())
    unexpected = set(state) - expected
    if missing or unexpected:
        raise _reject(
            "corrupt",
            f"tensors do not match the config: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}",
        )
    for name, tensor in state.items():
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise _reject("dtype", f"{name} has dtype {tensor.dtype}; floating point weights only")
        if not torch.isfinite(tensor).all():
            raise _reject("non_finite", f"{name} holds NaN or infinite values")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise _reject("corrupt", f"tensor shapes do not match the config: {exc}") from exc
    if tied:
        model.tie_weights()
    return LoadedModel(model.to(device=device, dtype=torch.float32).eval(), report)
