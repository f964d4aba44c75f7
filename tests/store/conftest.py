"""A small real model directory (safetensors weights plus a config), and no hub: the Hugging Face
libraries run offline with a private HF_HOME unless a test lifts that for a 127.0.0.1 fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

CAP = 10 * 1024 * 1024  # a cap far above the test models: only tests of the cap go near it


def write_model(directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file(
        {"embed.weight": torch.randn(16, 8, generator=g), "head.bias": torch.zeros(16)},
        str(directory / "model.safetensors"),
    )
    (directory / "config.json").write_text(json.dumps({"hidden": 8, "vocab": 16}))
    (directory / "sub").mkdir(exist_ok=True)
    save_file({"extra": torch.ones(4)}, str(directory / "sub" / "adapter.safetensors"))
    return directory


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


@pytest.fixture(autouse=True)
def _no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(flag, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
