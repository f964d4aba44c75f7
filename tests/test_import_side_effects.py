"""Importing a module does nothing: no environment variable set, no file written, no output.

Every module of the package is imported in a fresh interpreter, in an empty working directory,
after the third-party libraries it uses (which may set their own variables on import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_layering import module_name, source_files

PROBE = """
import importlib, json, os, sys
import torch, transformers, datasets, fastapi, aiohttp, bittensor, safetensors  # noqa: F401
from transformers import GPT2LMHeadModel, LlamaForCausalLM  # noqa: F401  (sets TORCHINDUCTOR_CACHE_DIR)
before = dict(os.environ)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
after = dict(os.environ)
changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
print(json.dumps({"changed": changed, "files": sorted(os.listdir("."))}))
"""


def test_importing_every_module_changes_nothing(tmp_path: Path) -> None:
    modules = sorted({module_name(path) for _, path in source_files()})
    assert "crucible.neurons.common" in modules and "crucible.validator.loop" in modules
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["changed"] == {}
    assert report["files"] == []
    assert out.stdout.strip().count("\n") == 0, "a module printed something on import"
