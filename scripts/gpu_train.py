"""Train a run config on a lent GPU for as many steps as a time budget holds, then export what came of it in a
form that the device tool brings back (issue 13: He et al.'s p = 29 run, ``configs/modular/p29-gpu.yaml``).

    python scripts/gpu_train.py fit CONFIG --out DIR --budget-s 420     # time a few steps, then train
    python scripts/gpu_train.py export DIR DEST --max-mb 60             # a copy of DIR that fits the transfer

``fit`` times the training step and an evaluation on the device (a short run of 5, then 10 and 40 steps), sets
``train.steps`` to what the budget holds (at most the config's), and scales the warm-up, the evaluations and the
checkpoints to keep the config's shares of the run (the official warm-up is 10,000 of 200,000 steps: 5%). It then
trains with ``interp.train.train`` into DIR, which checkpoints every tenth of the run, so a kill by an outer
``timeout`` still leaves the best-OOD weights so far (keep_best) in DIR. The planned steps and the timings go to
DIR/../<name>-plan.json (exported beside the checkpoint as plan.json). TF32 matrix products are on (the official code trains in bfloat16).

``export`` copies DIR's config.json and metrics.jsonl, its weights and as many weight snapshots as fit ``--max-mb``
(the best-OOD step's first, then the last, then evenly spread ones) into DEST, every tensor file in float16 (the
device tool returns files of at most 16 MiB: a 6.3M-parameter model is 25 MB in float32). The config's snapshot
entry lists only the snapshots exported; an unfinished run (a kill) is exported with its resume state left out.

On the device machine, with the wheels of README "Training on a lent GPU" in .whl/:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    timeout 480 python3 scripts/gpu_train.py fit configs/modular/p29-gpu.yaml --out /tmp/runs/modular-p29-d2 --budget-s 400
    python3 scripts/gpu_train.py export /tmp/runs/modular-p29-d2 $OUT/modular-p29-d2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from interp.checkpoint import CONFIG, METRICS, WEIGHTS, read_tensors, write_folder_atomically
from interp.config import RunConfig, load_run
from interp.sweep import is_finished
from interp.train import LAST_WEIGHTS, TrainConfig, train

PROBE_STEPS = (10, 40)  # two short runs: their difference is the step time, the rest build and evaluation
MAX_EVALS = 25  # evaluations in a fitted run (the config's own count when fewer)


def timed_run(run: RunConfig, steps: int) -> float:
    """Seconds for a run of ``steps`` steps with one evaluation, on the config's device, not saved."""
    cfg = dataclasses.replace(run.train, steps=steps, eval_every=steps, warmup_steps=1, snapshots=0, patience=None)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(run.task, run.spec, cfg, out=None, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plan(run: RunConfig, budget_s: float) -> tuple[TrainConfig, dict[str, float]]:
    """The config's training fitted to ``budget_s`` seconds: steps, warm-up, evaluations and checkpoints."""
    timed_run(run, 5)  # kernels compiled, caches warm
    short, long = (timed_run(run, n) for n in PROBE_STEPS)
    step_s = max((long - short) / (PROBE_STEPS[1] - PROBE_STEPS[0]), 1e-4)
    overhead_s = max(short - PROBE_STEPS[0] * step_s, 0.0)  # build, first batch, one evaluation
    full = run.train
    n_evals = max(1, min(full.steps // full.eval_every, MAX_EVALS))  # each costs about overhead_s (an upper bound)
    steps = min(full.steps, int((budget_s - (n_evals + 1) * overhead_s) / step_s))
    if steps < 100:
        raise SystemExit(f"gpu_train: a budget of {budget_s:.0f} s holds {max(steps, 0)} steps at {step_s:.3f} s a step "
                         f"and {overhead_s:.1f} s an evaluation; give it more time")
    steps = steps // 100 * 100
    share = steps / full.steps
    cfg = dataclasses.replace(
        full, steps=steps, warmup_steps=max(1, round(full.warmup_steps * share)),
        eval_every=max(1, steps // n_evals), checkpoint_every=max(1, steps // 10))
    return cfg, {"step_s": step_s, "overhead_s": overhead_s, "budget_s": budget_s, "steps": steps,
                 "share_of_config": share}


def cmd_fit(args: argparse.Namespace) -> int:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    run = load_run(args.config)
    out = Path(args.out)
    cfg, timing = plan(run, args.budget_s)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    record = {"config": args.config, "device": device, **timing, "train": cfg.to_dict()}
    plan_file = plan_path(out)
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(record, indent=1))
    print(json.dumps(record), flush=True)
    start = time.perf_counter()
    train(run.task, run.spec, cfg, out=out, progress=False)
    print(f"trained {cfg.steps} steps in {time.perf_counter() - start:.0f} s into {out}", flush=True)
    return 0


def plan_path(out: Path) -> Path:
    """Where ``fit`` records its plan for the run in ``out``: beside the folder, not in it (train owns it)."""
    return out.parent / f"{out.name}-plan.json"


def half(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors in float16 (integers kept)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in read_tensors(path).items()}


def chosen_snapshots(entry: dict, room: int) -> list[int]:
    """Up to ``room`` snapshot steps: the best-OOD step's, the last, then evenly spread ones."""
    steps = sorted(entry.get("steps", []))
    first = [s for s in (entry.get("best_ood_step"), steps[-1] if steps else None) if s is not None]
    picks = list(dict.fromkeys(first))[:room]
    rest = [s for s in steps if s not in picks]
    while len(picks) < room and rest:
        picks.append(rest.pop(len(rest) // 2) if len(picks) % 2 else rest.pop(0))
    return sorted(picks)


def cmd_export(args: argparse.Namespace) -> int:
    src, dest = Path(args.src), Path(args.dest)
    if not (src / CONFIG).is_file():
        print(f"gpu_train: {src} holds no checkpoint (no {CONFIG})", file=sys.stderr)
        return 2
    config = json.loads((src / CONFIG).read_text())
    files: dict[str, bytes | dict[str, torch.Tensor]] = {WEIGHTS: half(src / WEIGHTS)}
    size = sum(t.numel() * t.element_size() for t in files[WEIGHTS].values())  # type: ignore[union-attr]
    room = max(int(args.max_mb * 1e6 // size) - 1, 0)  # weights once, the rest for snapshots
    plan_file = plan_path(src)
    extra = {name: f.read_bytes() for name, f in ((METRICS, src / METRICS), ("plan.json", plan_file)) if f.is_file()}
    entry = config.get("snapshots") or {}
    picks = chosen_snapshots(entry, min(room, args.max_files - 2 - len(extra)))  # 2: config and weights
    files |= {entry["files"][str(s)]: half(src / entry["files"][str(s)]) for s in picks}
    if entry:
        config["snapshots"] = entry | {"steps": picks, "dtype": "float16",
                                       "best_ood_step": entry.get("best_ood_step") if entry.get("best_ood_step") in picks else None,
                                       "files": {str(s): entry["files"][str(s)] for s in picks}}
    finished = is_finished(src)
    config["purpose"] = (config.get("purpose") or "") + (
        " Weights exported in float16." + ("" if finished else " The run was stopped before its last step: "
                                           "these are the best-OOD weights of the last checkpoint."))
    write_folder_atomically(dest, files | extra | {CONFIG: json.dumps(config, indent=1).encode()})
    print(f"exported {src} -> {dest}: weights, {len(picks)} snapshot(s) {picks}, finished={finished}"
          + ("" if not (src / LAST_WEIGHTS).is_file() else " (last-step weights left out)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="time a few steps, then train for as many as the budget holds")
    fit.add_argument("config")
    fit.add_argument("--out", required=True)
    fit.add_argument("--budget-s", type=float, default=400.0, help="seconds for the training itself")
    export = sub.add_parser("export", help="a float16 copy of a checkpoint that fits the device tool's transfer")
    export.add_argument("src")
    export.add_argument("dest")
    export.add_argument("--max-mb", type=float, default=60.0)
    export.add_argument("--max-files", type=int, default=8)
    args = parser.parse_args(argv)
    if args.command == "fit" and not (args.budget_s > 0 and math.isfinite(args.budget_s)):
        parser.error("--budget-s must be a positive number of seconds")
    return cmd_fit(args) if args.command == "fit" else cmd_export(args)


if __name__ == "__main__":
    sys.exit(main())
