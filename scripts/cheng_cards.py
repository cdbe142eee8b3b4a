"""Cheng, Chen & Sra's table, depth plot and zoo models, measured on the cells of the Cheng sweeps.

    python scripts/cheng_cards.py            # measure every finished cell, write the tables, figure, zoo and cards

Sweeps: configs/cheng_table_cpu.yaml (data kernel x activation x 1, 3, 5 layers x 3 seeds, the notebook's 2,100
steps), configs/cheng_converged_cpu.yaml (the same table at 10,000 steps), configs/cheng_comb.yaml and
configs/cheng_comb_converged_cpu.yaml (the 2-head exp + linear model on the composite kernel, 2,100 and 10,000 steps),
configs/cheng_clip_control_cpu.yaml (the clipping control) and configs/cheng_long_cpu.yaml, all the official recipe at batch 3,000
(official 30,000: configs/cheng_table.yaml). Every number is ``interp.cards.query_mse``: the raw squared error at the query on 30,000
fresh sequences (seed 777, no training seed), beside the Bayes predictor on the same sequences. Measurements are cached
in models/cheng/measured.json by cell and step, so a rerun measures only new cells. Writes models/cheng/table.md and
table.json, docs/figures/cheng-depth.png, cheng-curves.png and cheng-clip-control.png, and ships the seed-0 diagonal (models/cheng-<kernel>-d<layers>:
the 10,000-step run where it has finished, else the 2,100-step one) and the seed-0 2-head models
(models/cheng-comb-2head-d<layers>, chosen the same way) with their cards.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interp import load  # noqa: E402
from interp.cards import CHENG_N, CHENG_SEED, markdown_table, paired_gap, query_batch, query_errors, query_mse  # noqa: E402
from interp.checkpoint import read_config, read_metrics  # noqa: E402
from interp.config import load_run, run_from_dict, same_run  # noqa: E402
from interp.sweep import Cell, is_failed, is_finished, load_sweep, read_summary  # noqa: E402
from zoo_cards import zoo_readme  # noqa: E402  (scripts/ is on sys.path when a script here runs)

ROOT = Path(__file__).resolve().parents[1]
OUT, FIGURES, MODELS, CONFIGS = ROOT / "models" / "cheng", ROOT / "docs" / "figures", ROOT / "models", ROOT / "configs" / "cheng"
SWEEPS = {"table": ROOT / "configs" / "cheng_table_cpu.yaml", "comb": ROOT / "configs" / "cheng_comb.yaml",
          "long": ROOT / "configs" / "cheng_long_cpu.yaml", "converged": ROOT / "configs" / "cheng_converged_cpu.yaml",
          "comb-converged": ROOT / "configs" / "cheng_comb_converged_cpu.yaml",
          "control": ROOT / "configs" / "cheng_clip_control_cpu.yaml"}
GAPS = OUT / "gaps.json"  # paired margins, cached by winning_gaps and control_rows
SWEEP_FILES = {name: f"configs/{path.name}" for name, path in SWEEPS.items()}
TABLES = {"table": "the notebook's 2,100 steps", "converged": "10,000 steps"}  # the sweeps that fill the whole table
ONE_LAYER = ROOT / "models/cheng/one_layer.json"  # scripts/cheng_one_layer.py
COMBS = {"comb": "the notebook's 2,100 steps", "comb-converged": "10,000 steps"}  # the 2-head sweeps
CONVERGED = ("converged", "comb-converged")  # the 10,000-step sweeps, whose runs ship in place of the 2,100-step ones
SWITCH = 8000  # the step after which the official clipping constant is ten times larger (layer_clip_after)
KERNELS, ACTIVATIONS, DEPTHS, SEEDS = ("linear", "relu", "exp"), ("linear", "relu", "exp", "softmax"), (1, 3, 5, 7), (0, 1, 2)
# The data draw a number was measured on: y = S·ξ with the symmetric root S (interp.tasks.kernel.root) since
# 2026-12-07; before, y = Q·|Λ|^½·ξ, whose sample for a seed differed between CPUs on 0.6-13% of sequences.
DRAW, OLD_DRAW = "symmetric root", "eigenvectors (before 2026-12-07)"
DRAW_LABEL = {DRAW: "S·ξ", OLD_DRAW: "Q·|Λ|^½·ξ"}
DRAW_NOTE = ("The data draw: y = S·ξ with the symmetric root S = Q·|Λ|^½·Qᵀ (`interp.tasks.kernel.root`) since "
             "2026-12-07; the official Q·|Λ|^½·ξ before, the same Gaussian, but its sample for a seed differed between "
             "CPUs on 0.6% (exp) to 13% (relu) of sequences. Cells whose checkpoints are here (the shipped ones) were "
             "measured again on S·ξ; the others keep their Q·|Λ|^½·ξ numbers.")
COMB_MODELS = {"exp,linear": "2 heads: exp + linear", "exp": "1 head: exp", "linear": "1 head: linear"}


def key(cell: Cell) -> tuple[str, str, int, int]:
    """(data kernel, activation, layers, seed) of a cell."""
    run = cell.run
    return run.task.kernel, run.spec.scoring, run.spec.n_layers, run.spec.seed  # type: ignore[attr-defined]


def zoo_name(m: dict[str, Any]) -> str | None:
    """The zoo name of a measured cell that may ship (the seed-0 diagonal of either table and the 2-head models),
    else None; ``shipping`` picks one cell per name."""
    diagonal = m["sweep"] in TABLES and m["activation"] == m["kernel"]
    two_head = m["sweep"] in COMBS and m["activation"] == "exp,linear"
    if m["seed"] != 0 or not (diagonal or two_head):
        return None
    return f"cheng-{m['kernel']}-d{m['layers']}" if diagonal else f"cheng-comb-2head-d{m['layers']}"


def measure_all() -> dict[str, dict[str, Any]]:
    """query_mse of every finished cell of both sweeps, cached in models/cheng/measured.json by cell and step. A
    cell measured on another draw of the data (``DRAW``) is measured again where its checkpoint is here: its run,
    or, for a shipped cell, its zoo folder; elsewhere it keeps its number and the draw it was measured on."""
    OUT.mkdir(parents=True, exist_ok=True)
    cache_path = OUT / "measured.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    for sweep_name, path in SWEEPS.items():
        for cell in load_sweep(path).cells:
            tag = f"{sweep_name}/{cell.name}"
            old = cache.get(tag, {})
            zoo = MODELS / name if old and (name := zoo_name(old)) else None
            if zoo is not None and not ((zoo / "config.json").is_file() and same_run(load_run(zoo / "config.json"), cell.run)):
                zoo = None  # the zoo folder of that name holds another cell (the 10,000-step run replaced the 2,100-step one)
            source = cell.out if is_finished(cell.out) else zoo
            if source is None:
                continue
            steps = int(read_config(source)["train"].get("steps_done", 0))
            if old.get("steps") != steps or old.get("draw", OLD_DRAW) != DRAW:  # else no need to build the model
                ckpt = load(source)
                kernel, act, layers, seed = key(cell)
                measured = query_mse(ckpt)
                measured["eval_seed"] = measured.pop("seed")
                cache[tag] = {"sweep": sweep_name, "kernel": kernel, "activation": act, "layers": layers, "seed": seed,
                              "steps": steps, "batch_size": ckpt.train["batch_size"],
                              "out": old.get("out", str(cell.out)) if source == zoo else str(cell.out),
                              "wall_s": ckpt.train.get("wall_s"), **measured, "draw": DRAW,
                              "fall_1000": last_fall(ckpt.metrics, 1000), "late_loss": late_loss(ckpt.metrics)}
                cache_path.write_text(json.dumps(cache, indent=1))
    return cache


def eval_curve(metrics: list[dict[str, Any]]) -> dict[int, float]:
    """{step: loss on the evaluation sequences} of a run's metrics."""
    return {r["step"]: r["id_loss"] for r in metrics if "id_loss" in r}


def last_fall(metrics: list[dict[str, Any]], span: int) -> float | None:
    """How much the evaluation-set loss fell over the last ``span`` steps of a run, as a fraction of where it was
    (0.05: 5% lower at the end); None when the log does not reach that far back."""
    curve = eval_curve(metrics)
    if not curve or max(curve) - span not in curve:
        return None
    before, after = curve[max(curve) - span], curve[max(curve)]
    return (before - after) / before


def late_loss(metrics: list[dict[str, Any]]) -> dict[str, float] | None:
    """The evaluation-set loss at step ``SWITCH`` and the largest one after it (the official clipping constant grows
    tenfold there: the last evaluation at or before it); None when the run does not go past it."""
    curve = eval_curve(metrics)
    before, later = [k for k in curve if k <= SWITCH], [v for k, v in curve.items() if k > SWITCH]
    if not before or not later:
        return None
    return {"step": max(before), "at_switch": curve[max(before)], "largest_after": max(later)}


def row_key(m: dict[str, Any]) -> str:
    """The table row and seed a measured cell belongs to: "converged/3/relu/0"."""
    return f"{m['sweep']}/{m['layers']}/{m['kernel']}/{m['seed']}"


def winning_gaps(measured: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per table row and seed with two or more activations measured: by how much the lowest error beats the second
    lowest, paired on the same 30,000 sequences (``interp.cards.paired_gap``), where both runs are here. Cached in
    models/cheng/gaps.json by row and the two cells' steps."""
    cache = json.loads(GAPS.read_text()) if GAPS.is_file() else {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for m in measured.values():
        if m["sweep"] in TABLES or m["sweep"] in COMBS:
            rows.setdefault(row_key(m), []).append(m)
    for key, cells in sorted(rows.items()):
        if len(cells) < 2:
            continue
        best, second = sorted(cells, key=lambda m: m["mse"])[:2]
        pair = {"winner": best["activation"], "runner_up": second["activation"], "steps": [best["steps"], second["steps"]],
                "of": len(cells)}
        if {k: cache.get(key, {}).get(k) for k in pair} == pair or not all(Path(m["out"]).is_dir() for m in (best, second)):
            continue
        cache[key] = pair | paired_gap(load(best["out"]), load(second["out"]))
        GAPS.write_text(json.dumps(cache, indent=1))
    return cache


def lowest_at_seed(cells: list[dict[str, Any]], gaps: dict[str, dict[str, Any]] | None,
                   label: Callable[[str], str] = str, of: int | None = None) -> str:
    """Per seed with two or more of ``cells`` (one table row) measured: the model with the lowest error, with its
    paired margin over the runner-up where ``gaps`` has it and, given ``of``, how many of the ``of`` models trained."""
    winners = []
    for seed in SEEDS:
        at_seed = {m["activation"]: m["mse"] for m in cells if m["seed"] == seed}
        if len(at_seed) >= 2:
            best, second = sorted(at_seed, key=at_seed.get)[:2]  # type: ignore[arg-type]
            gap = (gaps or {}).get(row_key(next(m for m in cells if m["seed"] == seed)))
            if gap and (gap["winner"], gap["runner_up"]) == (best, second):
                notes = [f"{gap['gap']:.2g} ± {gap['gap_ci']:.1g} below {label(second)}"]
            else:  # not paired: the two runs are not both here (a cached margin over another runner-up is not shown)
                notes = [f"{at_seed[second] - at_seed[best]:.2g} below {label(second)}, unpaired"] if gap else []
            if of is not None and len(at_seed) < of:
                notes.append(f"{len(at_seed)} of {of} trained")
            winners.append(f"{seed}: {label(best)}" + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(winners) or "incomplete"


def diverged(sweep: str) -> dict[tuple[str, str, int], list[str]]:
    """{(data kernel, activation, layers): ["seed 0: <reason>", ...]} for the cells of a table sweep whose training
    failed, as its summary records them (a diverged run keeps no weights to measure)."""
    summary = read_summary(load_sweep(SWEEPS[sweep]).summary) or {"cells": []}
    failed: dict[tuple[str, str, int], list[str]] = {}
    for row in summary["cells"]:
        if is_failed(row):
            p = row["params"]
            at = (p["data"]["task.kernel"], p["model.scoring"], p["model.n_layers"])
            reason = row["status"].split(";")[0].removeprefix("failed: training ")
            failed.setdefault(at, []).append(f"seed {p['seed']['model.seed']} {reason}")
    return failed


def table_rows(measured: list[dict[str, Any]], depth: int, gaps: dict[str, dict[str, Any]] | None = None,
               failed: dict[tuple[str, str, int], list[str]] | None = None) -> list[dict[str, Any]]:
    """One row per data kernel at ``depth``: per activation the mean over the seeds measured and its range (and the
    seeds whose training ``failed``), the activation with the lowest error at each seed (with its paired margin over
    the runner-up where ``gaps`` has it), and the Bayes error."""
    rows = []
    for kernel in KERNELS:
        cells = [m for m in measured if m["kernel"] == kernel and m["layers"] == depth]
        if not cells:
            continue
        row: dict[str, Any] = {"data kernel": kernel}
        for act in ACTIVATIONS:
            vals = [m["mse"] for m in cells if m["activation"] == act]
            row[f"{act} attn"] = (f"{np.mean(vals):.3g}" + (f" [{min(vals):.3g}, {max(vals):.3g}]" if len(vals) > 1 else "")
                                  + f" ({len(vals)})") if vals else "not run"
            if (failed or {}).get((kernel, act, depth)):
                shown = "; ".join(failed[(kernel, act, depth)])  # type: ignore[index]
                row[f"{act} attn"] = shown if not vals else f"{row[f'{act} attn']}; {shown}"
        row["lowest at seed"] = lowest_at_seed(cells, gaps, of=len(ACTIVATIONS))
        row["Bayes"] = f"{np.mean([m['bayes'] for m in cells]):.3g}"
        rows.append(row)
    return rows


def comb_rows(measured: list[dict[str, Any]], gaps: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per depth of a 2-head sweep: each model's mean error over the seeds measured, the lowest per seed
    (with its paired margin over the runner-up where ``gaps`` has it), and the Bayes error."""
    rows = []
    for depth in DEPTHS:
        cells = [m for m in measured if m["layers"] == depth]
        if not cells:
            continue
        row: dict[str, Any] = {"layers": depth}
        for act, label in COMB_MODELS.items():
            vals = [m["mse"] for m in cells if m["activation"] == act]
            row[label] = f"{np.mean(vals):.3g} ({len(vals)})" if vals else "not run"
        row["lowest at seed"] = lowest_at_seed(cells, gaps, COMB_MODELS.__getitem__)
        row["Bayes"] = f"{np.mean([m['bayes'] for m in cells]):.3g}"
        rows.append(row)
    return rows


def control_pairs(measured: dict[str, dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(official run, control run) per seed: each cell of the clipping control beside the converged table's cell
    with the same data kernel, activation, layers and seed."""
    converged = {(m["kernel"], m["activation"], m["layers"], m["seed"]): m for m in measured.values() if m["sweep"] == "converged"}
    pairs = []
    for m in sorted((m for m in measured.values() if m["sweep"] == "control"), key=lambda m: m["seed"]):
        official = converged.get((m["kernel"], m["activation"], m["layers"], m["seed"]))
        if official is not None:
            pairs.append((official, m))
    return pairs


def best_rival(measured: dict[str, dict[str, Any]], m: dict[str, Any]) -> dict[str, Any] | None:
    """The converged table's best other activation in ``m``'s row and seed, or None."""
    rivals = [r for r in measured.values() if r["sweep"] == "converged" and r["activation"] != m["activation"]
              and (r["kernel"], r["layers"], r["seed"]) == (m["kernel"], m["layers"], m["seed"])]
    return min(rivals, key=lambda r: r["mse"]) if rivals else None


def control_rows(measured: dict[str, dict[str, Any]], cache: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per seed of the clipping control: both runs' errors, their evaluation loss at the switch and the
    largest after it, and the control's paired margin (added to ``cache``, models/cheng/gaps.json as
    ``winning_gaps`` returns it, under "control/<seed>")."""
    rows = []
    for official, control in control_pairs(measured):
        rival = best_rival(measured, control)
        key, steps = f"control/{control['seed']}", [m["steps"] for m in (official, control, rival) if m]
        if cache.get(key, {}).get("steps") != steps and all(Path(m["out"]).is_dir() for m in (official, control)):
            runs = [load(m["out"]) for m in (official, control)]
            batch = query_batch(runs[0])
            errors = [query_errors(ckpt, batch) for ckpt in runs]  # heavy-tailed: the median and the largest too
            cache[key] = {"steps": steps, "median": [e.median().item() for e in errors],
                          "largest": [e.max().item() for e in errors]} | paired_gap(runs[1], runs[0])
            if rival and Path(rival["out"]).is_dir():
                cache[key]["rival"] = {"activation": rival["activation"]} | paired_gap(runs[1], load(rival["out"]))
            GAPS.write_text(json.dumps(cache, indent=1))
        gap = cache.get(key)
        beats = (gap or {}).get("rival")
        late = [m.get("late_loss") or {} for m in (official, control)]
        rows.append({"seed": control["seed"],
                     "official: clip x10 after step 8,000": f"{official['mse']:.3g} ± {official['mse_ci']:.2g}",
                     "control: clip kept at 1e-8": f"{control['mse']:.3g} ± {control['mse_ci']:.2g}",
                     "margin (paired)": f"{gap['gap']:.3g} ± {gap['gap_ci']:.2g}" if gap else "runs not here",
                     "median / largest error (official; control)": "; ".join(
                         f"{gap['median'][i]:.3g} / {gap['largest'][i]:.3g}" for i in (0, 1)) if gap else "runs not here",
                     "control below the row's best other activation (paired)": (
                         f"{beats['gap']:.3g} ± {beats['gap_ci']:.2g} below {beats['activation']}" if beats else "not measured"),
                     f"eval loss at step {late[0].get('step', SWITCH):,} (official / control)": " / ".join(f"{d.get('at_switch', float('nan')):.3g}" for d in late),
                     "largest eval loss after it (official / control)": " / ".join(f"{d.get('largest_after', float('nan')):.3g}" for d in late),
                     "Bayes": control["bayes"]})
    return rows


def control_figure(measured: dict[str, dict[str, Any]]) -> None:
    """docs/figures/cheng-clip-control.png: the evaluation loss of the official run and of the control per seed.
    Left as it is when a run is not here."""
    pairs = control_pairs(measured)
    if not pairs or any(not (Path(m["out"]) / "metrics.jsonl").is_file() for pair in pairs for m in pair):
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.7 * len(pairs), 3.2), sharey=True, squeeze=False)
    for ax, (official, control) in zip(axes[0], pairs):
        for m, label, color in ((official, "official: clip x10 after step 8,000", "C3"), (control, "control: clip kept", "C0")):
            curve = list(eval_curve(read_metrics(Path(m["out"]) / "metrics.jsonl")).items())
            ax.plot(*zip(*curve), color=color, label=label)
        ax.axvline(SWITCH, color="k", ls=":", lw=0.8)
        ax.set(title=f"seed {control['seed']}", xlabel="step", yscale="log")
    axes[0][0].set_ylabel("squared error at the query (evaluation set)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Linear attention on linear data, 3 layers: the official clipping schedule against the constant one", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIGURES / "cheng-clip-control.png", dpi=110)
    plt.close(fig)


def depth_figure(measured: list[dict[str, Any]], sweep: str = "table") -> None:
    """Error against layers per data kernel and activation, from one table sweep's cells: cheng-depth.png for the
    2,100-step table, cheng-depth-converged.png for the 10,000-step one."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=False)
    for ax, kernel in zip(axes, KERNELS):
        cells = [m for m in measured if m["kernel"] == kernel]
        for i, act in enumerate(ACTIVATIONS):
            pts = []
            for depth in DEPTHS:
                vals = [m["mse"] for m in cells if m["activation"] == act and m["layers"] == depth]
                if vals:
                    pts.append((depth, np.mean(vals), np.mean(vals) - min(vals), max(vals) - np.mean(vals)))
            if pts:
                d, mean, lo, hi = zip(*pts)
                ax.errorbar(d, mean, yerr=[lo, hi], marker="o", color=f"C{i}", capsize=3,
                            lw=2.2 if act == kernel else 1.0, label=f"{act} attn")
        if cells:
            bayes = np.mean([m["bayes"] for m in cells])
            if bayes > 1e-8:
                ax.axhline(bayes, color="k", ls="--", lw=0.8, label="Bayes")
        ax.set(title=f"{kernel} data", xlabel="layers", xticks=list(DEPTHS), yscale="log")
    axes[0].set_ylabel("squared error at the query (raw)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Cheng et al.'s restricted layer, official recipe at batch 3,000, {TABLES[sweep]}: 30,000 fresh "
                 "sequences\n(mean over seeds, bars min-max; the thick line is the matching activation)", fontsize=9)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / ("cheng-depth.png" if sweep == "table" else f"cheng-depth-{sweep}.png"), dpi=110)
    plt.close(fig)


def curves_figure(measured: dict[str, dict[str, Any]], depth: int = 3) -> None:
    """Learning curves (loss on the 30,000 evaluation sequences against step) of the seed-0 cells at ``depth``
    layers, per data kernel, and of the long runs (configs/cheng_long_cpu.yaml) where they exist: are they converged?
    Left as it is when a cell it draws was measured from a runs folder that is not here (a fresh checkout)."""
    at_depth = [m for m in measured.values() if m["layers"] == depth and m["seed"] == 0]
    drawn = [m for m in at_depth if m["sweep"] == "converged"] or [m for m in at_depth if m["sweep"] in ("table", "long")]
    if any(not (Path(m["out"]) / "metrics.jsonl").is_file() for m in drawn):
        print("cheng-curves.png left as it is: some of its runs are not here")
        return
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, kernel in zip(axes, KERNELS):
        for m in sorted(drawn, key=lambda m: (m["sweep"], m["activation"])):
            if m["kernel"] != kernel:
                continue
            curve = list(eval_curve(read_metrics(Path(m["out"]) / "metrics.jsonl")).items())
            i = ACTIVATIONS.index(m["activation"])
            ax.plot(*zip(*curve), color=f"C{i}", ls="--" if m["sweep"] == "long" else "-",
                    label=f"{m['activation']} attn, {m['steps']:,} steps")
        if any(m["kernel"] == kernel for m in measured.values()):
            bayes = np.mean([m["bayes"] for m in measured.values() if m["kernel"] == kernel])
            if bayes > 1e-8:
                ax.axhline(bayes, color="k", ls=":", lw=0.8, label="Bayes")
        ax.set(title=f"{kernel} data, {depth} layers, seed 0", xlabel="step", yscale="log")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("squared error at the query (evaluation set)")
    fig.tight_layout()
    fig.savefig(FIGURES / "cheng-curves.png", dpi=110)
    plt.close(fig)


def shipping(measured: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """zoo name -> (tag, measurement) of the cell that ships under it: the 10,000-step run where it has finished,
    else the 2,100-step one."""
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for tag, m in sorted(measured.items()):
        name = zoo_name(m)
        if name is not None and (name not in chosen or m["sweep"] in CONVERGED):
            chosen[name] = (tag, m)
    return chosen


def ship(measured: dict[str, dict[str, Any]]) -> list[str]:
    """Copy the seed-0 diagonal and the 2-head models into models/ and write their cards. A model whose run is not
    here keeps its shipped weights and config, and gets its card written again from its measurement."""
    shipped = []
    for name, (tag, m) in sorted(shipping(measured).items()):
        dest = MODELS / name
        rivals = [v for v in measured.values() if v["sweep"] == m["sweep"] and v["seed"] == 0
                  and v["layers"] == m["layers"] and v["kernel"] == m["kernel"]]
        if not Path(m["out"]).is_dir():
            if (dest / "config.json").is_file():
                write_card(name, dest, m, rivals, tag)
                shipped.append(name)
            continue
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(m["out"], dest, ignore=shutil.ignore_patterns("resume", "CARD.md", "card.json"))
        run = run_from_dict(json.loads((dest / "config.json").read_text()) | {"name": name, "purpose": (
            f"Cheng et al.'s restricted layer, {m['layers']} layer(s), {m['activation']} attention on {m['kernel']} GP "
            "data: the official recipe at batch 3,000 (configs/cheng/base.yaml has the official 30,000).")})
        (CONFIGS / f"{name}.yaml").write_text(f"# The run of {tag}, written out by scripts/cheng_cards.py.\n"
                                              + yaml.safe_dump(run.to_dict(), sort_keys=False))
        write_card(name, dest, m, rivals, tag)
        shipped.append(name)
    return shipped


def write_card(name: str, dest: Path, m: dict[str, Any], rivals: list[dict[str, Any]], tag: str) -> None:
    ckpt = load(dest)
    sweep = SWEEP_FILES[m["sweep"]]
    cell = tag.split("/", 1)[1]
    curve = list(eval_curve(ckpt.metrics).items())
    falling = ""
    if len(curve) >= 2 and curve[-1][1] < 0.95 * curve[-2][1]:
        falling = (f" **Not converged:** the loss on the evaluation set was still falling at the last step "
                   f"({curve[-2][1]:.3g} at step {curve[-2][0]}, {curve[-1][1]:.3g} at step {curve[-1][0]}).")
    rows = [{"activation": r["activation"], "squared error (raw)": r["mse"], "± 95% CI": r["mse_ci"],
             "Bayes": r["bayes"], "data draw": DRAW_LABEL[r.get("draw", OLD_DRAW)]} for r in sorted(rivals, key=lambda r: r["mse"])]
    card = {"name": name, "family": "cheng", "headline": {
        "metric": "query_mse", "label": f"raw squared error at the query, {CHENG_N:,} fresh sequences",
        "value": m["mse"], "ci": m["mse_ci"], "bayes": m["bayes"], "n": CHENG_N, "seed": CHENG_SEED,
        "tolerance": {"rel": 1e-4, "abs": 1e-7}},
        "params": sum(p.numel() for p in ckpt.model.parameters() if p.requires_grad),
        "wall_s": m["wall_s"], "hardware": ckpt.train.get("hardware"), "steps": m["steps"], "rivals": rows}
    lines = [f"# {name}", "",
             f"Cheng, Chen & Sra's restricted attention layer (`layer: cheng2024`, `interp.cheng`), {m['layers']} "
             f"layer(s), {'one exp head and one linear head' if m['sweep'] in COMBS else m['activation'] + ' attention'}, "
             f"trained on {m['kernel']} GP data (`{ckpt.task.describe()}`) with {ckpt.train['n_examples']} context points.",
             "", f"**Headline:** raw squared error at the query, {CHENG_N:,} fresh sequences (seed {CHENG_SEED}) = "
             f"**{m['mse']:.6g}** ± {m['mse_ci']:.2g} (95% CI); the Bayes-optimal predictor (GP posterior mean) on the "
             f"same sequences: {m['bayes']:.4g}.{falling}", "", *one_layer_note(m, card),
             f"Beside the other activations trained the same way at seed 0 and {m['layers']} layer(s) ({'the 2-head model beside one-head models' if m['sweep'] in COMBS else 'the row of the table'}):", "",
             *markdown_table(rows), "", DRAW_NOTE, "",
             "## Training", "",
             f"The official recipe (configs/cheng/base.yaml: AdamW lr 0.1, β (0.9, 0.9), no weight decay, the per-layer "
             f"clipping rule, a batch reused for 10 steps, {m['steps']:,} steps) **at batch {m['batch_size']:,} instead of "
             f"the official 30,000**, the budget of a 2-core CPU machine; {ckpt.train.get('hardware')}, "
             f"{(m['wall_s'] or 0) / 60:.0f} min. Made by `interp sweep {sweep}` (cell `{cell}`), copied here; the same run "
             f"alone: `interp train --config configs/cheng/{name}.yaml --out models/{name}`; the full-batch table is "
             "`interp sweep configs/cheng_table.yaml`.", "",
             "## What differs from the official code", "",
             "- The masked entries of W_Q, W_K and W_V are zero from the start and get zero gradients; theirs are drawn, "
             "trained and re-zeroed after every step (the same after step 1), and their per-layer clipping measures the "
             "gradient norm before the masked entries are dropped.",
             "- Batch 3,000, not 30,000 (above). Their forward also rescales Z when its norm passes 1e10; ours never "
             "needs it at these weights and does not.",
             "", "Tables across the zoo: docs/REPRODUCTION.md section 3; every cell: models/cheng/table.md."]
    (dest / "card.json").write_text(json.dumps(card, indent=1))
    (dest / "CARD.md").write_text("\n".join(lines) + "\n")


def one_layer_note(m: dict[str, Any], card: dict[str, Any]) -> list[str]:
    """For a one-head 1-layer model, the best predictor its form allows (models/cheng/one_layer.json, made by
    scripts/cheng_one_layer.py), added to ``card`` as ``form_best`` and returned as the card's paragraph."""
    if m["layers"] != 1 or m["sweep"] in COMBS or not ONE_LAYER.exists():
        return []
    row = json.loads(ONE_LAYER.read_text())["rows"].get(m["kernel"])
    if row is None:
        return []
    best, smoother = row[m["activation"]]["best_isotropic"], row["softmax"]["best_isotropic"]
    card["form_best"] = {"mse": best["mse"], "ci": best["mse_ci"], "a": best["a"], "softmax_mse": smoother["mse"]}
    return [f"**Against its form:** one layer predicts -P_yy·Σ_n h(x_qᵀ·A·x_n)·y_n/N "
            f"(`interp.cheng.one_layer_prediction`); the best {m['activation']} predictor of that form (A = a·I, "
            f"`python scripts/cheng_one_layer.py`) gives {best['mse']:.3f} ± {best['mse_ci']:.3f} on the same "
            f"sequences, the best softmax-normalised one {smoother['mse']:.3f}. "
            + ("This model is at its form's best (within the CI): the 1-layer table is a property of the forms, not of "
               "training (docs/REPRODUCTION.md, section 3)." if abs(m["mse"] - best["mse"]) <= best["mse_ci"] else
               f"This model is {m['mse'] - best['mse']:+.3f} from its form's best."), ""]


def main() -> None:
    measured = measure_all()
    table = [m for m in measured.values() if m["sweep"] == "table"]
    lines = ["# Cheng et al.'s table, measured", "",
             f"Raw squared error at the query on {CHENG_N:,} fresh sequences (seed {CHENG_SEED}): mean over the seeds "
             "that finished [min, max] (number of seeds); \"lowest at seed\" gives, where both runs are here, the winner's "
             "margin over the runner-up on the same sequences, ± its 95% CI (paired). The official recipe at batch 3,000, at the notebook's 2,100 "
             "steps (configs/cheng_table_cpu.yaml) and at 10,000 (configs/cheng_converged_cpu.yaml); made by "
             "`python scripts/cheng_cards.py`.", "", DRAW_NOTE + " Measured on each draw: "
             + ", ".join(f"{DRAW_LABEL[d]} {sum(m.get('draw', OLD_DRAW) == d for m in measured.values())} cells"
                         for d in (DRAW, OLD_DRAW)) + ".", ""]
    gaps = winning_gaps(measured)
    failed = {sweep: diverged(sweep) for sweep in TABLES}
    for sweep, label in TABLES.items():
        for depth in DEPTHS:
            rows = table_rows([m for m in measured.values() if m["sweep"] == sweep], depth, gaps, failed[sweep])
            if rows:
                lines += [f"## {depth} layer(s), {label} ({SWEEP_FILES[sweep]})", "", *markdown_table(rows), ""]
    converged = sorted((m for m in measured.values() if m["sweep"] == "converged"),
                       key=lambda m: (m["layers"], m["kernel"], m["seed"], m["mse"]))
    if converged:
        lines += ["## Every cell at 10,000 steps, and how far its loss still fell over the last 1,000 steps", "",
                  *markdown_table([{"layers": m["layers"], "data kernel": m["kernel"], "seed": m["seed"],
                                    "activation": m["activation"], "squared error (raw)": m["mse"], "± 95% CI": m["mse_ci"],
                                    "Bayes": m["bayes"], "fall, steps 9,000 to 10,000": m.get("fall_1000")}
                                   for m in converged]), ""]
    for sweep, label in COMBS.items():
        comb = [m for m in measured.values() if m["sweep"] == sweep]
        if comb:
            lines += [f"## The 2-head model on the composite kernel (8 context points), {label} ({SWEEP_FILES[sweep]})",
                      "", *markdown_table(comb_rows(comb, gaps)), ""]
    control = control_rows(measured, gaps)
    if control:
        lines += [f"## The clipping control ({SWEEP_FILES['control']}): linear attention on linear data, 3 layers", "",
                  f"The official schedule makes the clipping constant ten times larger after step {SWITCH:,} "
                  "(run-exp.ipynb); the control keeps it at 1e-8 and is otherwise the same run (the same evaluation loss up to the "
                  "switch). Every clipped block gradient is far below AdamW's eps, so the constant sets the step "
                  "size (scripts/cheng_clip_step.py). Margin: the control's error below the official run's on the same "
                  "sequences (paired, 95% CI).", "", *markdown_table(control), ""]
        control_figure(measured)
    (OUT / "table.md").write_text("\n".join(lines))
    (OUT / "table.json").write_text(json.dumps({"n": CHENG_N, "seed": CHENG_SEED, "cells": sorted(measured.values(), key=lambda m: (m["sweep"], m["kernel"], m["layers"], m["activation"], m["seed"]))}, indent=1))
    if table:
        depth_figure(table)
    converged = [m for m in measured.values() if m["sweep"] == "converged"]
    if len({m["layers"] for m in converged}) > 1:
        depth_figure(converged, "converged")
        curves_figure(measured)
    long = [m for m in measured.values() if m["sweep"] == "long"]
    if long:
        at_2100 = {(m["kernel"], m["activation"]): m["mse"] for m in table if m["layers"] == 3 and m["seed"] == 0}
        lines += ["## Longer training (configs/cheng_long_cpu.yaml: 10,000 steps, 3 layers, seed 0)", "",
                  *markdown_table([{"data kernel": m["kernel"], "activation": m["activation"], "steps": m["steps"],
                                    "squared error (raw)": m["mse"], "at 2,100 steps": at_2100.get((m["kernel"], m["activation"]), "not run"),
                                    "Bayes": m["bayes"], "data draw": DRAW_LABEL[m.get("draw", OLD_DRAW)]}
                                   for m in sorted(long, key=lambda m: (m["kernel"], m["mse"]))]), ""]
        (OUT / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print("shipped:", ", ".join(ship(measured)))
    zoo_readme()  # models/README.md lists every shipped model, the cheng ones with their new headlines


if __name__ == "__main__":
    main()
