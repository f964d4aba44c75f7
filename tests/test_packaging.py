"""The wheel: exactly one top-level package, the specs as package data, and working commands.

The wheel is built from the tracked files (a copy, so the checkout gains no build/ folder) and
installed into a throwaway venv that reuses this project's installed dependencies (a ``.pth``
line to their site-packages; no network). Its commands then run from a folder outside the
checkout, so nothing can be imported from the source tree by accident.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from tests.chain.nodeproc import free_port
from tests.test_layering import TOP_LEVEL_FOLDERS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"


def declared_packages() -> tuple[list[str], dict[str, str]]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return setuptools["packages"], setuptools["package-dir"]


def test_every_package_folder_is_declared() -> None:
    packages, package_dir = declared_packages()
    on_disk = {
        "crucible." + ".".join(p.parent.relative_to(ROOT / "crucible").parts)
        for p in (ROOT / "crucible").rglob("__init__.py")
    }
    on_disk = {name.rstrip(".") for name in on_disk}
    for name, folder in TOP_LEVEL_FOLDERS.items():
        on_disk |= {
            f"crucible.{name}" + "".join("." + q for q in p.parent.relative_to(ROOT / folder).parts)
            for p in (ROOT / folder).rglob("__init__.py")
        }
        assert package_dir[f"crucible.{name}"] == folder
    assert sorted(packages) == sorted(on_disk)


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(work / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(work / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = (work / "dist").glob("crucible_subnet-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package_with_its_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["crucible"]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"crucible"}
    for data in (
        "crucible/competitions/tiny.toml",
        "crucible/competitions/tokenizers/crucible-bpe-8k-v1.json",
    ):
        assert data in names
    for package in (
        "crucible/neurons/crucible.py",
        "crucible/validator/loop.py",
        "crucible/miner/train.py",
        "crucible/protocol/auth.py",
    ):
        assert package in names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; dependencies come from this project's venv."""
    target = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(target)
    purelib = Path(
        subprocess.run(
            [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (purelib / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "-q",
         "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target / "bin"


def _env(**extra: str) -> dict[str, str]:
    keep = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("BT_")
    }
    return {**keep, **extra}


def test_the_installed_crucible_imports_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import crucible.neurons.crucible as m, crucible.competitions as c; print(m.__file__); print(c.specs_dir())"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(str(ROOT) not in path and "site-packages" in path for path in where), where
    out = subprocess.run(
        [str(installed / "crucible"), "--help"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "localnet" in out.stdout and "metagraph" in out.stdout


@pytest.fixture
def wheel_node(installed: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(installed / "crucible"), "localnet", "--data-dir", str(tmp_path / "chain"), "--port", str(port), "--block-time", "0"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("ready:") and f"127.0.0.1:{port}" in first, first + proc.stderr.read()
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped cleanly on SIGTERM" in err, err


def test_the_installed_miner_evaluates_a_model_on_the_installed_localnet(
    installed: Path, wheel_node: str, tmp_path: Path
) -> None:
    import bittensor as bt

    wallet = bt.Wallet(name="wheel", hotkey="miner", path=str(tmp_path / "wallets"))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    shape = ModelShape("LlamaForCausalLM", 8192, 256, layers=1, hidden=32, heads=2, ffn=64)
    save_model_dir(build_model(build_config(shape)), tmp_path / "model")
    shutil.copytree(FIXTURE, tmp_path / "data")
    out = subprocess.run(
        [str(installed / "crucible-miner"), "eval", "--model", "model", "--wallet", "wheel",
         "--wallet-hotkey", "miner", "--wallet-path", str(tmp_path / "wallets")],
        cwd=tmp_path, env=_env(BT_CHAIN_ENDPOINT=wheel_node), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "your mean loss" in out.stdout and "no other eligible model" in out.stdout
