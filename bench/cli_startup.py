"""How fast the CLI answers: `interp --help` and every subcommand's `--help`, against a bare Python start.

    python bench/cli_startup.py [--repeats N]

Each command runs N times as a fresh process (the median is reported). The anchor is `python -c pass` measured
in the same run; the budget is 1 s per help (issue 15). `import interp` is lazy (interp/__init__.py), so a help
loads argparse and the parser, not TransformerLens.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from interp.parser import build_parser, subparsers  # noqa: E402  (torch-free)

SUBCOMMANDS = tuple(subparsers(build_parser()))
BUDGET_S = 1.0


def wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    anchor = wall([sys.executable, "-c", "pass"], args.repeats)
    print(f"{'command':<34} {'median s':>9} {'x python':>9}  under {BUDGET_S:g} s")
    print(f"{'python -c pass (anchor)':<34} {anchor:>9.3f} {1.0:>9.2f}")
    worst = 0.0
    for sub in ("", *SUBCOMMANDS):
        cmd = [sys.executable, "-m", "interp.cli", *([sub] if sub else []), "--help"]
        t = wall(cmd, args.repeats)
        worst = max(worst, t)
        print(f"{'interp ' + (sub + ' ' if sub else '') + '--help':<34} {t:>9.3f} {t / anchor:>9.2f}  {'yes' if t < BUDGET_S else 'NO'}")
    print(f"worst: {worst:.3f} s")


if __name__ == "__main__":
    main()
