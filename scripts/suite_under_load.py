"""Run the whole test suite N times in a row while busy loops keep every core loaded (issue 21).

    python3 scripts/suite_under_load.py --runs 5 [--busy 2] [-- pytest args]

A suite that holds only on an idle machine fails CI at random: the fault tests must reach their fault points by
conditions they control (workflows/failpoints.py), never by racing the clock. This script is the check: it starts
`--busy` pure-Python busy loops (default: one per core), runs `python -m pytest` with the interpreter that runs
the script, and prints one line per run (exit status, passed / failed / skipped counts, wall time) and a summary.
It exits 0 only when every run passed. It is a developer's check, not part of the suite.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spin() -> None:
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy-loop processes (default: one per core)")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest after `--`")
    args = p.parse_args(argv)
    if args.runs < 1 or args.busy < 0:
        p.error(f"--runs {args.runs} / --busy {args.busy}: need runs >= 1 and busy >= 0")

    loops = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for proc in loops:
        proc.start()
    results = []
    try:
        for i in range(1, args.runs + 1):
            start = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                               cwd=REPO, capture_output=True, text=True)
            wall = time.monotonic() - start
            tail = (r.stdout.strip().splitlines() or [""])[-1]
            counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail))
            results.append(r.returncode)
            print(f"run {i}/{args.runs}: exit {r.returncode}, {counts}, {wall:.0f} s, busy loops {args.busy}",
                  flush=True)
            if r.returncode != 0:
                failed = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
                print("\n".join(failed[:20]), flush=True)
    finally:
        for proc in loops:
            proc.terminate()
    print(f"{results.count(0)} of {len(results)} runs passed under load")
    return 0 if all(code == 0 for code in results) else 1


if __name__ == "__main__":
    sys.exit(main())
