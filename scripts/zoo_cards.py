"""Measure the shipped regression models and write each one's CARD.md and card.json, the figures in
docs/figures/, and the table in models/README.md.

    python scripts/zoo_cards.py [name ...]     # default: every model in models/ with a config in configs/zoo/

Every number comes from the checkpoint on a fixed seed (512 sequences unless said otherwise), so a rerun
reproduces the cards exactly; tests/test_zoo.py checks each card's headline against a fresh evaluation.
The modular models' cards are written by scripts/modular_cards.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from interp import load  # noqa: E402
from interp.api import evaluate  # noqa: E402
from interp.cards import HEADLINES, kx_sweep, markdown_table, measure  # noqa: E402
from interp.checkpoint import Checkpoint  # noqa: E402
from interp.config import load_run  # noqa: E402
from interp.evaluate import EvalResult, error_vs_scale  # noqa: E402
from interp.evaluate import evaluate as evaluate_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS, CONFIGS, FIGURES = ROOT / "models", ROOT / "configs" / "zoo", ROOT / "docs" / "figures"
N, SEED = 512, 0
TOLERANCE = {"rel": 0.02, "abs": 1e-3}  # a fresh evaluation on the same seed must land this close

# What each family's card sets beside our numbers (SCIENCE.md; marked there as the paper's or approximate).
PAPER = {
    "linear": "Garg et al.: the transformer tracks least squares, whose error is ~0 once k >= d; the error grows "
              "when x is scaled by 2 or 3 (their standard 12-layer model, d = 20, 500k steps).",
    "polynomial": "Naim & Asher: near-0 error inside the training distribution, also for held-out polynomial classes "
                  "(ICL1); trained on N(0, 1) coefficients and tested at σ = 1..10 the squared error is ~0 for σ <= 2 "
                  "and grows after (12L8H: 0.0 at σ = 1, 3.14 at σ = 5, 73.93 at σ = 10; zero predictor 128.52 at σ = 10).",
    "linear1d": "Naim & Asher: trained on a, b, x ~ U(-5, 5), predictions saturate at ≈ ±30 (= 5·5 + 5) once f(x) "
                "leaves the training range; layer norm and softmax are the cause.",
    "complex-zeros": "Naim & Asher: the same training lets small models find zeros of complex polynomials from samples "
                     "(no number given in SCIENCE.md).",
    "kernel": "Cheng, Chen & Sra: with no MLP and no LN, each attention layer is a step of functional gradient descent; "
              "the activation matching the data kernel wins and approaches the Bayes-optimal kernel regression.",
}


def family(name: str) -> str:
    return next(f for f in ("linear1d", "linear", "poly", "complex-zeros", "kernel") if name.startswith(f)).replace("poly", "polynomial")


def curve_rows(result: EvalResult, shots: list[int]) -> list[dict[str, Any]]:
    rows = []
    for c in result.curves:
        at = {k: m for k, m in zip(c.shots, c.mean)}
        rows.append({"split": c.split, "method": c.method, **{f"k={k}": at[k] for k in shots if k in at}})
    return rows


def pick_shots(result: EvalResult) -> list[int]:
    shots = result.curves[0].shots
    return sorted({shots[0], 1, 2, 3, 5, 8, 10, 15, shots[-1]} & set(shots))


def icl_figure(name: str, result: EvalResult, path: Path, split: str = "id") -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for c in result.curves:
        if c.split == split:
            ax.plot(c.shots, c.mean, marker="o" if c.method == "model" else None, lw=2.5 if c.method == "model" else 1.2, label=c.method)
    ax.set(xlabel="in-context examples k", ylabel=result.metric.replace("_", " "), title=f"{name} ({split})", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scale_rows(ckpt: Checkpoint, field: str, scales: list[float], normalise: bool) -> list[dict[str, Any]]:
    res = error_vs_scale(ckpt.model, ckpt.task, scales, int(ckpt.train["n_examples"]), field=field, n_batches=2,
                         batch_size=256, generator=torch.Generator().manual_seed(SEED), baselines=True)
    rows = []
    for j, s in enumerate(scales):
        zero = res.errors["zero"][j]
        row: dict[str, Any] = {field: s * getattr(ckpt.task, field)}
        for m in ("model", "least_squares", "poly_ls", "zero"):
            if m in res.errors and not (normalise and m == "zero"):
                row[m] = res.errors[m][j] / zero if normalise else res.errors[m][j]
        rows.append(row)
    return rows


KERNELS, ACTIVATIONS = ("linear", "relu", "exp"), ("linear", "relu", "exp", "softmax")
KERNEL_CELLS = {f"kernel-{k}-{k}attn": f"kernel={k},scoring={k}" for k in KERNELS}
"""The Cheng et al. grid's diagonal: zoo name -> cell of configs/kernel_grid.yaml (copied by ship_kernel_cells)."""
KERNEL_N = 4096  # sequences for the kernel tables: the cells differ by a few percent


def kernel_tables() -> dict[str, Any] | None:
    """Cheng et al.'s table (3 layers, every data kernel x activation) and depth plot (matching pairs at 1, 3, 5
    layers), measured on the cells in runs/kernel-grid and runs/kernel-depth beside the Bayes-optimal predictor.

    Each value is the last point of ``interp.evaluate(cell, n=KERNEL_N, seed=SEED)``: the normalised squared
    error at the query, on the same sequences for every model of a data kernel and for its Bayes predictor
    (``kernel_regression``). A cell that did not finish (diverged) shows its sweep status. Writes
    models/kernel-grid/table.json and docs/figures/kernel-depth.png; None if the grid has not been run."""
    summaries = {name: json.loads(path.read_text()) for name in ("sweep", "depth", "seeds")
                 if (path := MODELS / "kernel-grid" / f"{name}.json").is_file()}
    if "sweep" not in summaries:
        return None
    cells = {c["name"]: c for summary in summaries.values() for c in summary["cells"]}
    bayes: dict[str, float] = {}

    def error(cell: str, kernel: str) -> float | str:
        c = cells.get(cell)
        if c is None or c["status"] != "done":
            return "not run" if c is None else c["status"].split(" by ")[0]
        result = evaluate(load(ROOT / c["ckpt"]), n=KERNEL_N, seed=SEED, baselines=kernel not in bayes)
        if kernel not in bayes:
            bayes[kernel] = result.curve("id", "kernel_regression").mean[-1]
        return result.curve("id", "model").mean[-1]

    grid = [{"data kernel": k, **{f"{a} attn": error(f"kernel={k},scoring={a}", k) for a in ACTIVATIONS}} for k in KERNELS]
    depth = []
    for row in grid:  # the matching pairs; 3 layers is the grid's diagonal
        k = row["data kernel"]
        layers = {1: error(f"pair={k}-{k},n_layers=1", k), 3: row[f"{k} attn"], 5: error(f"pair={k}-{k},n_layers=5", k)}
        depth.append({"data kernel": k, "attention": k, **{f"{n} layers": v for n, v in layers.items()}})
    for row in grid + depth:
        row["Bayes (kernel regression)"] = bayes[row["data kernel"]]
    tables = {"n": KERNEL_N, "seed": SEED, "n_examples": 14, "grid": grid, "depth": depth}
    if "seeds" in summaries:
        seeds = [axis["model.seed"] for axis in summaries["seeds"]["axes"]["seed"]]
        tables["grid_seeds"] = [seed_row(row, seeds, lambda a, s, k=row["data kernel"]: error(f"kernel={k},scoring={a},seed={s}-{s}", k))
                                for row in grid]
    (MODELS / "kernel-grid" / "table.json").write_text(json.dumps(tables, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for row, color in zip(depth, ("C0", "C1", "C2")):
        pts = [(n, row[f"{n} layers"]) for n in (1, 3, 5) if isinstance(row[f"{n} layers"], float)]
        ax.plot(*zip(*pts), marker="o", color=color, label=f"{row['data kernel']} data, {row['attention']} attn")
        if row["Bayes (kernel regression)"] > 1e-6:  # ~0 for linear and relu data: no line to draw on a log axis
            ax.axhline(row["Bayes (kernel regression)"], color=color, ls="--", lw=0.8, label=f"Bayes, {row['data kernel']} data")
    ax.set(xlabel="layers", ylabel="normalised squared error at the query", yscale="log", xticks=[1, 3, 5],
           title="Cheng et al.: matching pairs against depth\n(Bayes error ~0 for linear and relu data)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "kernel-depth.png", dpi=110)
    plt.close(fig)
    return tables


def seed_row(row: dict[str, Any], seeds: list[int], error: Callable[[str, int], float | str]) -> dict[str, Any]:
    """One data kernel's row over seed 0 (``row``, from the grid) and ``seeds`` (``error(activation, seed)``, from
    configs/kernel_seeds.yaml): per activation "mean [min, max]" of the runs that finished, and the best
    activation at each seed."""
    per = {a: [row[f"{a} attn"], *(error(a, s) for s in seeds)] for a in ACTIVATIONS}
    out: dict[str, Any] = {"data kernel": row["data kernel"]}
    for a, values in per.items():
        done = [v for v in values if isinstance(v, float)]
        failed = f" ({len(values) - len(done)} failed)" if len(done) < len(values) else ""
        out[f"{a} attn"] = f"{np.mean(done):.3g} [{min(done):.3g}, {max(done):.3g}]{failed}" if done else "failed"
    out[f"best at seeds {', '.join(map(str, [0, *seeds]))}"] = ", ".join(
        min((v[i], a) for a, v in per.items() if isinstance(v[i], float))[1] for i in range(1 + len(seeds)))
    return out


def config_path(name: str) -> Path:
    """The run config a zoo model was trained from: configs/zoo/<name>.yaml, or a sweep cell's written-out config."""
    found = sorted((ROOT / "configs").glob(f"**/{name}.yaml"))
    if not found:
        raise FileNotFoundError(f"no run config for {name} under configs/")
    return found[0]


def made_by(name: str, config: Path) -> str:
    rel = config.relative_to(ROOT)
    alone = f"`interp train --config {rel} --out models/{name}`"
    if name in KERNEL_CELLS:
        return f"`interp sweep configs/kernel_grid.yaml` (cell `{KERNEL_CELLS[name]}`), copied here; the same run alone: {alone}"
    return alone


def ship_kernel_cells() -> list[str]:
    """Copy the finished diagonal cells of the kernel grid into models/ and write their run configs."""
    import shutil

    import yaml

    from interp.config import run_from_dict

    shipped = []
    for name, cell in KERNEL_CELLS.items():
        src = ROOT / "runs" / "kernel-grid" / cell
        if not (src / "config.json").is_file() or (src / "resume").exists():
            continue
        if (MODELS / name).exists():
            shutil.rmtree(MODELS / name)
        shutil.copytree(src, MODELS / name)
        run = run_from_dict(json.loads((src / "config.json").read_text()) | {
            "name": name, "purpose": f"Cheng et al.'s grid, diagonal cell: GP data with the {cell.split(',')[0][7:]} kernel; "
                                     "Cheng's layer (paired tokens, query masked as a key, h(scores)/N), 3 attention-only "
                                     "layers with the matching activation, no LN, no MLP."})
        (ROOT / "configs" / "kernel" / f"{name}.yaml").write_text(
            f"# The run of kernel_grid cell {cell}, written out by scripts/zoo_cards.py.\n" + yaml.safe_dump(run.to_dict(), sort_keys=False))
        shipped.append(name)
    return shipped


def card(name: str) -> dict[str, Any]:
    """Measure ``models/<name>`` and write its CARD.md, card.json and figures; returns card.json's content."""
    ckpt = load(MODELS / name)
    config = config_path(name)
    run = load_run(config)
    fam = family(name)
    result = evaluate(ckpt, n=N, seed=SEED)
    shots = pick_shots(result)
    FIGURES.mkdir(parents=True, exist_ok=True)
    icl_figure(name, result, FIGURES / f"{name}-icl.png")
    headline = "kx_boundary" if fam == "linear1d" else "id_error_last"
    value = measure(ckpt, headline, n=N, seed=SEED)
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    t = ckpt.train
    lines = [
        f"# {name}", "", run.purpose or "", "",
        f"**Headline:** {HEADLINES[headline][0]} = **{value:.4g}** ({N} sequences, seed {SEED}).", "",
        f"- made by: {made_by(name, config)}",
        f"- training: {t.get('steps_done')} steps in {t.get('wall_s', float('nan')) / 60:.1f} min on {t.get('hardware', 'unknown')}",
        f"- task: `{ckpt.task.describe()}`, {t['n_examples']} examples a sequence",
        f"- model: {ckpt.spec.n_layers} layers, {ckpt.spec.n_heads} heads, d_model {ckpt.spec.d_model}, "
        f"{'attention-only' if ckpt.spec.attn_only else 'with MLPs'}, normalization {ckpt.spec.normalization}, "
        f"{ckpt.spec.scoring} attention, {ckpt.spec.positional if ckpt.spec.positional != 'none' else 'no'} positions, {ckpt.spec.mask} mask; {n_params:,} parameters",
        f"- paper: {PAPER[fam]}", "",
        f"## Error against the number of in-context examples ({result.metric.replace('_', ' ')})", "",
        f"`interp eval --ckpt models/{name}` gives the same table. ![ICL curve](../../docs/figures/{name}-icl.png)", "",
        *markdown_table(curve_rows(result, shots)), "",
    ]
    extra: dict[str, Any] = {}
    if fam == "linear":
        rows = scale_rows(ckpt, "x_scale", [1 / 3, 1 / 2, 1, 2, 3], normalise=True)
        extra["x_scale"] = rows
        lines += ["## Scaled inputs (Garg's shift test)", "",
                  "x scaled by s in context and query; normalised error at the last shot.", "", *markdown_table(rows), ""]
    if fam == "polynomial":
        unseen = evaluate(ckpt, n=N, seed=SEED, task=ckpt.task.replace(degrees=(4,)))
        rows = [r for r in curve_rows(unseen, pick_shots(unseen)) if r["split"] == "id" and r["method"] in ("model", "poly_ls", "least_squares")]
        sigma = scale_rows(ckpt, "coef_scale", [float(s) for s in range(1, 11)], normalise=False)
        extra |= {"unseen_degree4": rows, "sigma_sweep": sigma}
        lines += ["## Unseen class: degree 4", "", "Trained on degrees 0-3; tested on degree-4 Chebyshev polynomials.", "",
                  *markdown_table(rows), "", "## Coefficient scale σ = 1..10 (Naim & Asher's table)", "",
                  "Raw squared error at the last shot; `zero` is the zero predictor's (the mean squared target).", "",
                  *markdown_table(sigma), ""]
    if fam == "complex-zeros":  # one scored position per sequence: sweep the number of samples instead
        rows = []
        for k in (1, 2, 3, 4, 6, 8, 10, int(t["n_examples"])):
            r = evaluate_model(ckpt.model, ckpt.task, k, n_batches=2, batch_size=256, generator=torch.Generator().manual_seed(SEED))
            rows.append({"samples k": k, **{f"{c.split} {c.method}": c.mean[-1] for c in r.curves}})
        extra["by_samples"] = rows
        lines += ["## Error against the number of samples", "",
                  f"The same model read with k samples before the query (trained at k = {t['n_examples']}); normalised "
                  "squared distance to the root nearest the query, beside a least-squares fit of the polynomial plus "
                  "the companion-matrix eigenvalues, as numpy.roots computes them (exact from k = 3 on).", "", *markdown_table(rows), ""]
    if fam == "kernel" and (MODELS / "kernel-grid" / "table.json").is_file():
        tables = json.loads((MODELS / "kernel-grid" / "table.json").read_text())
        lines += ["## Cheng et al.'s table: every data kernel × attention activation, 3 layers", "",
                  f"Normalised squared error at the query, {tables['n']} sequences of {tables['n_examples']} points per data "
                  "kernel (the same ones for every model and the Bayes predictor); made by `python scripts/zoo_cards.py` "
                  "from the cells of `interp sweep configs/kernel_grid.yaml`.", "", *markdown_table(tables["grid"]), "",
                  "## The matching pairs against depth", "", "From `interp sweep configs/kernel_depth.yaml` (1 and 5 layers) "
                  "and the grid (3). ![depth](../../docs/figures/kernel-depth.png)", "", *markdown_table(tables["depth"]), ""]
        if "grid_seeds" in tables:
            lines += ["## The table over three seeds", "", "Mean [min, max] over seed 0 (above) and seeds 1, 2 "
                      "(`interp sweep configs/kernel_seeds.yaml`: weight init and training data), on the same sequences.",
                      "", *markdown_table(tables["grid_seeds"]), ""]
    if fam == "linear1d":
        kx = kx_sweep(ckpt, n=N, seed=SEED)
        extra["kx"] = kx
        rows = [{"k": k, "|target| q99": tq, "|prediction| q99": pq, "mean target (f > 0)": tm, "mean prediction (f > 0)": pm}
                for k, tq, pq, tm, pm in zip(kx["k"], kx["target_q99"], kx["pred_q99"], kx["target_pos_mean"], kx["pred_pos_mean"])]
        lines += ["## Predictions on f(x) = k·x (boundary values)", "",
                  f"Context and query x ~ U(-5, 5) as in training; the largest |prediction| is B = {kx['boundary']:.3g}. "
                  "Training targets reach |f| <= 30.", "", *markdown_table(rows), ""]
    body = "\n".join(lines)
    (MODELS / name / "CARD.md").write_text(body)
    content = {"name": name, "family": fam, "headline": {"metric": headline, "label": HEADLINES[headline][0], "value": value,
                                                         "n": N, "seed": SEED, "tolerance": TOLERANCE},
               "params": n_params, "wall_s": t.get("wall_s"), "hardware": t.get("hardware"), "steps": t.get("steps_done"),
               "curves": {f"{c.split}/{c.method}": {"shots": c.shots, "mean": c.mean} for c in result.curves}, **extra}
    (MODELS / name / "card.json").write_text(json.dumps(content, indent=1))
    return content


def kx_figure(cards: dict[str, dict[str, Any]]) -> None:
    trio = {n: c for n, c in cards.items() if n.startswith("linear1d")}
    if not trio:
        return
    fig, ax = plt.subplots(figsize=(5, 3.4))
    first = next(iter(trio.values()))["kx"]
    ax.plot(first["k"], first["target_q99"], "k:", label="|target| (0.99 quantile)")
    for n, c in trio.items():
        ax.plot(c["kx"]["k"], c["kx"]["pred_q99"], marker="o", label=f"{n} (B={c['kx']['boundary']:.3g})")
    ax.axhline(30, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="slope k of f(x) = k·x", ylabel="|prediction| at the query (0.99 quantile)", title="boundary values")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "linear1d-boundary.png", dpi=110)
    plt.close(fig)


def zoo_readme() -> None:
    """models/README.md: one row per shipped model (every folder with a card.json) with its headline."""
    rows = ["# The model zoo", "",
            "Every folder is one checkpoint (config.json, weights.safetensors, metrics.jsonl) with its CARD.md and card.json.",
            "Regression cards are written by `python scripts/zoo_cards.py`, modular ones by `python scripts/modular_cards.py`;",
            "`tests/test_zoo.py` re-measures every headline on the card's seed. The reproduction report is docs/REPRODUCTION.md.", "",
            "| model | task | layers × heads × width | headline | value | training |", "|---|---|---|---|---|---|"]
    for path in sorted(MODELS.glob("*/card.json")):
        c = json.loads(path.read_text())
        ckpt_cfg = json.loads((path.parent / "config.json").read_text())
        m, h = ckpt_cfg["model"], c["headline"]
        arch = f"{m['n_layers']} × {m['n_heads']} × {m['d_model']}" + (", attn-only" if m["attn_only"] else "")
        arch += "" if m["normalization"] == "LN" else f", norm {m['normalization']}"
        arch += "" if m["scoring"] == "softmax" else f", {m['scoring']} attn"
        arch += ", query-masked (Cheng)" if m.get("mask") == "context" else ""
        arch += ", tied embeddings" if m.get("tied_embed") else ""
        arch += ", no linear biases" if m.get("bias") is False else ""
        snaps = ckpt_cfg.get("snapshots")
        snaps = f", {len(snaps['steps'])} snapshots ({snaps['dtype']})" if snaps else ""
        rows.append(f"| [{c['name']}]({c['name']}/CARD.md) | {ckpt_cfg['task']['name']} | {arch} | {h['label']} | "
                    f"{h['value']:.4g} | {c['steps']} steps, {(c.get('wall_s') or 0) / 60:.0f} min{snaps} |")
    sweeps = sorted(p for p in MODELS.glob("*/*.json") if not (p.parent / "config.json").exists() and p.name != "table.json")
    if sweeps:
        rows += ["", "Sweep summaries (no weights; the cells' checkpoints stay in `runs/`):", ""]
        rows += [f"- [{p.relative_to(MODELS)}]({p.relative_to(MODELS)}): `interp sweep {json.loads(p.read_text())['config']}`"
                 for p in sweeps]
    if (MODELS / "kernel-grid" / "table.json").is_file():
        rows.append("- [kernel-grid/table.json](kernel-grid/table.json): Cheng et al.'s table and depth rows, measured on "
                    "those cells by `python scripts/zoo_cards.py`")
    (MODELS / "README.md").write_text("\n".join(rows) + "\n")


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    shipped_kernels = ship_kernel_cells() if not names else []
    if not names and (tables := kernel_tables()):
        for table in ("grid", "depth"):
            print(f"kernel {table}:", *markdown_table(tables[table]), sep="\n", flush=True)
    names = names or sorted({p.stem for p in CONFIGS.glob("*.yaml") if (MODELS / p.stem / "config.json").is_file()} | set(shipped_kernels))
    cards = {}
    for name in names:
        cards[name] = card(name)
        print(f"{name}: {cards[name]['headline']['label']} = {cards[name]['headline']['value']:.4g}", flush=True)
    zoo_readme()
    kx_figure({n: json.loads((MODELS / n / "card.json").read_text()) for n in sorted(p.parent.name for p in MODELS.glob("linear1d*/card.json"))})


if __name__ == "__main__":
    main(sys.argv[1:])
