"""Ship the modular-arithmetic models from the sweeps, measure them with the probes, and draw the phase diagram.

    python scripts/modular_cards.py

    python scripts/modular_cards.py modular-p11-d2 modular-p11-d1     # only these

Reads the sweep cells under runs/ (p = 11: runs/modular-phase-p11/, cells of configs/modular_phase_p11.yaml,
configs/modular_p11_main.yaml and configs/modular_depth_p11.yaml; p = 7: runs/modular-phase/) and their summaries
models/modular-phase*/{sweep,depth}.json; copies the chosen cells, with their weight snapshots, into models/<name>
with each cell's run config written to configs/modular/<name>.yaml; writes each CARD.md and card.json (OOD accuracy by shots,
accuracy by kind of query with the phase it names (interp.sweep.phase), the heads that gather x and y, ratio matching vs modular regression by shots, circle-of-circles scores, and OOD
accuracy with the key heads resample-ablated) and docs/modular_phase*.png. Every number is on a fixed seed.
"""
from __future__ import annotations

import json
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import interp  # noqa: E402
from interp.cards import HEADLINES, kind_rows, markdown_table, measure  # noqa: E402
from interp.checkpoint import Checkpoint, init_chain, load_checkpoint, load_weights, read_config, read_metrics, read_tensors, save_checkpoint, snapshot_file  # noqa: E402
from interp.config import run_from_dict  # noqa: E402
from interp.sweep import PHASE_RULE, PHASES, phase  # noqa: E402
from interp.train import LAST_WEIGHTS, TrainConfig, ood_objective, snapshot_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS, RUNS, DOCS = ROOT / "models", ROOT / "runs" / "modular-phase", ROOT / "docs"
RUNS_P11 = ROOT / "runs" / "modular-phase-p11"
N, SEED = 512, 0
BIG = "n_tasks=36,pair_fraction=0.8"
BIG11 = "n_tasks=64,pair_fraction=0.8"
LONGER = "n_tasks=64,pair_fraction=0.8,n_layers=2,seed=1,steps=24000,warmup_steps=1200,eval_every=1000"
# zoo models whose cell is not in the grid sweeps' folders, and the commands that made them
RUNS_OF = {"modular-p11-d2-long": ROOT / "runs" / "modular-p11-longer"}
MADE_BY = {"modular-p11-d2-long": "`interp sweep configs/modular_p11_long.yaml` (30,000 steps), then `interp sweep "
                             "configs/modular_p11_longer.yaml` (24,000 more from its last-step weights, `train.init_from`)"}
# zoo name -> (cell folder, weights: "best" (keep_best's) or "last", what the model is for)
SHIPPED: dict[str, tuple[str, str, str]] = {
    "modular-p11-d2": (f"{BIG11},n_layers=2,seed=0", "last", "p = 11 with He et al.'s official recipe at CPU scale: 2 blocks, 64 of 121 pre-training tasks (parallelograms), 80% of (x, y) pairs, 32 examples: the model that should generalise out of distribution. Last-step weights: at 12,000 steps it has not left chance on OOD regression-only queries, so its best-OOD step (by that metric) is noise; that step's weights are the snapshot at best_ood_step."),
    "modular-p11-d2-long": (LONGER, "last", "p = 11 with He et al.'s official recipe at CPU scale: 2 blocks, 64 of 121 pre-training tasks (parallelograms), 80% of (x, y) pairs, 32 examples: modular-p11-d2's data and model (the model that should generalise out of distribution) trained 54,000 steps in two runs: 30,000 (configs/modular_p11_long.yaml), then 24,000 more from those last-step weights with a fresh optimizer, warm-up and cosine schedule (configs/modular_p11_longer.yaml); the snapshots and the log cover both, steps counted from the start. Last-step weights."),
    "modular-p11-d1": (f"{BIG11},n_layers=1,seed=0", "last", "The p = 11 data with 1 block: He et al. find that 1 block does not generalise OOD."),
    "modular-p11-d2-fewtasks": ("n_tasks=16,pair_fraction=0.8,n_layers=2,seed=0", "last", "p = 11, 2 blocks with only 16 pre-training tasks, below the OOD transition (last-step weights)."),
    "modular-p11-d4": (f"{BIG11},n_layers=4,seed=0", "best", "p = 11, 4 blocks at the step of its best OOD accuracy (He et al.: the OOD phase of deep models is transient)."),
    "modular-p11-d4-last": (f"{BIG11},n_layers=4,seed=0", "last", "modular-p11-d4 at its last training step, to compare with its best-OOD step."),
    "modular-p7-d2": (f"{BIG},n_layers=2,seed=0", "best", "2 blocks, 36 of 49 pre-training tasks, 80% of (x, y) pairs: the model that should generalise out of distribution."),
    "modular-p7-d1": (f"{BIG},n_layers=1,seed=0", "best", "The same data with 1 block: He et al. find that 1 block does not generalise OOD."),
    "modular-p7-d2-fewtasks": ("n_tasks=8,pair_fraction=0.8,n_layers=2,seed=0", "last", "2 blocks with only 8 pre-training tasks, below the OOD transition (last-step weights: the best-OOD step of a model that does not generalise is noise)."),
    "modular-p7-d4": (f"{BIG},n_layers=4,seed=0", "best", "4 blocks at the step of its best OOD accuracy (He et al.: the OOD phase of deep models is transient)."),
    "modular-p7-d4-last": (f"{BIG},n_layers=4,seed=0", "last", "modular-p7-d4 at its last training step, to compare with its best-OOD step."),
}
PAPER_SHOTS = {0: 0.03, 4: 0.45, 6: 0.70, 10: 0.90, 31: 0.95}  # He et al. Fig. 1c, read by eye (SCIENCE.md)
PAPER = ("He et al. (p = 29, 841 tasks, 32 examples, d_model 512, 200k steps): OOD generalisation once n_id >= 256 "
         "(30% of tasks) with alpha >~ 0.4; 2 blocks are the minimum; OOD accuracy about 45% at 4 shots, 90% at 10, 95% at 31; "
         "in the d = 2 model layer-0 heads attend 1 and 2 tokens back; d = 2 stays near ratio matching, d = 4 shifts "
         "to modular regression; deeper models' OOD phase is transient.")


def runs_of(name: str) -> Path:
    """The sweep folder that holds the cells of zoo model ``name``."""
    if name in RUNS_OF:
        return RUNS_OF[name]
    return RUNS_P11 if name.startswith("modular-p11") else RUNS


def ship(name: str, cell: str, weights: str) -> Checkpoint:
    """Copy a finished cell into models/<name> (with its last-step weights if asked, and its weight snapshots)
    and write its run config."""
    src = runs_of(name) / cell
    ckpt = load_checkpoint(src)
    if weights == "last":
        load_weights(ckpt.model, read_tensors(src / LAST_WEIGHTS), src / LAST_WEIGHTS)
        train = ckpt.train | {"weights": f"last step ({ckpt.train['steps_done']})"}
    else:
        train = ckpt.train | {"weights": f"best OOD step ({ckpt.train['best_step']})"}
    snapshots = read_config(src).get("snapshots")
    files = {f: (src / f).read_bytes() for f in (snapshots or {}).get("files", {}).values()}
    metrics = ckpt.metrics
    if ckpt.train.get("init_from"):
        train, metrics, snapshots, files = with_history(init_chain(src, ROOT))
    if (MODELS / name).exists():
        shutil.rmtree(MODELS / name)
    save_checkpoint(MODELS / name, ckpt.model, ckpt.spec, ckpt.task, train, metrics, files, snapshots=snapshots)
    run = run_from_dict(json.loads((src / "config.json").read_text()) | {"name": name, "purpose": SHIPPED[name][2]})
    (ROOT / "configs" / "modular" / f"{name}.yaml").write_text(
        f"# The run of sweep cell {cell}, written out by scripts/modular_cards.py.\n" + yaml.safe_dump(run.to_dict(), sort_keys=False))
    return load_checkpoint(MODELS / name)


def with_history(runs: list[Path]) -> tuple[Any, ...]:
    """A chain of runs (``interp.checkpoint.init_chain``) as one history: every run's metrics with their
    steps offset by the steps of the runs before it; of all runs' snapshots, the nearest to each of the log-spaced
    steps one run of the whole length would keep, plus the best-OOD step (over all logs), each run's last and the
    last. Returns the train dict (steps_done and best_step over the whole; steps_before: the steps before the last
    run), the metrics, the snapshots entry and the snapshot files."""
    history: list[dict[str, Any]] = []
    path_of: dict[int, Path] = {}
    ends, done, wall = [], 0, 0.0
    for run in runs:
        config = read_config(run)
        history += [m | {"step": m["step"] + done} for m in read_metrics(run / "metrics.jsonl")]
        path_of |= {done + int(s): run / f for s, f in config["snapshots"]["files"].items()}
        done += int(config["train"]["steps_done"])
        wall += float(config["train"].get("wall_s", 0.0))
        ends.append(done)
    total, before, train = done, ends[-2], config["train"]  # the last run's
    best = min(history, key=ood_objective)["step"]
    targets = snapshot_steps(TrainConfig(steps=total, snapshots=int(train["snapshots"])))
    steps = sorted({min(path_of, key=lambda a: abs(a - t)) for t in targets} | {best, *ends})
    files = {snapshot_file(s): path_of[s].read_bytes() for s in steps}
    snapshots = {"steps": steps, "dtype": train["snapshot_dtype"], "best_ood_step": best,
                 "files": {str(s): snapshot_file(s) for s in steps}}
    parts = ", then ".join(f"{b - a} in {run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}"
                           for a, b, run in zip([0, *ends], ends, runs))
    train = train | {"steps_before": before, "steps_done": total, "best_step": best, "wall_s": wall,
                     "weights": f"last step ({total}: {parts}, each run from the last weights of the one before)"}
    return train, history, snapshots, files


def gather_heads(ckpt: Checkpoint) -> list[dict[str, Any]]:
    """Per head, the share of attention to the previous token, to its own example's x and y (from a z position
    they are 2 and 1 tokens back: He et al.'s layer-0 heads), to itself and to token 0 (``head_types``)."""
    r = interp.attribute(ckpt, method="head_types", n=256, seed=SEED)
    types = r.labels["type"]
    rows = []
    for layer in range(r.scores.shape[0]):
        for head in range(r.scores.shape[1]):
            s = dict(zip(types, r.scores[layer, head].tolist()))
            rows.append({"layer": layer, "head": head, "prev_token": s["prev_token"], "own_x": s["own_x"],
                         "own_y": s["own_y"], "self": s["self"], "first_token": s["first_token"]})
    return rows


def resample_ablated_by_kind(ckpt: Checkpoint, heads: list[tuple[int, int]], split: str = "ood_test") -> dict[str, tuple[float, float]]:
    """(clean, ablated) accuracy on ``split`` over the last-shot region (the last quarter of the shots), on all
    queries and on each kind (``interp.query_kinds``), pooled over sequences, with ``heads`` resample-ablated."""
    from interp.query_kinds import COPYABLE, RATIO, REGRESSION, classify_queries, correct_by_example, last_region

    task = ckpt.task.eval_splits()[split]
    g = torch.Generator().manual_seed(SEED)
    k = int(ckpt.train["n_examples"])
    batch = task.sample(N, k, g)
    other = task.sample(N, k, g)
    _, cache = ckpt.model.run_with_cache(other.inputs, names_filter=lambda n: n.endswith("hook_z"))

    def ablate(z: torch.Tensor, hook: Any, head: int) -> torch.Tensor:
        z[:, :, head] = cache[hook.name][:, :, head]
        return z

    fwd = [(f"blocks.{layer}.attn.hook_z", partial(ablate, head=head)) for layer, head in heads]
    with torch.no_grad():
        clean = correct_by_example(ckpt.model(batch.inputs).argmax(-1), batch.targets, batch.loss_mask)
        ablated = correct_by_example(ckpt.model.run_with_hooks(batch.inputs, fwd_hooks=fwd).argmax(-1), batch.targets, batch.loss_mask)
    kinds = classify_queries(batch.examples, ckpt.task.p)
    last = torch.zeros(N, k, dtype=torch.bool)
    last[:, last_region(k)] = True
    out = {}
    for name, sel in (("all", last), ("copyable", last & (kinds == COPYABLE)), ("ratio", last & (kinds == RATIO)),
                      ("regression", last & (kinds == REGRESSION))):
        if sel.any():
            out[name] = (clean[sel].float().mean().item(), ablated[sel].float().mean().item())
    return out


def made_by(name: str, cell: str) -> str:
    """The sweep command that trains a grid sweep's cell."""
    return f"`interp sweep configs/modular_{'phase' if 'n_layers=2' in cell else 'depth'}{'_p11' if name.startswith('modular-p11') else ''}.yaml`"


def card(name: str, ckpt: Checkpoint, cell: str) -> dict[str, Any]:
    t = ckpt.train
    value = measure(ckpt, "ood_acc_last_shot", n=N, seed=SEED)
    curves = interp.evaluate(ckpt, n=N, seed=SEED, baselines=False)
    by_shot = {c.split: dict(zip(c.shots, c.mean)) for c in curves.curves if c.method == "model"}
    shots = [s for s in (0, 1, 2, 4, 6, 8, 10, 12, 15, 20, 25, 31) if s in by_shot["ood_test"]]
    shot_rows = [{"split": sp, **{f"k={s}": by_shot[sp][s] for s in shots}} for sp in by_shot]
    reg = curves.kind_curve("ood_test", "regression")
    regression = dict(zip(reg.shots, reg.mean))
    if regression:
        shot_rows.append({"split": "ood_test, regression-only", **{f"k={s}": regression.get(s, float("nan")) for s in shots}})
    shot_rows.append({"split": "paper: OOD (p = 29, d = 2, Fig. 1c)", **{f"k={s}": PAPER_SHOTS.get(s, float("nan")) for s in shots}})
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    lines = [
        f"# {name}", "", SHIPPED[name][2], "",
        f"**Headline:** {HEADLINES['ood_acc_last_shot'][0]} = **{value:.4g}** ({N} sequences, seed {SEED}).", "",
        f"- made by: {MADE_BY.get(name, made_by(name, cell))} (cell `{cell}`); "
        f"the same run alone: `interp train --config configs/modular/{name}.yaml --out models/{name}`"
        + (f" (after the run it starts from, `{t['init_from']}`)" if t.get("init_from") else ""),
        f"- weights: {t.get('weights')}; training: {t.get('steps_done')} steps in {t.get('wall_s', 0) / 60:.1f} min on {t.get('hardware')}",
        f"- task: `{ckpt.task.describe()}`, {t['n_examples']} examples a sequence",
        f"- model: {ckpt.spec.n_layers} blocks, {ckpt.spec.n_heads} heads, d_model {ckpt.spec.d_model}, pre-LN, RoPE, ReLU MLP; {n_params:,} parameters",
        f"- paper: {PAPER}", "",
        f"## Accuracy by number of shots (exact match on z; chance 1/{ckpt.task.p})", "", *markdown_table(shot_rows), "",
    ]
    by_kind = kind_rows(curves)
    named = phase(curves.kind_metrics(), ckpt.task.p)
    lines += [
        "## Accuracy by kind of query (`interp.query_kinds`; averaged per task (a, b), then over tasks)", "",
        "Copyable: the (x, y) pair appeared earlier; ratio-matchable: a multiple c·(x_j, y_j) mod p of an earlier "
        "example; regression-only: neither, with at least 2 examples before it (only modular regression answers it).", "",
        *markdown_table(by_kind), "",
        f"Phase of these weights: **{named}**. Rule: {PHASE_RULE}", "",
    ]
    steps = [{"step": m["step"], **{k: m[k] for k in ("id_train_acc", "id_test_acc", "ood_train_acc", "ood_test_acc")}}
             for m in ckpt.metrics if "ood_test_acc" in m][1::2]
    lines += ["## Accuracy against training steps (averaged over shots; from metrics.jsonl)", "",
              f"Best OOD (held-out tasks and pairs) at step {t.get('best_step')} of {t.get('steps_done')}.", "",
              *markdown_table(steps), ""]
    content: dict[str, Any] = {"by_shot": by_shot, "by_kind": by_kind, "phase": named, "by_step": steps}
    if ckpt.spec.n_layers >= 2:
        heads = gather_heads(ckpt)
        layer0 = sorted((h for h in heads if h["layer"] == 0), key=lambda h: -(h["own_x"] + h["own_y"]))
        key = [(h["layer"], h["head"]) for h in layer0[:2]]
        ablation = resample_ablated_by_kind(ckpt, key)
        clean, ablated = ablation["all"]
        freqs = interp.mlp(ckpt, layer=0, seed=SEED).frequencies.metadata["key_frequencies"]
        alg = interp.algorithms(ckpt, shots=[k for k in (1, 2, 4, 8, 13, 15, 31) if k < int(t["n_examples"])], seed=SEED)
        alg_rows = [{"shots": k, "accuracy": float(alg.extras["accuracy"][i]), "ratio matching share": float(alg.extras["ratio_share"][i]),
                     "modular regression share": float(alg.extras["regression_share"][i])} for i, k in enumerate(alg.metadata["shots"])]
        geo = [{"layer": l, "head": h, **dict(zip(r.labels["measure"], r.scores.tolist()))}
               for l in range(ckpt.spec.n_layers) for h in range(ckpt.spec.n_heads)
               for r in [interp.geometry(ckpt, layer=l, head=h, seed=SEED)]]
        best_geo = max(geo, key=lambda g: g["outer x"] + g["inner y"])
        content |= {"heads": heads, "key_heads": key, "ablation": {kind: {"clean": c, "ablated": a} for kind, (c, a) in ablation.items()}, "key_frequencies": freqs, "algorithms": alg_rows, "geometry": geo}
        lines += [
            "## Heads that gather x and y of the same example", "",
            "Share of each head's attention to the previous token, to its own example's x and y (averaged over the "
            "positions where they are earlier), to itself and to token 0, from `interp attribute --method head_types`.", "",
            *markdown_table(heads), "",
            f"Key heads (layer 0, largest own-x + own-y share): {key}. Resample-ablating them (hook_z from "
            f"another sequence) moves the OOD accuracy (held-out tasks and pairs, last quarter of the shots, pooled over "
            f"sequences) from {clean:.3f} to {ablated:.3f}; by kind of query: "
            + "; ".join(f"{kind} {c:.3f} -> {a:.3f}" for kind, (c, a) in ablation.items() if kind != "all") + ".", "",
            f"Key frequencies of the embedding (`interp mlp --layer 0`, Fourier power of W_E standing at least 4x above the rest): "
            f"{freqs or 'none'} of the {(ckpt.task.p - 1) // 2} frequencies of Z_{ckpt.task.p}.", "",
            "## Ratio matching and modular regression by shots (He et al. Fig. 5; `interp algorithms`)", "",
            "Over the full (x, y) query grid with a fixed context: share of queries answered correctly, and of the "
            "correct answers the share that ratio matching / modular regression predicts.", "", *markdown_table(alg_rows), "",
            "## Circle of circles (`interp geometry`)", "",
            f"Best head: layer {best_geo['layer']} head {best_geo['head']} (outer x {best_geo['outer x']:.3f}, inner y {best_geo['inner y']:.3f}). All heads:", "",
            *markdown_table(geo), "",
        ]
    (MODELS / name / "CARD.md").write_text("\n".join(lines))
    content = {"name": name, "family": "modular", "cell": cell,
               "headline": {"metric": "ood_acc_last_shot", "label": HEADLINES["ood_acc_last_shot"][0], "value": value,
                            "n": N, "seed": SEED, "tolerance": {"rel": 0.02, "abs": 1e-3}},
               "params": n_params, "wall_s": t.get("wall_s"), "hardware": t.get("hardware"), "steps": t.get("steps_done"), **content}
    (MODELS / name / "card.json").write_text(json.dumps(content, indent=1))
    return content


def phase_figure(folder: str = "modular-phase", p: int = 7, n_big: int = 36, png: str = "modular_phase.png") -> None:
    """docs/modular_phase.png: phases over n_id x alpha (Fig. 1b), OOD accuracy against depth and against steps."""
    summaries = MODELS / folder
    sweep = json.loads((summaries / "sweep.json").read_text()) if (summaries / "sweep.json").is_file() else {"cells": []}
    for extra in ("main.json", "fewtasks.json"):  # a cell trained alone into the same runs folder (configs/modular_p11_main.yaml)
        if (summaries / extra).is_file():
            known = {c["name"] for c in sweep["cells"] if c["status"] == "done"}
            sweep["cells"] += [c for c in json.loads((summaries / extra).read_text())["cells"] if c["name"] not in known]
    depth = json.loads((summaries / "depth.json").read_text()) if (summaries / "depth.json").is_file() else {"cells": []}
    cells = [c for c in sweep["cells"] if c["status"] == "done"]
    phases = list(reversed(PHASES))  # not_learned first: the colour scale runs from nothing to OOD generalisation
    n_ids = sorted({c["params"]["task.n_tasks"] for c in cells})
    alphas = sorted({c["params"]["task.pair_fraction"] for c in cells})
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    axes = axes.flatten()
    # the phase of the checkpoint (its best-OOD step's weights, as sweep.json names it) and of the last step (the
    # same rule on the training log's last evaluation, sweep.phase): they differ where a cell's best OOD score
    # came before it memorised, the noise of a model at chance OOD
    named = {"checkpoint (best-OOD step)": lambda c: c.get("phase"), "last step (training log)": lambda c: phase(c["final"], p)}
    for ax, (when, name_of) in zip(axes[:2], named.items()):
        grid = torch.full((len(alphas), len(n_ids)), float("nan"))
        for c in cells:
            i, j = alphas.index(c["params"]["task.pair_fraction"]), n_ids.index(c["params"]["task.n_tasks"])
            name = name_of(c) or "no phase"  # too few regression-only queries to name one, or an old summary
            grid[i, j] = phases.index(name) if name in phases else float("nan")
            if when.startswith("checkpoint"):
                regression = (c.get("kinds") or {}).get("ood_test_acc_regression_last", float("nan"))
                note = f"step {c.get('best_ood_step')}\nOOD regr.-only {regression:.2f}"
            else:
                note = f"ID train {c['final']['id_train_acc']:.2f}\nOOD test {c['final']['ood_test_acc']:.2f}"
            ax.text(j, i, f"{name.replace('_', ' ')}\n{note}", ha="center", va="center", fontsize=7,
                    color="white" if name in phases[:2] else "black")
        ax.imshow(grid.numpy(), cmap="viridis", vmin=0, vmax=len(phases) - 1, origin="lower", aspect="auto")
        if bool(grid.isnan().all()):
            ax.text(0.5, 0.04, "this older summary's log has no by-kind accuracies to name a phase from",
                    ha="center", fontsize=8, transform=ax.transAxes)
        ax.set(xticks=range(len(n_ids)), xticklabels=[f"{n} ({n / p**2:.0%})" for n in n_ids], yticks=range(len(alphas)),
               yticklabels=alphas, xlabel=f"pre-training tasks n_id (share of p² = {p**2})", ylabel="pair fraction α",
               title=f"phase at the {when}, 2 blocks")
    axes = axes[1:]
    by_depth = {c["params"]["model.n_layers"]: c for c in depth["cells"] + cells
                if c["status"] == "done" and c["params"]["task.n_tasks"] == n_big and c["params"]["task.pair_fraction"] == 0.8}
    ds = sorted(by_depth)
    axes[1].plot(ds, [by_depth[d]["final"]["ood_test_acc"] for d in ds], "o-", label="final")
    axes[1].plot(ds, [by_depth[d]["best"]["ood_test_acc"] for d in ds], "s--", label="best during training")
    axes[1].set(xlabel="blocks", ylabel="OOD accuracy (held-out tasks and pairs)", title="OOD accuracy against depth", xticks=ds)
    axes[1].legend()
    for d in ds:
        curve = by_depth[d]["curve"]
        axes[2].plot(curve["step"], curve["ood_test_acc"], label=f"{d} block(s)")
    axes[2].set(xlabel="step", ylabel="OOD accuracy", title="OOD accuracy against steps")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(DOCS / png, dpi=110)
    plt.close(fig)


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names or list(SHIPPED):
        cell, weights, _ = SHIPPED[name]
        if not (runs_of(name) / cell / "config.json").is_file():
            print(f"{name}: cell {cell} has not been trained; skipped", flush=True)
            continue
        c = card(name, ship(name, cell, weights), cell)
        print(f"{name}: {c['headline']['label']} = {c['headline']['value']:.4g}", flush=True)
    if (MODELS / "modular-phase" / "sweep.json").is_file():
        phase_figure()
    if any((MODELS / "modular-phase-p11" / f).is_file() for f in ("sweep.json", "main.json")):
        phase_figure("modular-phase-p11", p=11, n_big=64, png="modular_phase_p11.png")


if __name__ == "__main__":
    main(sys.argv[1:])
