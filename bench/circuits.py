"""Exact edge patching: probes.circuits.edge_patch (batched) against the plain loop, one hooked forward pass of the
whole model per edge (probes.circuits.edge_patch_loop), same model, same inputs, measured side by side.

    python bench/circuits.py [--models models/modular-p11-d2 models/linear-d5] [--batch 16] [--repeats 3]
                             [--threads 1] [--positions all] [--direction denoise]

For each zoo model: ``--batch`` clean sequences of its task and their "params" corruption (seed 0), the task's
default metric, every edge of the graph (positions "all": one patch per edge). The loop and the batched sweep run
alternately ``--repeats`` times, so that both see the same load on a shared machine; the ratio is the loop's total
time over the batched sweep's (each includes its two cached runs), with the ratio of the best runs beside it.
Agreement: max |Δ| of the raw batch-mean metric of every edge, asserted <= 1e-5. Then EAP and EAP-IG (5 steps): their time and their Pearson and Spearman
correlation (scipy.stats) with the exact scores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.checkpoint import load_checkpoint  # noqa: E402
from probes.circuits import CircuitSettings, correlation, edge_attribution, edge_patch, edge_patch_loop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_model(path: Path, batch: int, repeats: int, positions: str, direction: str) -> float:
    ckpt = load_checkpoint(path)
    model, task, n_examples = ckpt.model, ckpt.task, ckpt.train["n_examples"]
    g = torch.Generator().manual_seed(0)
    clean = task.sample(batch, n_examples, g)
    corrupted = task.corrupt(clean, "params", g)
    settings = CircuitSettings(positions=positions, direction=direction)
    cfg = model.cfg
    print(f"\n{path.name}: {cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, "
          f"{'attention-only' if cfg.attn_only else f'd_mlp {cfg.d_mlp}'}, {clean.inputs.shape[1]} positions, "
          f"batch {batch}, query at {clean.query_pos}")
    edge_patch(model, task, clean, corrupted, settings)  # warm-up: allocations, lazy imports
    loops, fasts = [], []
    for _ in range(repeats):
        t, plain = timed(lambda: edge_patch_loop(model, task, clean, corrupted, settings))
        loops.append(t)
        t, fast = timed(lambda: edge_patch(model, task, clean, corrupted, settings))
        fasts.append(t)
    t_loop, t_fast = sum(loops), sum(fasts)
    delta = (fast.extras["metric"] - plain.extras["metric"]).abs().max().item()
    n_edges = fast.scores.numel()
    print(f"  metric {fast.metadata['metric']}: clean {fast.metadata['clean_metric']:.4f}, "
          f"corrupted {fast.metadata['corrupted_metric']:.4f}")
    print(f"  {n_edges} edges; the loop: {plain.metadata['n_forward_passes']} forward passes, "
          f"batched: {fast.metadata['n_forward_passes']}")
    print(f"  plain loop (one hooked forward per edge): {t_loop / repeats:8.3f} s  (mean of {repeats}; "
          f"best {min(loops):.3f} s)")
    print(f"  probes.circuits.edge_patch (batched):     {t_fast / repeats:8.3f} s  (mean of {repeats}; "
          f"best {min(fasts):.3f} s)")
    print(f"  max |Δ| = {delta:.2e}  {'OK' if delta <= TOL else 'MISMATCH'}")
    # the ratio of the means is the headline; the ratio of the best runs (timeit's convention) is printed beside it,
    # since a burst of load on a shared machine weighs more on the short batched run than on the loop
    print(f"  ratio: {t_loop / t_fast:.1f}x (of the means; of the best runs {min(loops) / min(fasts):.1f}x)")
    assert delta <= TOL, f"batched edge patching differs from the loop by {delta:.2e} on {path.name}"
    for method in ("eap", "eap-ig"):
        t, est = timed(lambda: edge_attribution(model, task, clean, corrupted,
                                                CircuitSettings(method=method, positions=positions, direction=direction)))
        corr = correlation(est, fast)
        print(f"  {method:6s} {t:6.3f} s: Pearson {corr['pearson']:.3f}, Spearman {corr['spearman']:.3f} "
              f"against exact over {int(corr['n'])} edges")
    return t_loop / t_fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["models/modular-p11-d2", "models/linear-d5"])
    ap.add_argument("--batch", type=int, default=16, help="clean sequences (and as many corrupted)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--positions", default="all", choices=("all", "query", "each"))
    ap.add_argument("--direction", default="denoise", choices=("denoise", "noise"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    ratios = {}
    with torch.no_grad():
        for m in args.models:
            path = Path(m) if Path(m).is_absolute() else ROOT / m
            ratios[path.name] = bench_model(path, args.batch, args.repeats, args.positions, args.direction)
    print()
    for name, ratio in ratios.items():
        print(f"speed-up {name}: {ratio:.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
