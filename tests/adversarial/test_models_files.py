"""Hostile model files cost their uploader a rejection, never the validator's memory.

Found by attack: a ``config.json`` declaring hidden 16384 × 48 layers (or an ffn of 1e7) over tiny
safetensors was rejected only after building the model from the config: validator peak RSS
+4.9 GiB, OOM-killed without a cap. Now nothing is allocated from a size a file claims before it
is checked: the config's parameter count comes from a ``meta``-device skeleton, every tensor name
and shape is matched to the safetensors header (read alone), and only then is anything built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from crucible.models.build import tiny_model
from crucible.models.io import MAX_HEADER_BYTES, load_model_dir, save_model_dir
from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import ModelRejected

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ModelConstraints(
    architectures=("LlamaForCausalLM", "GPT2LMHeadModel"),
    min_parameters=1_000,
    max_parameters=200_000,
    max_bytes=5_000_000,
    tokenizer="tok.json",
    tokenizer_sha256="0" * 64,
    vocab_size=512,
    sequence_length=64,
)
RSS_GROWTH_LIMIT_MB = 300


@pytest.fixture(autouse=True)
def _no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(flag, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _with(path: Path, **changes: object) -> Path:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))
    return path


def _raw_safetensors(path: Path, header: dict, data: bytes, declared: int | None = None) -> None:
    raw = json.dumps(header).encode()
    length = len(raw) if declared is None else declared
    path.write_bytes(length.to_bytes(8, "little") + raw + data)


def _hostile_dirs(root: Path) -> dict[str, Path]:
    """Each directory: a real tiny model's files with one lie in them."""
    dirs = {}

    def make(name: str, **changes: object) -> Path:
        dirs[name] = _with(save_model_dir(tiny_model(), root / name), **changes)
        return dirs[name]

    wide = {"hidden_size": 16384, "num_attention_heads": 128, "num_key_value_heads": 128}
    make("deep_and_wide", **wide, head_dim=128, num_hidden_layers=48)
    make("wide", **wide, head_dim=128)  # the 2 layers the file has, 16384 wide
    make("huge_ffn", intermediate_size=10_000_000)
    make("plausible_but_mismatched", hidden_size=64, head_dim=32)  # within limits, shapes differ
    huge = make("huge_shapes")
    _raw_safetensors(
        huge / "model.safetensors",
        {"model.embed_tokens.weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20],
                                       "data_offsets": [0, 4 << 40]}},
        b"\0" * 64,
    )  # fmt: skip
    far = make("offsets_past_the_file")
    _raw_safetensors(
        far / "model.safetensors",
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [1 << 40, (1 << 40) + 16]}},
        b"\0" * 16,
    )
    claims = make("header_length_claims_a_terabyte")
    _raw_safetensors(claims / "model.safetensors", {}, b"\0" * 64, declared=1 << 40)
    beyond = make("header_length_past_the_file")
    _raw_safetensors(beyond / "model.safetensors", {}, b"\0" * 64, declared=MAX_HEADER_BYTES - 1)
    return dirs


# Run in a fresh interpreter: its peak RSS is measured after importing torch + transformers
# (and the loader), then after loading every hostile directory. The address space is capped a
# few GiB above the baseline so a regression fails with MemoryError instead of exhausting the
# machine the tests share.
_PROBE = """
import json, resource, sys
from pathlib import Path
import torch, transformers
from crucible.models.io import load_model_dir
from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import ModelRejected

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

with open("/proc/self/status") as status:
    vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize"))
limit = (vm_kb + 3 * 1024 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
constraints = ModelConstraints.model_validate_json(sys.argv[1])
base = peak_mb()
results = {}
for directory in map(Path, sys.argv[2:]):
    try:
        load_model_dir(directory, constraints)
        results[directory.name] = ["loaded", ""]
    except ModelRejected as exc:
        results[directory.name] = [exc.reason, exc.message]
    except MemoryError as exc:
        results[directory.name] = ["MemoryError", str(exc)]
print(json.dumps({"base_mb": base, "growth_mb": peak_mb() - base, "results": results}))
"""


def test_hostile_sizes_are_refused_without_allocating(tmp_path: Path) -> None:
    dirs = _hostile_dirs(tmp_path)
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, CONSTRAINTS.model_dump_json(), *map(str, dirs.values())],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    reasons = {name: reason for name, (reason, _) in report["results"].items()}
    assert reasons == {
        "deep_and_wide": "corrupt",  # 48 layers declared over a file holding 20 tensors
        "wide": "parameters",  # the meta skeleton counts 2.1e9 parameters
        "huge_ffn": "parameters",
        "plausible_but_mismatched": "corrupt",
        "huge_shapes": "corrupt",
        "offsets_past_the_file": "corrupt",
        "header_length_claims_a_terabyte": "corrupt",
        "header_length_past_the_file": "corrupt",
    }, report["results"]
    assert "config.json implies" in report["results"]["wide"][1]
    assert (
        "model.embed_tokens.weight is [512, 32], config says [512, 64]"
        in (report["results"]["plausible_but_mismatched"][1])
    )
    assert report["growth_mb"] < RSS_GROWTH_LIMIT_MB, report


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("README.md", "unexpected_file"),
        ("modeling_evil.py", "unexpected_file"),
        ("tokenizer.json", "unexpected_file"),
        ("model-00001-of-00002.safetensors", "unexpected_file"),
        ("pytorch_model.bin", "pickle_refused"),
        ("optimizer.pt", "pickle_refused"),
        ("weights.npz", "pickle_refused"),
    ],
)
def test_unexpected_files_in_a_model_folder_are_refused(
    tmp_path: Path, name: str, reason: str
) -> None:
    path = save_model_dir(tiny_model(), tmp_path / "m")
    (path / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelRejected, match=name.replace(".", r"\.")) as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == reason


def test_subfolders_and_symlinks_in_a_model_folder_are_refused(tmp_path: Path) -> None:
    path = save_model_dir(tiny_model(), tmp_path / "m")
    (path / "extra").mkdir()
    with pytest.raises(ModelRejected, match="only plain files") as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "unexpected_file"
    (path / "extra").rmdir()
    (path / "generation_config.json").symlink_to("/etc/passwd")
    with pytest.raises(ModelRejected, match="only plain files") as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "unexpected_file"


def test_integer_weights_are_refused_from_the_header(tmp_path: Path) -> None:
    path = save_model_dir(tiny_model(), tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ModelRejected, match="model.norm.weight has dtype I32") as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "dtype"


def test_infinite_weights_are_refused(tmp_path: Path) -> None:
    path = save_model_dir(tiny_model(), tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state["model.norm.weight"][3] = float("inf")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ModelRejected, match="model.norm.weight holds NaN or infinite") as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "non_finite"


_NAMES = st.sampled_from(["model.embed_tokens.weight", "model.norm.weight", "w", "__metadata__"])
_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "F64", "X"]),
        "shape": st.lists(st.integers(0, 2**40), max_size=3),
        "data_offsets": st.lists(st.integers(0, 2**62), min_size=2, max_size=2),
    }
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    header=st.dictionaries(_NAMES, _ENTRY, max_size=3),
    data=st.binary(max_size=64),
    declared=st.none() | st.integers(0, 2**64 - 1),
    garbage=st.none() | st.binary(max_size=40),
)
def test_any_safetensors_header_is_a_load_or_a_named_rejection(
    tmp_path: Path,
    header: dict,
    data: bytes,
    declared: int | None,
    garbage: bytes | None,
) -> None:
    path = tmp_path / "m"
    if not path.exists():
        save_model_dir(tiny_model(), path)
    if garbage is not None:
        (path / "model.safetensors").write_bytes(garbage)
    else:
        _raw_safetensors(path / "model.safetensors", header, data, declared)
    with pytest.raises(ModelRejected) as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason in {"corrupt", "dtype", "parameters"}, err.value
