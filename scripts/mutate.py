#!/usr/bin/env python3
"""Mutation testing of the core packages with mutmut (a developer tool, not part of CI): ``make mutate``.

For each group below, mutmut changes the group's modules one small edit at a time (an operator, a constant,
a removed call...) and runs the tests that cover the changed function; a mutant the tests do not notice
"survives" and points at a missing assertion. Each group runs in a fresh copy of the working tree (mutmut
writes a ``mutants/`` folder there), so the checkout is never touched.

    python scripts/mutate.py                 # every group
    python scripts/mutate.py audio retarget  # some groups
    python scripts/mutate.py --list          # the groups, their modules and tests

Writes ``mutation/<group>.json`` (counts and the surviving mutants by name) and prints a table; survivors
are shown with ``mutmut show NAME`` in ``mutation/<group>/`` (the copy is kept for that). docs/testing.md
records the scores and the triage.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "mutation"

# group -> (modules to mutate, the tests that guard them: files and pytest arguments)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "audio": (["lsf_core/audio.py"], ["test/test_audio.py"]),
    "retarget": (["lsf_core/face/retarget.py"], ["test/test_ros_messages.py", "-k", "retarget"]),
    "converter": (["lsf_core/models/release.py"], ["test/test_convert.py", "test/test_release_keys.py"]),
    "rigs": (["lsf_core/face/rig.py", "lsf_core/face/gltf.py"], ["test/test_rig.py", "test/test_gltf_rigs.py"]),
    "streaming": (["lsf_core/runtime/streaming.py", "lsf_core/runtime/gate.py", "lsf_core/runtime/pacing.py"],
                  ["test/test_streaming.py", "test/test_reliability_core.py", "test/test_pacing.py"]),
    "models": (["lsf_core/models/realtime.py", "lsf_core/models/hifb.py", "lsf_core/models/motion_prior.py"],
               ["test/test_realtime_model.py", "test/test_paper_model.py"]),
}


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run_group(name: str, max_children: int) -> dict:
    modules, tests = GROUPS[name]
    modules = [m for m in modules if (REPO / m).is_file()]
    tests = [t for t in tests if not t.endswith(".py") or (REPO / t).is_file()]
    work = OUT / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _copy_tree(work)
    def listed(items: list[str]) -> str:   # setup.cfg lists: one item per line
        return "".join(f"\n    {item}" for item in items)

    with open(work / "setup.cfg", "a") as f:
        f.write(f"\n[mutmut]\nsource_paths = lsf_core\nonly_mutate ={listed(modules)}\n"
                f"also_copy ={listed(['lsf_ros', 'config', 'launch', 'resource', 'package.xml', 'setup.py'])}\n"
                f"pytest_add_cli_args_test_selection ={listed(tests)}\n"
                f"pytest_add_cli_args ={listed(['-p', 'no:cacheprovider', '-q', '-x'])}\n")
    mutmut = [sys.executable, "-m", "mutmut"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t0 = time.time()
    with open(work / "mutmut.log", "w") as log:
        subprocess.run([*mutmut, "run", "--max-children", str(max_children)], cwd=work, env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=False)
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True,
                             text=True).stdout
    status: dict[str, str] = {}
    for line in listing.splitlines():
        m = re.match(r"\s*(\S+): (\w+)", line)
        if m:
            status[m.group(1)] = m.group(2)
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    judged = sum(counts.values()) - counts.get("skipped", 0) - counts.get("not", 0)
    result = {"group": name, "modules": modules, "tests": tests, "counts": counts,
              "score": round(killed / judged, 3) if judged else None, "minutes": round((time.time() - t0) / 60, 1),
              "survivors": sorted(k for k, s in status.items() if s == "survived")}
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    p.add_argument("--list", action="store_true", help="list the groups and exit")
    p.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel")
    a = p.parse_args(argv)
    if a.list:
        for name, (mods, tests) in GROUPS.items():
            print(f"{name:10s} {' '.join(mods)}  <-  {' '.join(tests)}")
        return 0
    unknown = sorted(set(a.groups) - set(GROUPS))
    if unknown:
        p.error(f"unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")
    if shutil.which("mutmut") is None and subprocess.run([sys.executable, "-c", "import mutmut"]).returncode:
        print("mutmut is not installed: pip install -e .[dev] (scripts/setup.sh does)", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    print(f"{'group':10s} {'killed':>7s} {'survived':>9s} {'no tests':>9s} {'score':>6s} {'min':>6s}")
    for name in a.groups or list(GROUPS):
        r = run_group(name, a.max_children)
        c = r["counts"]
        print(f"{name:10s} {c.get('killed', 0) + c.get('timeout', 0):7d} {c.get('survived', 0):9d} "
              f"{c.get('no', 0):9d} {r['score'] if r['score'] is not None else '-':>6} {r['minutes']:6.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
