"""Save and load model directories: safetensors only, nothing allocated from a size a file claims.

A model directory holds ``config.json`` and ``model.safetensors`` (nothing else is accepted except
``generation_config.json`` and ``crucible.json``, the tokenizer reference:
``{"tokenizer_sha256": "<hex>"}``, which must name the competition's tokenizer when present; a
model without it is taken to use the competition's tokenizer, whose vocabulary size it must have).

Loading never unpickles and never runs remote code, and it checks everything a file claims before
it allocates anything from it, in this order:

1. the folder: plain files from the allowed list only, total bytes within the competition's cap;
2. ``config.json`` as plain JSON (at most 64 KiB): architecture, vocabulary, positions;
3. the safetensors header only (its declared length is capped before it is read; shapes and
   offsets come from ``safe_open(...).get_slice(k).get_shape()``, no tensor data is read):
   floating point dtypes, at most ``MAX_TENSORS`` tensors, the parameter count within the limits;
4. every config key against its rule (``crucible.models.build.check_config``: unknown keys and
   behaviour-changing values such as ``"return_dict": false`` are refused as ``bad_config``);
5. the parameter count the config implies, from a skeleton built on the ``meta`` device (no
   memory; a layer count above the header's tensor count is refused before even that), within
   the limits; then every tensor name and shape the config implies matched to the header
   (nothing missing, nothing extra, no shape different);

and only then builds the model for real on the CPU and copies the tensors in one at a time,
refusing NaN or infinite values. Memory exhausted while doing so raises ``ResourceExhausted``
(this machine's problem); everything else is a ``ModelRejected`` with a reason.
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, LlamaConfig, PretrainedConfig, PreTrainedModel

from crucible.models.build import SHAPE_KEYS, build_model, check_config, count_parameters
from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import ModelRejected, ResourceExhausted
from crucible.store.atomic import fsync_file

__all__ = [
    "ALLOWED_FILES",
    "TOKENIZER_REF",
    "LoadedModel",
    "ModelReport",
    "inspect_model_dir",
    "is_out_of_memory",
    "load_model_dir",
    "save_model_dir",
]

TOKENIZER_REF = "crucible.json"
ALLOWED_FILES = frozenset(
    {"config.json", "model.safetensors", "generation_config.json", TOKENIZER_REF}
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")
MAX_CONFIG_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024 * 1024  # a 125M-parameter model's header is a few tens of KiB
MAX_TENSORS = 4096
FLOAT_DTYPES = frozenset({"F32", "F16", "BF16"})
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
    """Every check that needs no model instantiation; returns the checked config and a report."""
    config, report, _ = _inspect(Path(directory), constraints)
    return config, report


def _inspect(
    directory: Path, constraints: ModelConstraints
) -> tuple[dict, ModelReport, dict[str, tuple[int, ...]]]:
    total = _check_files(directory, constraints)
    config = _read_config(directory / "config.json")
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise _reject("remote_code", "config.json asks for remote code; never run")
    archs = config.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in constraints.architectures:
        raise _reject(
            "architecture",
            f"architectures {str(archs)[:80]} not in the allowed {list(constraints.architectures)}",
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
    shapes = _read_header(directory / "model.safetensors")
    parameters = sum(math.prod(s) for s in shapes.values())
    _check_parameters(parameters, constraints, "model.safetensors")
    config = check_config(archs[0], config)
    layers = config[SHAPE_KEYS[archs[0]][2]]
    if layers > len(shapes):  # every layer has tensors of its own: a cheap bound before building
        raise _reject(
            "corrupt",
            f"tensors do not match the config: config.json declares {layers} layers, "
            f"model.safetensors holds {len(shapes)} tensors",
        )
    return config, ModelReport(archs[0], parameters, total, vocab, positions), shapes


def _check_files(directory: Path, constraints: ModelConstraints) -> int:
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
    return total


def _read_config(path: Path) -> dict:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise _reject("bad_config", "config.json is implausibly large")
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _reject("bad_config", f"config.json is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _reject("bad_config", "config.json must hold an object")
    return config


def _read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from the header alone; refuses non-float dtypes and oversized headers.

    The header's declared length is checked against ``MAX_HEADER_BYTES`` and the file size before
    the safetensors parser reads it; the parser itself checks every tensor's offsets against the
    file, so a header claiming huge shapes over a small file is refused without reading data.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
    declared = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if declared < 0 or declared > min(MAX_HEADER_BYTES, size - 8):
        raise _reject(
            "corrupt",
            f"model.safetensors declares a {declared}-byte header in a {size}-byte file "
            f"(at most {MAX_HEADER_BYTES} allowed)",
        )
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = handle.keys()
            if len(keys) > MAX_TENSORS:
                raise _reject("corrupt", f"{len(keys)} tensors; at most {MAX_TENSORS} allowed")
            for key in keys:
                view = handle.get_slice(key)
                if view.get_dtype() not in FLOAT_DTYPES:
                    raise _reject(
                        "dtype",
                        f"{key} has dtype {view.get_dtype()}; floating point weights only "
                        f"({sorted(FLOAT_DTYPES)})",
                    )
                shapes[key] = tuple(view.get_shape())
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise _reject("corrupt", f"model.safetensors cannot be read: {exc}") from exc
    return shapes


def _check_parameters(parameters: int, constraints: ModelConstraints, source: str) -> None:
    if not constraints.min_parameters <= parameters <= constraints.max_parameters:
        raise _reject(
            "parameters",
            f"{source}: {parameters} parameters outside "
            f"[{constraints.min_parameters}, {constraints.max_parameters}]",
        )


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


def _match_skeleton(
    config: PretrainedConfig, shapes: dict[str, tuple[int, ...]], constraints: ModelConstraints
) -> None:
    """Build the config on the meta device (no memory) and match it to the header."""
    try:
        skeleton = build_model(config, device="meta")
    except Exception as exc:  # transformers validates configs with assorted exception types
        raise _reject("bad_config", f"config.json does not describe a model: {exc}") from exc
    _check_parameters(count_parameters(skeleton), constraints, "config.json implies")
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    optional = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(expected.keys() - shapes.keys() - optional)
    unexpected = sorted(shapes.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & shapes.keys() if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what} {names[:3]}"
            for what, names in (("missing", missing), ("unexpected", unexpected))
            if names
        )
        if wrong:
            k = wrong[0]
            detail += (
                f"{'; ' if detail else ''}{k} is {list(shapes[k])}, config says {list(expected[k])}"
            )
        raise _reject("corrupt", f"tensors do not match the config: {detail}")


def load_model_dir(
    directory: Path, constraints: ModelConstraints, *, device: str = "cpu"
) -> LoadedModel:
    """Check the directory (see the module docstring), then build the model and load its tensors."""
    directory = Path(directory)
    config_dict, report, shapes = _inspect(directory, constraints)
    _, config_cls = _CONFIG_CLASSES[report.architecture]
    try:
        config = config_cls.from_dict(config_dict)
    except Exception as exc:  # transformers validates configs with assorted exception types
        raise _reject("bad_config", f"config.json does not describe a model: {exc}") from exc
    _match_skeleton(config, shapes, constraints)
    try:
        model = build_model(config).to(torch.float32)
        _copy_tensors(model, directory / "model.safetensors", list(shapes))
        if config.tie_word_embeddings:
            model.tie_weights()
        return LoadedModel(model.to(device=device, dtype=torch.float32).eval(), report)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise ResourceExhausted(
            f"out of memory loading a {report.parameters}-parameter model on {device}: {exc}",
            fix="free memory on this machine or give it more; the model is within its limits",
        ) from exc


def _copy_tensors(model: PreTrainedModel, path: Path, names: list[str]) -> None:
    """Copy each tensor into the model's own (fp32) parameter, one at a time; refuse NaN/inf."""
    targets = model.state_dict()
    try:
        with safe_open(str(path), framework="pt") as handle, torch.no_grad():
            for name in names:
                tensor = handle.get_tensor(name)
                if not torch.isfinite(tensor).all():
                    raise _reject("non_finite", f"{name} holds NaN or infinite values")
                targets[name].copy_(tensor)
    except (SafetensorError, OSError) as exc:  # changed on disk since the header was read
        raise _reject("corrupt", f"model.safetensors cannot be read: {exc}") from exc


_OOM_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the ways torch and Python report exhausted GPU or host memory."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(p in message for p in _OOM_PHRASES)
