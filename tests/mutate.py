"""``make mutate``: mutation testing of the pure scoring core with mutmut (not part of ``make test``).

For each target — a module and the tests that must catch a change to it — mutmut changes one
operator, constant or comparison at a time and runs those tests; a mutant the tests still pass
"survived" and points at a rule no test pins. Targets: the competition math and the round's
sampling (``crucible/scoring``), the Yuma epoch (``crucible/chain/yuma/epoch.py``), request and
response authentication (``protocol/auth.py``), route access (``crucible/server/policy.py``) and
the local chain's weight rules (the set/commit/reveal functions of
``crucible/chain/local/runtime.py``, selected through a patch file of their line ranges).

mutmut rewrites files in place, so it runs on a copy of the tracked files with its own throwaway
venv (the project's dependencies reached through a ``.pth`` line; no network): the checkout is
never touched, even if the run is interrupted. Prints a table, then one JSON line.

    python tests/mutate.py [--only NAME] [--keep]
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # only these (methods or functions); empty: the whole file


TARGETS = (
    Target("compete", "crucible/scoring/compete.py", ("tests/validator/test_compete.py",)),
    Target("sampling", "crucible/scoring/sampling.py", ("tests/validator/test_round_parts.py", "tests/validator/test_probe.py::test_probe_windows_are_drawn_from_the_secret_and_mix_both_identities")),
    Target("yuma epoch", "crucible/chain/yuma/epoch.py", ("tests/yuma/test_steps.py", "tests/yuma/test_epoch.py")),
    Target("auth", "protocol/auth.py", ("tests/protocol/test_auth.py",)),
    Target("route access", "crucible/server/policy.py", ("tests/server/test_limits_and_policy.py",)),
    Target(
        "weight rules",
        "crucible/chain/local/runtime.py",
        ("tests/chain/test_rules.py", "tests/adversarial/test_chain_version_key.py"),
        ("_check_rate_limit", "_set_weights", "_call_set_weights", "_expire_commits", "_call_commit_weights", "_call_reveal_weights"),
    ),
)  # fmt: skip


def _copy_tracked(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def _venv_for(src: Path, where: Path) -> Path:
    """A venv whose editable install points at ``src``; dependencies from this interpreter's."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-build-isolation", "--no-index", "-e", str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    return python


def _patch_for(src: Path, target: Target) -> Path | None:
    """A unified diff that marks the chosen functions' lines as added (mutmut mutates only those)."""
    if not target.functions:
        return None
    text = (src / target.path).read_text()
    ranges = sorted(
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name in target.functions
    )
    lines = text.splitlines()
    hunks = [f"--- a/{target.path}", f"+++ b/{target.path}"]
    for start, end in ranges:
        body = lines[start - 1 : end]
        hunks.append(f"@@ -{start},0 +{start},{len(body)} @@")
        hunks.extend("+" + line for line in body)
    patch = src / f".mutate-{target.name.replace(' ', '_')}.patch"
    patch.write_text("\n".join(hunks) + "\n")
    return patch


def _counts(src: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "junitxml"], cwd=src, capture_output=True, text=True
    ).stdout
    killed = out.count("<testcase") - out.count("<failure") - out.count("<skipped")
    return {"total": out.count("<testcase"), "killed": killed, "survived": out.count("<failure")}


def run_target(src: Path, python: Path, target: Target) -> dict[str, object]:
    (src / ".mutmut-cache").unlink(missing_ok=True)
    runner = f"{python} -m pytest -x -q -p no:cacheprovider -p no:randomly -o addopts= {' '.join(target.tests)}"
    cmd = [
        sys.executable,
        "-m",
        "mutmut",
        "run",
        "--paths-to-mutate",
        target.path,
        "--runner",
        runner,
        "--no-progress",
    ]
    patch = _patch_for(src, target)
    if patch is not None:
        cmd += ["--use-patch-file", str(patch)]
    start = time.monotonic()
    subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    survivors = subprocess.run(
        [sys.executable, "-m", "mutmut", "results"], cwd=src, capture_output=True, text=True
    ).stdout
    return {
        "target": target.name,
        **_counts(src),
        "seconds": round(time.monotonic() - start),
        "results": survivors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", help="run only this target (by name)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the working copy (to inspect mutants)"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="crucible-mutate-"))
    src = work / "src"
    _copy_tracked(src)
    python = _venv_for(src, work / "venv")
    rows = []
    try:
        for target in TARGETS:
            if args.only and target.name not in args.only:
                continue
            row = run_target(src, python, target)
            rows.append(row)
            score = row["killed"] / row["total"] if row["total"] else 1.0
            print(
                f"{row['target']:14} {row['killed']:>4}/{row['total']:<4} killed  {score:6.1%}  ({row['seconds']} s)",
                flush=True,
            )
            if row["survived"]:
                print(
                    "\n".join(
                        "    " + line for line in str(row["results"]).splitlines() if line.strip()
                    )
                )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    killed, total = sum(r["killed"] for r in rows), sum(r["total"] for r in rows)
    print(f"{'all':14} {killed:>4}/{total:<4} killed  {killed / max(1, total):6.1%}")
    print(json.dumps({"mutation_score": round(killed / max(1, total), 4), "killed": killed, "total": total,
                      "targets": {r["target"]: {"killed": r["killed"], "total": r["total"]} for r in rows}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
