"""How long store commands (`cachesearch studies`, `front`) spend importing, from `python -X importtime`.

Each command runs in a fresh interpreter, as a user runs it; the report sums the self times of every
import (total, and torch's), counts the modules, and times the whole process. With `--base DIR` (a
source tree of another version, e.g. `git archive main | tar -x -C /tmp/base`) the same commands run
on both trees in interleaved rounds, so the two are compared under the same load. Commands that fail
(an unknown study, a missing database) are included: an error path used to import torch to name the
error it caught.

    python bench/cli_import_time.py                              # this tree, 5 rounds
    python bench/cli_import_time.py --base /tmp/base --rounds 5 --out bench/results/cli_import_time.txt
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (("studies", "--db", "{db}"), ("front", "demo", "--db", "{db}"), ("front", "nope", "--db", "{db}"),
            ("studies", "--db", "{missing}"))
_RUN = "import sys; sys.argv = ['cachesearch', *sys.argv[1:]]; from search.cli import app; app()"
_MAKE_DB = ("import sys; from store import Store, ObjectiveSpec; s = Store(sys.argv[1]); s.create_study('demo', {}, "
            "'sig', 'random', {}, [ObjectiveSpec('psnr'), ObjectiveSpec('mac_speedup')], {'psnr': 10.0})")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")


def measure(tree: Path, args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", _RUN, *args], capture_output=True, text=True,
                          env=env, cwd=tree)
    wall = time.perf_counter() - t0
    total = torch = 0
    modules = 0
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m:
            modules += 1
            total += int(m.group(1))
            torch += int(m.group(1)) if m.group(2).split(".")[0] == "torch" else 0
    return {"exit": done.returncode, "wall": wall, "imports": total / 1e6, "torch": torch / 1e6, "modules": modules}


def load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another source tree to compare with (interleaved rounds)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    trees = {"this tree": ROOT, **({"base": args.base.resolve()} if args.base else {})}
    work = Path(tempfile.mkdtemp(prefix="cli-import-"))
    dbs = {}
    for name, tree in trees.items():
        dbs[name] = f"sqlite:///{work / (name.replace(' ', '_') + '.db')}"
        subprocess.run([sys.executable, "-c", _MAKE_DB, dbs[name]], check=True,
                       env={**os.environ, "PYTHONPATH": str(tree)})
    lines = [f"# bench/cli_import_time.py  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
             f"{args.rounds} interleaved rounds; {load()} at the start)"]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for command in COMMANDS:
            for name, tree in trees.items():
                argv = [a.format(db=dbs[name], missing=str(work / "no" / "such.db")) for a in command]
                results.setdefault((" ".join(command[:2]) if command[0] == "front" else " ".join(command[:1]) +
                                    (" (missing db)" if "{missing}" in command else ""), name), []).append(
                    measure(tree, argv))
    lines.append(f"{load()} at the end")
    lines.append(f"{'command':24s} {'tree':10s} exit  wall s  imports s  torch s  modules   (medians)")
    for (command, name), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "imports", "torch", "modules")}
        lines.append(f"{command:24s} {name:10s} {int(runs[0]['exit']):4d}  {med['wall']:6.2f}  {med['imports']:9.2f}  "
                     f"{med['torch']:7.2f}  {int(med['modules']):7d}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
