"""Exact activation patching: probes.patching against transformer_lens.patching, same model, same inputs.

    python bench/patching.py [--batch 8] [--threads 2] [--blocks 40] [--max-batch 512] [--train-steps 0]

Model: a 2-layer modular model (p = 29, d_model 128, 4 heads, d_mlp 512, 32 examples -> 95 tokens), freshly
initialised, or trained for ``--train-steps`` steps (the timings do not depend on the weights; a few hundred
steps do not teach this task in context anyway). Inputs: ``--batch`` clean sequences and their "params"
corruption (same (x, y) pairs, a new (a, b)); metric: logit difference at the query, batch mean.

Timed on the same model and inputs:
(a) head by position (hook_z of every layer, head, position): ``patch(..., site="z", by="head_pos")`` against
    ``get_act_patch_attn_head_out_by_pos``;
(b) resid_pre by position: ``patch(..., site="resid_pre")`` against ``get_act_patch_resid_pre``.
The machine is shared, and its load can change within one TransformerLens sweep (minutes). So the sweep is
run as ``--blocks`` calls of the same TransformerLens function, each on a slice of its index frame
(``index_df``; the per-cell work is the same as in one call), and a full run of ours follows every block.
TransformerLens's time is the sum over blocks plus its clean-cache run; ours (both cache runs included) is the
mean of its runs (a mean, not a median, so that our runs pay for load spikes as TransformerLens's blocks do).
Agreement: max |Δ| of the raw metric (batch-mean logit difference after each patch).
(c) when probes/attribution_patching.py offers ``attribution_patch``: its time and its Pearson / Spearman correlation
    with TransformerLens's exact head-by-position sweep.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformer_lens.patching as tl_patching  # noqa: E402

from interp.spec import ModelSpec  # noqa: E402
from interp.tasks import ModularTask  # noqa: E402
from interp.train import TrainConfig, train  # noqa: E402
from probes.metrics import Answers, at_query, logit_diff  # noqa: E402
from probes.patching import patch  # noqa: E402

# TransformerLens draws a progress bar per call; drawing it is not part of the work being compared
tl_patching.tqdm = lambda it, **_: it  # type: ignore[assignment]

# (label, our site, our by, TransformerLens function, its index axes, permutation of its output into our layout)
SWEEPS = [
    ("head by position (z)", "z", "head_pos", tl_patching.get_act_patch_attn_head_out_by_pos, ("layer", "pos", "head"), (0, 2, 1)),
    ("resid_pre by position", "resid_pre", None, tl_patching.get_act_patch_resid_pre, ("layer", "pos"), (0, 1)),
]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"load average {load:.2f}")


def interleaved(tl_block: Callable[[np.ndarray], Tensor], n_cells: int, ours: Callable[[], object],
                n_blocks: int) -> tuple[float, Tensor, list[float], object]:
    """(TransformerLens time, its flat output, our run times, our last result): one run of ours after each block."""
    tl_time, tl_parts, our_times, result = 0.0, [], [], None
    for cells in np.array_split(np.arange(n_cells), n_blocks):
        t, part = timed(lambda: tl_block(cells))
        tl_time, tl_parts = tl_time + t, tl_parts + [part]
        t, result = timed(ours)
        our_times.append(t)
    return tl_time, torch.cat(tl_parts), our_times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="clean sequences (and as many corrupted)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=40, help="TransformerLens calls per sweep, each followed by a run of ours")
    ap.add_argument("--max-batch", type=int, default=512, help="sequences per forward pass in ours")
    ap.add_argument("--train-steps", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    task, n_examples = ModularTask(p=29), 32
    spec = ModelSpec.for_task(task, n_examples, n_layers=2, n_heads=4, d_model=128, d_mlp=512, act_fn="relu")
    if args.train_steps:
        cfg = TrainConfig(steps=args.train_steps, batch_size=32, n_examples=n_examples, eval_every=10**9, eval_size=16,
                          warmup_steps=10, device="cpu")
        model = train(task, spec, cfg, progress=False).model.eval()
    else:
        model = spec.build().eval()
    g = torch.Generator().manual_seed(1)
    clean = task.sample(args.batch, n_examples, g)
    corrupted = task.corrupt(clean, "params", g)
    answers, q = Answers.of(clean, corrupted), clean.query_pos
    sizes = {"layer": model.cfg.n_layers, "head": model.cfg.n_heads, "pos": clean.inputs.shape[1]}

    def tl_metric(logits: Tensor) -> Tensor:
        return logit_diff(at_query(logits, clean), answers).mean()

    print(f"machine: {machine()}")
    print(f"model: 2 layers, 4 heads, d_model 128, d_mlp 512, {clean.inputs.shape[1]} tokens; batch {args.batch}; "
          f"trained {args.train_steps} steps; query at {q}")
    with torch.no_grad():
        out_clean, out_corr = model(clean.inputs), model(corrupted.inputs)
    print(f"metric: logit_diff, clean {tl_metric(out_clean).item():.3f}, corrupted {tl_metric(out_corr).item():.3f}")

    speedups, tl_times, exact = {}, {}, {}
    for label, site, by, tl_fn, axes, order in SWEEPS:
        shape = [sizes[a] for a in axes]
        index_df = tl_patching.make_df_from_ranges(shape, list(axes))
        t_cache, (_, clean_cache) = timed(lambda: model.run_with_cache(clean.inputs))

        def tl_block(cells: np.ndarray) -> Tensor:
            return tl_fn(model, corrupted.inputs, clean_cache, tl_metric, index_axis_names=None, index_df=index_df.iloc[cells])

        def ours() -> object:
            return patch(model, task, clean, corrupted, site=site, by=by, metric="logit_diff", max_batch=args.max_batch)

        t_tl, flat, our_times, result = interleaved(tl_block, len(index_df), ours, args.blocks)
        t_tl += t_cache
        ref = flat.reshape(shape).permute(*order)  # TransformerLens lays heads last: [layer, pos, head]
        t_ours = statistics.mean(our_times)
        delta = (result.extras["metric"] - ref).abs().max().item()
        meta = result.metadata
        speedups[site], tl_times[site], exact[site] = t_tl / t_ours, t_tl, ref
        print(f"\n{label}: {meta['n_variants']} variants, {meta['n_patched_runs']} need a patched run, "
              f"{meta['n_forward_passes']} forward passes (TransformerLens: {len(index_df)})")
        print(f"  transformer_lens.patching: {t_tl:8.2f} s  (sum of {args.blocks} calls + clean cache)")
        print(f"  probes.patching:           {t_ours:8.2f} s  (mean of {len(our_times)} runs; median "
              f"{statistics.median(our_times):.2f} s, range {min(our_times):.2f}-{max(our_times):.2f} s)")
        print(f"  max |Δ| = {delta:.2e}  {'OK' if delta <= 1e-5 else 'MISMATCH'}")
        print(f"  ratio: {speedups[site]:.1f}x")

    print(f"\nspeed-up: {speedups['z']:.1f}")
    print(f"speed-up resid_pre: {speedups['resid_pre']:.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    attribution_section(model, task, clean, corrupted, exact["z"], tl_times["z"])


def attribution_section(model, task, clean, corrupted, exact_head_pos: Tensor, t_tl_head: float) -> None:
    """Attribution patching against TransformerLens's exact head-by-position sweep, when probes.attribution_patching has it."""
    try:
        from probes.attribution_patching import attribution_patch, correlation
    except ImportError as e:
        print(f"\nattribution patching: skipped (probes.attribution_patching does not offer it yet: {e})")
        return
    times = [timed(lambda: attribution_patch(model, task, clean, corrupted, site="head_pos", metric="logit_diff"))
             for _ in range(3)]
    t_attr, result = statistics.median(t for t, _ in times), times[-1][1]
    corr = correlation(result, exact_head_pos)  # correlation ignores the offset: exact is the patched metric itself
    print(f"\nattribution patching (head by position): {t_attr:.3f} s (median of 3), "
          f"{t_tl_head / t_attr:.0f}x faster than TransformerLens's exact sweep")
    print(f"  against TransformerLens's exact sweep: Pearson {corr['pearson']:.3f}, Spearman {corr['spearman']:.3f} "
          f"over {int(corr['n'])} cells")


if __name__ == "__main__":
    main()
