"""Sweeps: one run config, a grid of overrides, one checkpoint per cell, and a ``sweep.json`` summary.

    name: modular-phase
    base: modular/base-p7.yaml           # a run config file (relative to this file), or the run inline:
    # task: {...}  model: {...}  train: {...}
    grid:                                # dotted keys into the run config; the cells are the product
      task.n_tasks: [36, 20, 8]
      task.pair_fraction: [0.8, 0.5]
      train.seed: [0]
      # an axis of mappings sets several keys together (zipped axes), e.g. in configs/kernel_depth.yaml:
      # pair: [{task.kernel: relu, model.scoring: relu}, {task.kernel: exp, model.scoring: exp}]
    runs: runs/modular-phase             # one checkpoint folder per cell (relative to the working directory)
    phase_threshold: 0.3                 # accuracy that counts a set as solved when naming modular phases (default 0.5)
    summary: models/modular-phase/sweep.json

Cells run in worker processes, one per core by default (``backend="local"``), or as Ray tasks on a cluster
or a local Ray instance (``backend="ray"``). A cell whose folder holds a finished checkpoint of the same
run is skipped and an unfinished one resumes, so running a sweep again continues it.
"""
from __future__ import annotations

import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Literal

from .cards import last_shot
from .checkpoint import load_checkpoint
from .config import ConfigError, RunConfig, load_run, read_config_file, run_from_dict, same_run, with_overrides
from .train import RESUME_STATE, objective_key

Backend = Literal["local", "ray"]
PHASE_THRESHOLD = 0.5  # accuracy above which a set counts as solved when naming a modular cell's phase
SUMMARY_N, SUMMARY_SEED = 512, 0  # sequences and seed of the last-shot evaluation in the summary


@dataclass(frozen=True)
class Cell:
    """One grid point: its overrides, the run they make, and its checkpoint folder."""

    name: str
    params: dict[str, Any]
    run: RunConfig
    out: Path


@dataclass(frozen=True)
class Sweep:
    name: str
    source: Path
    axes: dict[str, list[Any]]
    cells: list[Cell]
    runs: Path
    summary: Path
    phase_threshold: float = PHASE_THRESHOLD


def cell_name(params: dict[str, Any]) -> str:
    """``n_tasks=32,pair_fraction=0.6,n_layers=2,seed=0``: the last part of each dotted key, in grid order; an
    axis of mappings shows its values joined by "-" (``pair=exp-exp``)."""
    show = lambda v: "-".join(map(str, v.values())) if isinstance(v, dict) else v  # noqa: E731
    return ",".join(f"{k.rsplit('.', 1)[-1]}={show(v)}" for k, v in params.items())


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file and expand its grid; every cell's run is checked before anything trains."""
    path = Path(path)
    data = read_config_file(path)
    unknown = set(data) - {"name", "base", "grid", "runs", "summary", "phase_threshold", "task", "model", "train", "purpose"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; expected name, base, grid, runs, summary")
    if isinstance(data.get("base"), str):
        base = read_config_file(path.parent / data["base"])
    else:
        base = data.get("base") or {k: data[k] for k in ("task", "model", "train") if k in data}
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: grid must map dotted keys to non-empty lists")
    name = data.get("name") or path.stem
    root = Path.cwd()
    runs = root / data.get("runs", f"runs/{name}")
    cells = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        label = cell_name(params) or name
        overrides = {}
        for key, value in params.items():  # an axis of mappings sets several keys together (zipped axes)
            overrides |= value if isinstance(value, dict) else {key: value}
        run = run_from_dict(with_overrides(base, overrides) | {"name": f"{name}/{label}"}, where=f"{path} [{label}]")
        cells.append(Cell(label, params, run, runs / label))
    return Sweep(name, path, dict(grid), cells, runs, root / data.get("summary", f"{runs}/sweep.json"),
                 float(data.get("phase_threshold", PHASE_THRESHOLD)))


def is_finished(out: Path) -> bool:
    """A checkpoint folder whose run ended (config.json written, no resume state left)."""
    return (out / "config.json").is_file() and not (out / RESUME_STATE).is_file()


def train_cell(run_dict: dict[str, Any], out: str) -> str:
    """Train one cell in this process (a pool worker or a Ray task); returns "trained" or "skipped"."""
    import torch

    from .train import train

    torch.set_num_threads(1)  # one worker per core
    run = run_from_dict(run_dict)
    if is_finished(Path(out)):
        if not same_run(run_from_dict(read_config_file(Path(out) / "config.json")), run):
            raise ConfigError(f"{out} holds a finished run of another config; delete it or change runs:")
        return "skipped"
    train(run.task, run.spec, run.train, out=out, progress=False)
    return "trained"


def run_cells(cells: list[Cell], workers: int | None = None, backend: Backend = "local", address: str | None = None,
              on_done: Callable[[Cell, str], None] | None = None) -> dict[str, str]:
    """Train every cell; returns {cell name: "trained" | "skipped" | "failed: <reason>"}."""
    jobs = [(c, c.run.to_dict(), str(c.out)) for c in cells]
    status: dict[str, str] = {}

    def record(cell: Cell, outcome: str) -> None:
        status[cell.name] = outcome
        if on_done:
            on_done(cell, outcome)

    if backend == "ray":
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'icl-interp[ray]'") from None
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(train_cell)
        refs = {remote.remote(d, out): c for c, d, out in jobs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                record(refs[done[0]], ray.get(done[0]))
            except Exception as e:  # a failed cell is reported in the summary, the others go on
                record(refs[done[0]], f"failed: {str(e).strip().splitlines()[-1]}")
        return status
    if backend != "local":
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)) or 1, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_cell, d, out): c for c, d, out in jobs}
        for fut in as_completed(futures):
            try:
                record(futures[fut], fut.result())
            except Exception as e:
                record(futures[fut], f"failed: {e}")
    return status


# --- the summary ----------------------------------------------------------------------------------------


def phase(final: dict[str, float], threshold: float = PHASE_THRESHOLD) -> str | None:
    """He et al.'s phase of a modular cell from its four final accuracies, or None without the four sets."""
    keys = ("id_train_acc", "id_test_acc", "ood_train_acc", "ood_test_acc")
    if not all(k in final for k in keys):
        return None
    if final["ood_test_acc"] >= threshold:
        return "ood_generalization"
    if final["ood_train_acc"] >= threshold:
        return "ood_memorization"
    if final["id_test_acc"] >= threshold:
        return "id_generalization"
    if final["id_train_acc"] >= threshold:
        return "id_memorization"
    return "not_learned"


def summarize_cell(cell: Cell, phase_threshold: float = PHASE_THRESHOLD) -> dict[str, Any]:
    """One row of sweep.json: final and best of every evaluation set, the last-shot OOD score, the best step."""
    ckpt = load_checkpoint(cell.out)
    metrics = [m for m in ckpt.metrics if "step" in m]
    keys = [k for k in metrics[-1] if k.endswith(("_acc", "_error")) and not k.startswith("train")]
    higher = {k: k.endswith("_acc") for k in keys}
    target = objective_key(metrics[-1])
    best_record = (max if higher[target] else min)(metrics, key=lambda m: m[target])
    final = {k: metrics[-1][k] for k in keys}
    split = target.rsplit("_", 1)[0]
    return {
        "final": final,
        "best": {k: (max if higher[k] else min)(m[k] for m in metrics) for k in keys},
        f"ood_{target.rsplit('_', 1)[1]}_last_shot": last_shot(ckpt, split, SUMMARY_N, SUMMARY_SEED),
        "last_shot_split": split,
        "best_ood_step": best_record["step"],
        "phase": phase(final, phase_threshold),
        "curve": {"step": [m["step"] for m in metrics], **{k: [m[k] for m in metrics] for k in keys}},
    }


def summarize(sweep: Sweep, status: dict[str, str]) -> dict[str, Any]:
    """sweep.json's content: the grid, and per cell its params, folder, status and (when trained) scores."""
    rows = []
    for cell in sweep.cells:
        row: dict[str, Any] = {"name": cell.name, "params": cell.params, "ckpt": os.path.relpath(cell.out),
                               "status": status.get(cell.name, "not run")}
        if is_finished(cell.out) and not row["status"].startswith("failed"):
            row |= {"status": "done"} | summarize_cell(cell, sweep.phase_threshold)
        rows.append(row)
    return {"name": sweep.name, "config": os.path.relpath(sweep.source), "axes": sweep.axes,
            "phase_threshold": sweep.phase_threshold, "cells": rows}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write sweep.json atomically (temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_sweep(path: str | Path, workers: int | None = None, backend: Backend = "local", address: str | None = None,
              on_done: Callable[[Cell, str], None] | None = None) -> dict[str, Any]:
    """Train every cell of the sweep file at ``path`` and write its summary; returns the summary."""
    sweep = load_sweep(path)
    status = run_cells(sweep.cells, workers, backend, address, on_done)
    summary = summarize(sweep, status)
    write_summary(sweep.summary, summary)
    return summary
