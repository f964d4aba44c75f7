"""min_compute.yml follows the community schema and its numbers are consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROOT = Path(__file__).resolve().parents[1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cpu(_Strict):
    min_cores: int = Field(ge=1)
    min_speed: float = Field(gt=0)
    recommended_cores: int = Field(ge=1)
    recommended_speed: float = Field(gt=0)
    architecture: Literal["x86_64", "arm64", "aarch64"]

    @model_validator(mode="after")
    def _recommended_not_below_min(self) -> Cpu:
        assert self.recommended_cores >= self.min_cores
        assert self.recommended_speed >= self.min_speed
        return self


class Gpu(_Strict):
    required: bool
    min_vram: float = Field(ge=0)
    recommended_vram: float = Field(ge=0)
    cuda_cores: int = Field(ge=0)
    min_compute_capability: float = Field(ge=0)
    recommended_compute_capability: float = Field(ge=0)
    recommended_gpu: str

    @model_validator(mode="after")
    def _consistent(self) -> Gpu:
        assert self.recommended_vram >= self.min_vram
        assert self.recommended_compute_capability >= self.min_compute_capability
        if self.required:
            assert self.min_vram > 0 and self.min_compute_capability > 0
        return self


class Memory(_Strict):
    min_ram: float = Field(gt=0)
    min_swap: float = Field(ge=0)
    recommended_swap: float = Field(ge=0)
    ram_type: str


class Storage(_Strict):
    min_space: float = Field(gt=0)
    recommended_space: float = Field(gt=0)
    type: Literal["SSD", "HDD", "NVMe"]
    min_iops: int = Field(gt=0)
    recommended_iops: int = Field(gt=0)

    @model_validator(mode="after")
    def _recommended_not_below_min(self) -> Storage:
        assert self.recommended_space >= self.min_space
        assert self.recommended_iops >= self.min_iops
        return self


class Os(_Strict):
    name: str
    version: str


class Role(_Strict):
    cpu: Cpu
    gpu: Gpu
    memory: Memory
    storage: Storage
    os: Os


class RoleOverride(_Strict):
    cpu: Cpu | None = None
    gpu: Gpu | None = None
    memory: Memory | None = None
    storage: Storage | None = None


class ComputeSpec(_Strict):
    miner: Role
    validator: Role


class Bandwidth(_Strict):
    download: float = Field(gt=0)
    upload: float = Field(gt=0)


class NetworkSpec(_Strict):
    bandwidth: Bandwidth


class MinCompute(_Strict):
    version: str
    compute_spec: ComputeSpec
    competition_overrides: dict[str, dict[Literal["miner", "validator"], RoleOverride]] = {}
    network_spec: NetworkSpec


@pytest.fixture(scope="module")
def min_compute() -> MinCompute:
    return MinCompute.model_validate(yaml.safe_load((ROOT / "min_compute.yml").read_text()))


def test_min_compute_follows_the_community_schema(min_compute: MinCompute) -> None:
    assert min_compute.compute_spec.miner.os.name
    assert min_compute.network_spec.bandwidth.download >= min_compute.network_spec.bandwidth.upload


def test_tiny_competition_runs_without_a_gpu(min_compute: MinCompute) -> None:
    for role in (min_compute.compute_spec.miner, min_compute.compute_spec.validator):
        assert role.gpu.required is False
        assert role.cpu.min_cores <= 2  # the tiny competition is sized for a 2-core machine


def test_small_competition_requires_a_gpu_with_enough_memory(min_compute: MinCompute) -> None:
    small = min_compute.competition_overrides["small"]
    miner_gpu, validator_gpu = small["miner"].gpu, small["validator"].gpu
    assert miner_gpu is not None and validator_gpu is not None
    assert miner_gpu.required and validator_gpu.required
    # 125M params x 16 bytes (fp32 weights, grads, two AdamW moments) = 2 GB before activations
    assert miner_gpu.min_vram >= 125e6 * 16 / 1e9 * 4
    # a validator holds one fp32 model (0.5 GB) plus activations of one batch at a time
    assert validator_gpu.min_vram >= 125e6 * 4 / 1e9
