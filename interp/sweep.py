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
    summary: models/modular-phase/sweep.json

Cells run in worker processes, one per core by default (``backend="local"``), or as Ray tasks on a cluster
or a local Ray instance (``backend="ray"``). A cell whose folder holds a finished checkpoint of the same
run is skipped and an unfinished one resumes, so running a sweep again continues it. The summary is rewritten
after every cell, so a sweep that is stopped keeps what it finished. Paths in ``sweep.json`` are relative to it.

A summary's finished rows whose checkpoints are not here (a shipped summary, or a runs folder that did not
persist) are carried over as they are when their cell is in the grid (same name, same params, and the same run
config where the row records it, as every row written since does), and those cells are not trained again
(``carried_rows``); ``--force`` trains them again. Any other finished row would be lost, so such a summary is
refused before anything trains (``check_summary``) unless ``--force``. A failed row (a run that diverged, say,
here or on another machine) is kept as it is and its cell not trained again unless ``--retry-failed`` (as Ray
Tune's ``resume_errored=False``): a diverged run diverges again with the same seed.

``--cells PATTERN`` (repeatable, shell-style patterns on the cell names) trains only the cells it names, failed
ones included; every other cell keeps its row as the summary has it. ``--dry-run`` prints what a run would do with
each cell (``plan``) and trains nothing.

A modular cell's phase is named from which kinds of query (``interp.query_kinds``) its checkpoint answers, by
the rule in ``phase`` (``PHASE_RULE``); the old ``phase_threshold`` key is ignored with a warning.
"""
from __future__ import annotations

import fnmatch
import itertools
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Literal

from .api import evaluate
from .checkpoint import check_replaceable, check_writable, load_checkpoint
from .config import ConfigError, RunConfig, load_run, read_config_file, run_from_dict, same_run, with_overrides
from .query_kinds import metric_key
from .tasks import ModularTask
from .train import RESUME_STATE, objective_key

Backend = Literal["local", "ray"]
SUMMARY_N, SUMMARY_SEED = 512, 0  # sequences and seed of the checkpoint evaluation in the summary
PHASE_LEVEL = 1 / 3  # normalised accuracy (acc - 1/p) / (1 - 1/p) at which a set of queries counts as answered
PHASE_MIN_QUERIES = 30  # fewer regression-only queries than this in a set's last-shot region leave the phase open
PHASES = ("ood_generalization", "ood_memorization", "id_generalization", "ratio_matching_only", "id_memorization",
          "not_learned")  # in the order the rule tries them
PHASE_RULE = (
    "From the cell's checkpoint on 512 sequences per set (seed 0), in the last-shot region (the last quarter of the "
    "shots), accuracy averaged per task (a, b) then over tasks. A group of queries is answered when its normalised "
    "accuracy (acc - 1/p) / (1 - 1/p) is at least 1/3 (p = 7: 0.43; p = 29: 0.36). R(set) is the accuracy on "
    "regression-only queries (no copy or ratio match answers them) of one of He et al.'s four sets. The first that "
    "holds: ood_generalization if R(ood_test) is answered; ood_memorization if R(ood_train); id_generalization if "
    "R(id_test); ratio_matching_only (copying / ratio matching only) if copyable or ratio-matchable queries of OOD "
    "tasks (ood_train or ood_test) are answered; id_memorization if R(id_train); else not_learned. No phase (null) "
    "when a set has fewer than 30 regression-only queries there, or the task holds no (x, y) pairs out."
)


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


def cell_name(params: dict[str, Any]) -> str:
    """``n_tasks=32,pair_fraction=0.6,n_layers=2,seed=0``: the last part of each dotted key, in grid order; an
    axis of mappings shows its values joined by "-" (``pair=exp-exp``)."""
    show = lambda v: "-".join(map(str, v.values())) if isinstance(v, dict) else v  # noqa: E731
    return ",".join(f"{k.rsplit('.', 1)[-1]}={show(v)}" for k, v in params.items())


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file and expand its grid; every cell's run is checked before anything trains."""
    path = Path(path)
    data = read_config_file(path)
    if "phase_threshold" in data:  # sweep files from before phases were named by kind of query
        warnings.warn(f"{path}: phase_threshold is ignored; phases are named by the rule in interp.sweep.phase", stacklevel=2)
    unknown = set(data) - {"name", "base", "grid", "runs", "summary", "phase_threshold", "task", "model", "train", "purpose"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; expected name, base, grid, runs, summary")
    if isinstance(data.get("base"), str):  # a base file, with the sweep file's own sections over it, key by key
        base = read_config_file(path.parent / data["base"])
        for section in ("task", "model", "train"):
            if isinstance(data.get(section), dict) and isinstance(base.get(section, {}), dict):
                base[section] = {**base.get(section, {}), **data[section]}
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
    return Sweep(name, path, dict(grid), cells, runs, root / data.get("summary", f"{runs}/sweep.json"))


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


def phase(metrics: dict[str, float], p: int) -> str | None:
    """He et al.'s phase of a modular cell, named from which kinds of query it answers (``PHASE_RULE``).

    ``metrics`` is a flat record with the training log's names, read in the last-shot region:
    ``{set}_acc_regression_last`` for the four sets id_train, id_test, ood_train, ood_test, and
    ``{set}_acc_copyable_last`` / ``{set}_acc_ratio_last`` for the OOD ones (``EvalResult.kind_metrics``). Where
    a query count ``{set}_n_<kind>_last`` is given, a value on fewer than PHASE_MIN_QUERIES queries is not read.
    With chance 1/p, a group is *answered* when (acc - 1/p) / (1 - 1/p) >= PHASE_LEVEL (1/3); R(set) is the
    regression-only accuracy of a set. The first that holds names the phase:

    1. ``ood_generalization``: R(ood_test) answered (OOD tasks on held-out pairs, beyond copying and ratios);
    2. ``ood_memorization``: R(ood_train) answered (OOD tasks, but only on the trained pairs);
    3. ``id_generalization``: R(id_test) answered (the pre-training tasks on held-out pairs);
    4. ``ratio_matching_only``: copyable or ratio-matchable queries of OOD tasks (ood_train or ood_test) answered,
       their regression-only ones not (copying / ratio matching only);
    5. ``id_memorization``: R(id_train) answered (the pre-training tasks on the trained pairs only);
    6. ``not_learned``.

    None without the four regression-only values (a task with no held-out pairs, a regression task, or too few
    such queries to read)."""

    def value(split: str, kind: str) -> float | None:
        n = metrics.get(f"{split}_{metric_key(kind, last=True, count=True)}")
        if n is not None and n < PHASE_MIN_QUERIES:
            return None
        return metrics.get(f"{split}_{metric_key(kind, last=True)}")

    def answered(acc: float | None) -> bool:
        return acc is not None and (acc - 1 / p) / (1 - 1 / p) >= PHASE_LEVEL

    regression = {s: value(s, "regression") for s in ("id_train", "id_test", "ood_train", "ood_test")}
    if any(v is None for v in regression.values()):
        return None
    if answered(regression["ood_test"]):
        return "ood_generalization"
    if answered(regression["ood_train"]):
        return "ood_memorization"
    if answered(regression["id_test"]):
        return "id_generalization"
    if any(answered(value(s, kind)) for s in ("ood_train", "ood_test") for kind in ("copyable", "ratio")):
        return "ratio_matching_only"
    if answered(regression["id_train"]):
        return "id_memorization"
    return "not_learned"


def summarize_cell(cell: Cell) -> dict[str, Any]:
    """One row of sweep.json: final and best of every evaluation set in the log, the last-shot OOD score, the
    best step, and, measured on the cell's checkpoint (the best-OOD weights when keep_best is on), the
    per-kind accuracies (``kinds``, modular tasks) and the phase they name."""
    ckpt = load_checkpoint(cell.out)
    metrics = [m for m in ckpt.metrics if "step" in m]
    keys = [k for k in metrics[-1] if ("_acc" in k or k.endswith("_error")) and not k.startswith("train")]
    higher = {k: "_acc" in k for k in keys}
    target = objective_key(metrics[-1])
    best_record = (max if higher[target] else min)(metrics, key=lambda m: m[target])
    final = {k: metrics[-1][k] for k in keys}
    measure = "acc" if "_acc" in target else "error"
    split = target[: target.index(f"_{measure}")]  # ood, ood_test
    ev = evaluate(ckpt, n=SUMMARY_N, seed=SUMMARY_SEED, baselines=False)
    kinds = ev.kind_metrics()
    return {
        "final": final,
        "best": {k: (max if higher[k] else min)(m[k] for m in metrics if k in m) for k in keys},
        f"ood_{measure}_last_shot": ev.curve(split, "model").mean[-1],
        "last_shot_split": split,
        "best_ood_step": best_record["step"],
        "kinds": kinds,
        "phase": phase(kinds, ckpt.task.p) if isinstance(ckpt.task, ModularTask) else None,
        "curve": {"step": [m["step"] for m in metrics], **{k: [m.get(k) for m in metrics] for k in keys}},
    }


def summarize(sweep: Sweep, status: dict[str, str], carried: dict[str, dict[str, Any]] | None = None,
              cache: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """sweep.json's content: the grid, and per cell its params, folder, status and (when trained) scores. A
    cell in ``carried`` keeps that row as it is; ``cache`` holds rows already measured (cell name -> row)."""
    rows, here = [], sweep.summary.parent  # paths are relative to the summary, so that it can move with the runs
    carried, cache = carried or {}, {} if cache is None else cache
    for cell in sweep.cells:
        if cell.name in carried:
            rows.append(carried[cell.name])
            continue
        row: dict[str, Any] = {"name": cell.name, "params": cell.params, "ckpt": os.path.relpath(cell.out, here),
                               "status": status.get(cell.name, "not run")}
        if is_failed(row):
            row["run"] = cell.run.to_dict()
        elif is_finished(cell.out):
            if cell.name not in cache:
                cache[cell.name] = row | {"status": "done", "run": cell.run.to_dict()} | summarize_cell(cell)
            row = cache[cell.name]
        rows.append(row)
    return {"name": sweep.name, "config": os.path.relpath(sweep.source, here), "paths": "relative to this file",
            "axes": sweep.axes,
            "phase_rule": PHASE_RULE, "cells": rows}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write sweep.json atomically (temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_summary(path: Path) -> dict[str, Any] | None:
    """The sweep summary at ``path``; None when there is none; ConfigError when the file is not one."""
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("cells"), list):
        raise ConfigError(f"{path} exists and is not a sweep summary; refusing to overwrite it (choose another "
                          "summary:, or pass --force)")
    return old


def away_rows(path: Path, old: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished rows of summary ``old`` (read from ``path``) whose checkpoint folder is not here."""
    relative = old.get("paths") == "relative to this file"  # older summaries hold paths relative to the working directory
    return [c for c in old["cells"] if isinstance(c, dict) and c.get("status") == "done"
            and not ((path.parent if relative else Path.cwd()) / str(c.get("ckpt"))).is_dir()]


def row_of(row: Any, cell: Cell | None) -> bool:
    """Whether summary row ``row`` is ``cell``'s: the same name and params, and the same run config where the
    row records it (every row written since rows record it)."""
    if cell is None or not isinstance(row, dict) or row.get("name") != cell.name or row.get("params") != cell.params:
        return False
    try:
        return "run" not in row or same_run(run_from_dict(row["run"]), cell.run)
    except ConfigError:
        return False


def carried(path: Path, cells: list[Cell] | tuple[Cell, ...]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The finished rows of the summary at ``path`` whose checkpoint is not here, split in two: {cell name: row}
    for those whose cell is one of ``cells``, with the same params and (where the row records it) the same run
    config, and the list of the others (another grid, or another config)."""
    old = read_summary(path)
    if old is None:
        return {}, []
    by_name = {c.name: c for c in cells}
    kept: dict[str, dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    for row in away_rows(path, old):  # one row_of() a row: it parses the row's run config
        if row_of(row, by_name.get(row.get("name"))):
            kept[row["name"]] = row
        else:
            others.append(row)
    return kept, others


def is_failed(row: dict[str, Any]) -> bool:
    """A summary row whose cell failed (``"failed: <reason>"``)."""
    return str(row.get("status", "")).startswith("failed")


def select_cells(sweep: Sweep, patterns: list[str] | tuple[str, ...] | None) -> list[Cell]:
    """The cells whose names match any of the shell-style ``patterns`` (``fnmatch``: ``*``, ``?``, ``[..]``),
    in grid order; all cells when ``patterns`` is None. A pattern that matches no cell is a ConfigError."""
    if patterns is None:
        return list(sweep.cells)
    if isinstance(patterns, str) or not patterns:
        raise ConfigError("cells must be a non-empty list of patterns on the cell names")
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.name, pattern) for c in sweep.cells):
            raise ConfigError(f"cells: {pattern!r} matches no cell of sweep {sweep.name} (its cells are named like "
                              f"{sweep.cells[0].name!r}; quote a pattern with * in the shell)")
    return [c for c in sweep.cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


def kept_rows(sweep: Sweep, force: bool = False, retry_failed: bool = False,
              cells: list[str] | tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """{cell name: row} for the rows of the existing summary that are kept as they are, their cells not trained:

    - finished rows whose checkpoint is not here (``carried``), unless ``force``;
    - failed rows of cells of this grid with the same params (and run config, where the row records it), unless
      ``retry_failed`` or ``force``, or the cell is selected by ``cells``;
    - with ``cells`` (patterns, ``select_cells``), the row of every cell not selected, whatever its status (a cell
      that finished here since its row was written is measured again instead).
    """
    selected = {c.name for c in select_cells(sweep, cells)}
    kept = {} if force else carried_rows(sweep)
    old = read_summary(sweep.summary)
    if old is None:
        return kept
    by_name = {c.name: c for c in sweep.cells}
    for row in old["cells"]:
        cell = by_name.get(row.get("name")) if isinstance(row, dict) else None
        if cell is None or cell.name in kept or not row_of(row, cell):
            continue
        if cell.name not in selected:
            if not (row.get("status") == "not run" and is_finished(cell.out)):
                kept[cell.name] = row
        elif is_failed(row) and not (retry_failed or force) and cells is None:
            kept[cell.name] = row
    return kept


def plan(sweep: Sweep, force: bool = False, retry_failed: bool = False,
         cells: list[str] | tuple[str, ...] | None = None) -> dict[str, str]:
    """{cell name: what ``run_sweep`` with these arguments would do with it}, in grid order: "train" (nothing
    here yet), "resume" (an unfinished run here), "skip" (finished here: measured for the summary, not trained),
    "kept: finished elsewhere" and "kept: failed" (``kept_rows``: the summary's row stays, the cell does not
    train), or "not selected" (by ``cells``: its row, if any, stays)."""
    kept = kept_rows(sweep, force, retry_failed, cells)
    selected = {c.name for c in select_cells(sweep, cells)}
    actions = {}
    for cell in sweep.cells:
        if cell.name not in selected:
            actions[cell.name] = "not selected"
        elif cell.name in kept:
            actions[cell.name] = "kept: failed" if is_failed(kept[cell.name]) else "kept: finished elsewhere"
        elif is_finished(cell.out):
            actions[cell.name] = "skip"
        else:
            actions[cell.name] = "resume" if (cell.out / RESUME_STATE).exists() else "train"
    return actions


def carried_rows(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """{cell name: row} for the summary's finished rows that are carried over (``carried``): kept as they are,
    and those cells not trained again."""
    return carried(sweep.summary, sweep.cells)[0]


def check_summary(path: Path, force: bool = False, cells: list[Cell] | tuple[Cell, ...] = ()) -> None:
    """Raise ConfigError, before anything trains, when the summary cannot be written at ``path`` or would
    overwrite one that is not this machine's to rewrite: a file that is not a sweep summary, or a shipped one
    with a finished row whose checkpoint is not here and that is not carried over (``carried``: not one of
    ``cells``, or of another config), which rewriting would lose; ``force`` allows the latter."""
    existing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if path.is_dir():
        raise ConfigError(f"summary {path} is a folder; give a file name such as {path / 'sweep.json'}")
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise ConfigError(f"summary {path} cannot be written: {existing} is not a writable folder")
    if not path.exists() or force:
        return
    lost = carried(path, cells)[1]
    if lost:
        raise ConfigError(f"{path} is a shipped summary: {len(lost)} of its finished runs are not here and not "
                          f"cells of this sweep and config (e.g. {lost[0].get('ckpt')}); refusing to overwrite it "
                          "(write yours elsewhere with summary:, or pass --force)")


def check_sweep(sweep: Sweep, force: bool = False) -> None:
    """Everything a sweep writes, checked before anything trains: its summary (``check_summary``) and every
    cell's folder (writable, and nothing there but a checkpoint of ours)."""
    check_summary(sweep.summary, force, sweep.cells)
    for cell in sweep.cells:
        check_writable(cell.out)
        check_replaceable(cell.out)


def run_sweep(path: str | Path, workers: int | None = None, backend: Backend = "local", address: str | None = None,
              on_done: Callable[[Cell, str], None] | None = None, force: bool = False, retry_failed: bool = False,
              cells: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Train the cells of the sweep file at ``path`` (those matching ``cells``, shell-style patterns on the cell
    names, or all) and write its summary, after every cell; returns the summary. Rows kept from the existing
    summary (``kept_rows``: finished elsewhere unless ``force``, failed unless ``retry_failed`` or selected, and
    every cell not selected) stay as they are and their cells are not trained. A summary that is not this
    machine's to rewrite is refused before anything trains (``check_summary``)."""
    sweep = load_sweep(path)
    check_sweep(sweep, force)
    kept = kept_rows(sweep, force, retry_failed, cells)
    status: dict[str, str] = {}
    cache: dict[str, dict[str, Any]] = {}

    def done(cell: Cell, outcome: str) -> None:
        status[cell.name] = outcome
        write_summary(sweep.summary, summarize(sweep, status, kept, cache))
        if on_done:
            on_done(cell, outcome)

    todo = [c for c in select_cells(sweep, cells) if c.name not in kept]
    if todo:
        run_cells(todo, workers, backend, address, done)
    summary = summarize(sweep, status, kept, cache)
    write_summary(sweep.summary, summary)
    return summary
