"""Two trainings at once against one alone: does `interp train` collapse when it shares the machine?

    python bench/concurrent_training.py [--steps N]

Runs the same small `interp train` command (modular, p = 29, 32 examples, batch 64, 2 blocks of width 128)
solo and as two concurrent processes, with --threads 1, with --threads = all cores, and with the default
(no --threads: all cores when the machine is idle, 1 when another job runs). Prints wall seconds and training
steps/s per process (from each run's own config.json wall_s, which excludes start-up and imports).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERP = [sys.executable, "-m", "interp.cli"]


def command(out: Path, steps: int, threads: int | None) -> list[str]:
    cmd = INTERP + ["train", "--task", "modular", "--p", "29", "--n-examples", "32", "--batch-size", "64",
                    "--layers", "2", "--heads", "4", "--d-model", "128", "--act-fn", "relu", "--steps", str(steps),
                    "--eval-every", str(steps), "--checkpoint-every", str(10 * steps), "--out", str(out), "--no-resume"]
    return cmd + (["--threads", str(threads)] if threads is not None else [])


def run(n_procs: int, steps: int, threads: int | None, stagger_s: float) -> list[float]:
    """Steps/s of each of ``n_procs`` concurrent trainings (the second starts ``stagger_s`` after the first)."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(n_procs):
            procs.append(subprocess.Popen(command(Path(tmp) / f"run{i}", steps, threads), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=os.environ | {"TQDM_DISABLE": "1"}))
            time.sleep(stagger_s)
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"a training exited with {p.returncode}")
        walls = [json.loads((Path(tmp) / f"run{i}" / "config.json").read_text())["train"]["wall_s"] for i in range(n_procs)]
    return [steps / w for w in walls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--stagger", type=float, default=5.0, help="seconds between the two starts")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores, load average (1 min) {os.getloadavg()[0]:.2f}, {args.steps} steps per run")
    for label, threads in (("--threads 1", 1), (f"--threads {cores}", cores), ("default (no --threads)", None)):
        solo = run(1, args.steps, threads, 0.0)[0]
        pair = run(2, args.steps, threads, args.stagger)
        print(f"{label:<24} solo {solo:6.2f} steps/s   two at once {pair[0]:6.2f} and {pair[1]:6.2f} steps/s   "
              f"together {sum(pair):6.2f} ({sum(pair) / solo:.2f}x solo)")
    print(f"load average (1 min) at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
