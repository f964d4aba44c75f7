"""A small real model directory: safetensors weights plus a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


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
