"""Dependencies point one way: a lower layer never imports a higher one, and nothing imports a
first-party module by a bare name (``import validator``) instead of ``crucible.validator``.

Every import statement of every module — module level and inside functions — is read with
``ast``; a relative import is resolved against its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package → the packages it may import (besides itself). Ranks, lowest first:
#   protocol · observe · chain, store, competitions · models, corpus · scoring, server, collab
#   · client
#   · miner, validator · dashboard · neurons
ALLOWED: dict[str, frozenset[str]] = {}
_RANKS: list[tuple[str, ...]] = [
    ("protocol",),
    ("observe",),
    ("chain", "store", "competitions"),
    ("models", "corpus"),
    ("scoring", "server", "collab"),
    ("client",),
    ("miner", "validator"),
    ("dashboard",),
    ("neurons",),
]
for _rank, _packages in enumerate(_RANKS):
    _below = frozenset(p for lower in _RANKS[:_rank] for p in lower)
    for _package in _packages:
        ALLOWED[_package] = _below
# within a rank only these edges exist (no cycles: models → store, corpus → store, …)
ALLOWED["models"] |= {"store"}
ALLOWED["corpus"] |= {"store"}
ALLOWED["scoring"] |= {"corpus", "models"}
ALLOWED["server"] |= {"chain"}
ALLOWED["collab"] |= {"corpus", "models", "scoring"}

TOP_LEVEL_FOLDERS = {
    "neurons": "neurons",
    "validator": "validator",
    "miner": "miner",
    "protocol": "protocol",
}
FIRST_PARTY = set(ALLOWED) | {"bench", "tests"}
# Only the backend talks to the SDK's chain layer; keys and http_auth are used where they belong.
BITTENSOR_IMPORTERS = {"chain", "protocol", "neurons"}


def source_files(root: Path = ROOT) -> list[tuple[str, Path]]:
    out = [
        (pkg, path)
        for pkg, folder in TOP_LEVEL_FOLDERS.items()
        for path in (root / folder).rglob("*.py")
    ]
    for path in (root / "crucible").rglob("*.py"):
        parts = path.relative_to(root / "crucible").parts
        out.append(("crucible" if len(parts) == 1 else parts[0], path))
    return sorted(out)


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] != "crucible":
        parts.insert(0, "crucible")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join([*base, node.module] if node.module else base)))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for package, path in source_files(root):
        rel = path.relative_to(root)
        for line, name in imported_modules(path, root):
            top, _, rest = name.partition(".")
            if top in FIRST_PARTY:
                bad.append(f"{rel}:{line}: imports {name!r} by a bare name; use crucible.{name}")
            elif top == "crucible" and rest:
                target = rest.split(".")[0]
                if (
                    package != "crucible"
                    and target != package
                    and target not in ALLOWED.get(package, ())
                ):
                    bad.append(f"{rel}:{line}: {package} may not import crucible.{target}")
            elif top == "bittensor" and package not in BITTENSOR_IMPORTERS:
                bad.append(f"{rel}:{line}: only chain/, protocol/ and neurons/ import bittensor")
    return bad


def test_every_package_is_in_a_layer() -> None:
    packages = {package for package, _ in source_files()} - {"crucible"}
    assert packages <= set(ALLOWED), f"unranked packages: {packages - set(ALLOWED)}"


def test_dependencies_point_one_way() -> None:
    assert violations() == []


def test_the_check_catches_upward_and_bare_imports(tmp_path: Path) -> None:
    """The rule must be able to fail: a tree whose scoring imports the validator, whose
    protocol imports the chain by a relative import, and whose miner uses a bare name."""
    files = {
        "crucible/scoring/bad.py": "def f():\n    from crucible.validator.loop import run_round\n",
        "protocol/bad.py": "from ..chain import interface\n",
        "miner/bad.py": "import validator.loop\n",
        "validator/ok.py": "from crucible.scoring import compete\nfrom . import loop\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = violations(tmp_path)
    assert any("scoring may not import crucible.validator" in v for v in found), found
    assert any("protocol may not import crucible.chain" in v for v in found), found
    assert any("imports 'validator.loop' by a bare name" in v for v in found), found
    assert not any(v.startswith("validator/ok.py") for v in found), found
