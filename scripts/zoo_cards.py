"""Measure the shipped regression models and write each one's CARD.md and card.json, the figures in
docs/figures/, and the table in models/README.md.

    python scripts/zoo_cards.py [name ...]     # default: every model in models/ with a config in configs/zoo/

Every number comes from the checkpoint on a fixed seed (1280 sequences, Garg et al.'s count, for the errors; 512
for the boundary-value sweep), so a rerun reproduces the cards exactly; tests/test_zoo.py checks each card's
headline against a fresh evaluation. Regression errors are squared error / d (``interp.evaluate``) with the
half-width of their 95% confidence interval over sequences.
The modular models' cards are written by scripts/modular_cards.py, the Cheng models' by scripts/cheng_cards.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from interp import load  # noqa: E402
from interp.api import evaluate  # noqa: E402
from interp.cards import HEADLINES, boundary, boundary_rows, kx_sweep, markdown_table, measure  # noqa: E402
from interp.checkpoint import Checkpoint  # noqa: E402
from interp.config import load_run  # noqa: E402
from interp.evaluate import ERROR, ERROR_OVER_MEAN_Y2, METRIC_LABELS, Z95, EvalResult, error_vs_scale, metric_label  # noqa: E402
from interp.evaluate import evaluate as evaluate_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS, CONFIGS, FIGURES = ROOT / "models", ROOT / "configs" / "zoo", ROOT / "docs" / "figures"
N, SEED = 1280, 0  # sequences for every error (Garg et al.'s count), and the seed
N_KX = 512  # sequences for the boundary-value sweep (kx_sweep), as before
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
}


def family(name: str) -> str:
    return next(f for f in ("linear1d", "linear", "poly", "complex-zeros") if name.startswith(f)).replace("poly", "polynomial")


def with_ci(mean: float, ci: float) -> str:
    """A table cell: the mean and the half-width of its 95% interval, "0.0763 ± 0.006"."""
    return f"{mean:.3g} ± {ci:.2g}"


def curve_rows(result: EvalResult, shots: list[int]) -> list[dict[str, Any]]:
    """Per split and method, "mean ± 95% CI" at the picked numbers of examples."""
    rows = []
    for c in result.curves:
        at = {k: with_ci(m, h) for k, m, h in zip(c.shots, c.mean, c.ci95)}
        rows.append({"split": c.split, "method": c.method, **{f"k={k}": at[k] for k in shots if k in at}})
    return rows


def pick_shots(result: EvalResult) -> list[int]:
    shots = result.curves[0].shots
    return sorted({shots[0], 1, 2, 3, 5, 8, 10, 15, shots[-1]} & set(shots))


def icl_figure(name: str, result: EvalResult, path: Path, split: str = "id") -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for c in result.curves:
        if c.split == split:
            line, = ax.plot(c.shots, c.mean, marker="o" if c.method == "model" else None, lw=2.5 if c.method == "model" else 1.2, label=c.method)
            low = [max(m - h, 1e-16) for m, h in zip(c.mean, c.ci95)]  # the log axis has no room for <= 0
            ax.fill_between(c.shots, low, [m + h for m, h in zip(c.mean, c.ci95)], color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xlabel="in-context examples k", ylabel=result.label, title=f"{name} ({split}, 95% CI)", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scale_rows(ckpt: Checkpoint, field: str, scales: list[float]) -> list[dict[str, Any]]:
    """Squared error / d at the last shot as ``task.<field>`` is scaled, on N sequences: the model (± 95% CI),
    least squares and the zero predictor (the mean squared target over d, which grows with the scale)."""
    res = error_vs_scale(ckpt.model, ckpt.task, scales, int(ckpt.train["n_examples"]), field=field, n_batches=N // 256,
                         batch_size=256, generator=torch.Generator().manual_seed(SEED), baselines=True)
    rows = []
    for j, s in enumerate(scales):
        row: dict[str, Any] = {field: s * getattr(ckpt.task, field)}
        for m in ("model", "least_squares", "poly_ls", "zero"):
            if m in res.errors:
                row[m] = with_ci(res.errors[m][j], Z95 * res.sems[m][j]) if m == "model" else res.errors[m][j]
        rows.append(row)
    return rows


def config_path(name: str) -> Path:
    """The run config a zoo model was trained from: configs/zoo/<name>.yaml, or a sweep cell's written-out config."""
    found = sorted((ROOT / "configs").glob(f"**/{name}.yaml"))
    if not found:
        raise FileNotFoundError(f"no run config for {name} under configs/")
    return found[0]


def made_by(name: str, config: Path) -> str:
    rel = config.relative_to(ROOT)
    alone = f"`interp train --config {rel} --out models/{name}`"
    return alone


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
    headline = "boundary_plus" if fam == "linear1d" else "id_error_last"
    n_head = N_KX if headline == "boundary_plus" else N
    value = measure(ckpt, headline, n=n_head, seed=SEED)
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    t = ckpt.train
    lines = [
        f"# {name}", "", run.purpose or "", "",
        f"**Headline:** {HEADLINES[headline][0]} = **{value:.4g}** ({n_head} sequences, seed {SEED}).", "",
        f"- made by: {made_by(name, config)}",
        f"- training: {t.get('steps_done')} steps in {t.get('wall_s', float('nan')) / 60:.1f} min on {t.get('hardware', 'unknown')}",
        f"- task: `{ckpt.task.describe()}`, {t['n_examples']} examples a sequence",
        f"- model: {ckpt.spec.n_layers} layers, {ckpt.spec.n_heads} heads, d_model {ckpt.spec.d_model}, "
        f"{'attention-only' if ckpt.spec.attn_only else 'with MLPs'}, normalization {ckpt.spec.normalization}"
        f"{'' if getattr(ckpt.spec, 'final_norm', True) else ' in the blocks, no final LN'}, "
        f"{ckpt.spec.scoring} attention, {ckpt.spec.positional if ckpt.spec.positional != 'none' else 'no'} positions, {ckpt.spec.mask} mask; {n_params:,} parameters",
        f"- paper: {PAPER[fam]}", "",
        f"## Error against the number of in-context examples ({result.label})", "",
        f"Mean ± half-width of the 95% confidence interval over {result.n_sequences} sequences (seed {SEED}); "
        f"`interp eval --ckpt models/{name}` gives the same table. ![ICL curve](../../docs/figures/{name}-icl.png)", "",
        *markdown_table(curve_rows(result, shots)), "",
    ]
    extra: dict[str, Any] = {}
    if fam == "linear":
        rows = scale_rows(ckpt, "x_scale", [1 / 3, 1 / 2, 1, 2, 3])
        extra["x_scale"] = rows
        lines += ["## Scaled inputs (Garg's shift test)", "",
                  f"x scaled by s in context and query; {metric_label(result.metric, result.error_scale)} at the last "
                  f"shot ({N} sequences; the model's ± 95% CI). d stays fixed, so the zero predictor's error grows as s².",
                  "", *markdown_table(rows), ""]
    if fam == "polynomial":
        unseen = evaluate(ckpt, n=N, seed=SEED, task=ckpt.task.replace(degrees=(4,)))
        rows = [r for r in curve_rows(unseen, pick_shots(unseen)) if r["split"] == "id" and r["method"] in ("model", "poly_ls", "least_squares")]
        sigma = scale_rows(ckpt, "coef_scale", [float(s) for s in range(1, 11)])
        extra |= {"unseen_degree4": rows, "sigma_sweep": sigma}
        lines += ["## Unseen class: degree 4", "", "Trained on degrees 0-3; tested on degree-4 Chebyshev polynomials.", "",
                  *markdown_table(rows), "", "## Coefficient scale σ = 1..10 (Naim & Asher's table)", "",
                  "Squared error / d at the last shot, d = 1: the raw squared error, as Naim & Asher report it; `zero` is "
                  "the zero predictor's (the mean squared target).", "",
                  *markdown_table(sigma), ""]
    if fam == "complex-zeros":  # one scored position per sequence: sweep the number of samples instead
        rows = []
        for k in (1, 2, 3, 4, 6, 8, 10, int(t["n_examples"])):
            r = evaluate_model(ckpt.model, ckpt.task, k, n_batches=N // 256, batch_size=256, generator=torch.Generator().manual_seed(SEED))
            rows.append({"samples k": k, **{f"{c.split} {c.method}": with_ci(c.mean[-1], c.ci95[-1]) for c in r.curves}})
        extra["by_samples"] = rows
        lines += ["## Error against the number of samples", "",
                  f"The same model read with k samples before the query (trained at k = {t['n_examples']}); {result.label}: "
                  f"the squared distance to the root nearest the query over d, ± 95% CI over {N} sequences, beside a "
                  "least-squares fit of the polynomial plus the companion-matrix eigenvalues, as numpy.roots computes them (exact from k = 3 on).", "", *markdown_table(rows), ""]
    if fam in ("linear1d", "complex-zeros"):
        b = boundary(ckpt, n=N_KX, seed=SEED)
        extra["boundary"] = b
        sat = {True: "yes", False: "no", None: "not read"}[b["saturated"]]
        lines += ["## Boundary values B+ and B−", "",
                  f"`interp saturation --ckpt models/{name} --n {N_KX} --seed {SEED}` prints these numbers: the {b['field']} "
                  f"sweep ×{b['scales'][0]:g}–{b['scales'][-1]:g}, training range [R−, R+] = the central 99% of the "
                  "training targets, B± = the highest / lowest median prediction over groups of targets, the fall-back "
                  "slope = least squares of prediction on target beyond R (definition: probes/saturation.py). "
                  f"Saturated: {sat}.{' ' + b['note'] if b['note'] else ''}", "", *markdown_table(boundary_rows(b)), ""]
    if fam == "linear1d":
        kx = kx_sweep(ckpt, n=N_KX, seed=SEED)
        extra["kx"] = kx
        rows = [{"k": k, "|target| q99": tq, "|prediction| q99": pq, "mean target (f > 0)": tm, "mean prediction (f > 0)": pm}
                for k, tq, pq, tm, pm in zip(kx["k"], kx["target_q99"], kx["pred_q99"], kx["target_pos_mean"], kx["pred_pos_mean"])]
        lines += ["## Predictions on f(x) = k·x", "",
                  "Context and query x ~ U(-5, 5) as in training, f(x) = k·x; training targets reach |f| <= 30. "
                  "A table to look at (the boundary values are those above).", "", *markdown_table(rows), ""]
    body = "\n".join(lines)
    (MODELS / name / "CARD.md").write_text(body)
    content = {"name": name, "family": fam, "headline": {"metric": headline, "label": HEADLINES[headline][0], "value": value,
                                                         "n": n_head, "seed": SEED, "tolerance": TOLERANCE},
               "params": n_params, "wall_s": t.get("wall_s"), "hardware": t.get("hardware"), "steps": t.get("steps_done"),
               "metric": result.metric, "error_scale": result.error_scale, "n": result.n_sequences,
               "curves": {f"{c.split}/{c.method}": {"shots": c.shots, "mean": c.mean, "ci95": c.ci95} for c in result.curves},
               **extra}
    (MODELS / name / "card.json").write_text(json.dumps(content, indent=1))
    return content


def kx_figure(cards: dict[str, dict[str, Any]]) -> None:
    """docs/figures/linear1d-boundary.png: each linear1d variant's median prediction against the target (the
    curve B± are read from), training range shaded."""
    trio = {n: c for n, c in cards.items() if n.startswith("linear1d") and "boundary" in c}
    if not trio:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    first = next(iter(trio.values()))["boundary"]
    ax.axvspan(first["range_minus"], first["range_plus"], color="green", alpha=0.12, label="training range [R−, R+]")
    ends = [min(first["bin_target"]), max(first["bin_target"])]
    ax.plot(ends, ends, "k:", lw=0.8, label="y = x")
    for n, c in trio.items():
        b = c["boundary"]
        ax.plot(b["bin_target"], b["bin_prediction"], marker="o", ms=2.5, label=f"{n} (B+ {b['boundary_plus']:.3g}, "
                f"B− {b['boundary_minus']:.3g})")
    ax.set(xlabel=f"target (median of each group; {first['field']} sweep)", ylabel="median prediction at the query",
           title="boundary values", ylim=(-60, 60))
    ax.legend(fontsize=6)
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
        arch += ", no final LN" if m.get("final_norm") is False and m["normalization"] != "none" else ""
        arch += "" if m["scoring"] == "softmax" else f", {m['scoring']} attn"
        arch += ", query-masked (Cheng)" if m.get("mask") == "context" else ""
        arch += ", tied embeddings" if m.get("tied_embed") else ""
        arch += ", no linear biases" if m.get("bias") is False else ""
        snaps = ckpt_cfg.get("snapshots")
        snaps = f", {len(snaps['steps'])} snapshots ({snaps['dtype']})" if snaps else ""
        rows.append(f"| [{c['name']}]({c['name']}/CARD.md) | {ckpt_cfg['task']['name']} | {arch} | {h['label']} | "
                    f"{h['value']:.4g} | {c['steps']} steps, {(c.get('wall_s') or 0) / 60:.0f} min{snaps} |")
    sweeps = sorted(p for p in MODELS.glob("*/*.json") if not (p.parent / "config.json").exists() and p.name != "table.json"
                    and "config" in json.loads(p.read_text()))  # sweep summaries name their sweep file; other JSON is not one
    if sweeps:
        rows += ["", "Sweep summaries (no weights; the cells' checkpoints stay in `runs/`):", ""]
        rows += [f"- [{p.relative_to(MODELS)}]({p.relative_to(MODELS)}): `interp sweep {sweep_file(p)}`" for p in sweeps]
    if (MODELS / "cheng" / "table.md").is_file():
        rows.append("- [cheng/table.md](cheng/table.md): Cheng et al.'s table and depth rows, measured on the Cheng sweeps' "
                    "cells by `python scripts/cheng_cards.py` (which writes the cheng-* cards)")
    (MODELS / "README.md").write_text("\n".join(rows) + "\n")


def sweep_file(summary: Path) -> str:
    """The sweep file a summary names, from the repository root (newer summaries name it from their own folder)."""
    named = json.loads(summary.read_text())["config"]
    at = (summary.parent / named).resolve()
    return str(at.relative_to(ROOT)) if named.startswith("..") and at.is_relative_to(ROOT) else named


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    names = names or sorted(p.stem for p in CONFIGS.glob("*.yaml") if (MODELS / p.stem / "config.json").is_file())
    cards = {}
    for name in names:
        cards[name] = card(name)
        print(f"{name}: {cards[name]['headline']['label']} = {cards[name]['headline']['value']:.4g}", flush=True)
    zoo_readme()
    kx_figure({n: json.loads((MODELS / n / "card.json").read_text()) for n in sorted(p.parent.name for p in MODELS.glob("linear1d*/card.json"))})


if __name__ == "__main__":
    main(sys.argv[1:])
