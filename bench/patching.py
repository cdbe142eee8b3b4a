"""Exact activation patching: probes.patching against transformer_lens.patching, same model, same inputs.

    python bench/patching.py [--batch 8] [--threads 2] [--train-steps 60] [--repeats 3] [--max-batch 512]

Model: a 2-layer modular model (p = 29, d_model 128, 4 heads, d_mlp 512, 32 examples -> 95 tokens), trained
for ``--train-steps`` steps so the metric is not degenerate (timing does not depend on the weights).
Inputs: ``--batch`` clean sequences and their "params" corruption (same (x, y) pairs, a new (a, b)); metric:
logit difference at the query, batch mean.

Timed, each on the same model and inputs:
(a) head by position (hook_z of every layer, head, position): ``patch(..., site="z", by="head_pos")`` against
    ``get_act_patch_attn_head_out_by_pos``;
(b) resid_pre by position: ``patch(..., site="resid_pre")`` against ``get_act_patch_resid_pre``.
TransformerLens's time includes its clean-cache run, ours includes both of our cache runs. TransformerLens runs
once per sweep (it is slow), ours ``--repeats`` times, median reported. Agreement is max |Δ| of the raw metric.
(c) when probes/attribution.py offers ``attribution_patch``: its time and its Pearson / Spearman correlation
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

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformer_lens.patching as tl_patching  # noqa: E402

from interp.spec import ModelSpec  # noqa: E402
from interp.tasks import ModularTask  # noqa: E402
from interp.train import TrainConfig, train  # noqa: E402
from probes.metrics import Answers, at_query, logit_diff  # noqa: E402
from probes.patching import patch  # noqa: E402

# TransformerLens draws a progress bar per sweep; drawing it is not part of the work being compared
tl_patching.tqdm = lambda it, **_: it  # type: ignore[assignment]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    runs = [timed(fn) for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="clean sequences (and as many corrupted)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="runs of ours per sweep (median)")
    ap.add_argument("--max-batch", type=int, default=512, help="sequences per forward pass in ours")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    task, n_examples = ModularTask(p=29), 32
    spec = ModelSpec.for_task(task, n_examples, n_layers=2, n_heads=4, d_model=128, d_mlp=512, act_fn="relu")
    t_train, ckpt = timed(lambda: train(task, spec, TrainConfig(steps=args.train_steps, batch_size=32, n_examples=n_examples,
                                                                 eval_every=10**9, eval_size=16, warmup_steps=10, device="cpu"),
                                        progress=False))
    model = ckpt.model.eval()
    g = torch.Generator().manual_seed(1)
    clean = task.sample(args.batch, n_examples, g)
    corrupted = task.corrupt(clean, "params", g)
    answers, q = Answers.of(clean, corrupted), clean.query_pos

    def tl_metric(logits: Tensor) -> Tensor:
        return logit_diff(at_query(logits, clean), answers).mean()

    def tl_sweep(fn: Callable) -> Tensor:
        _, cache = model.run_with_cache(clean.inputs)
        return fn(model, corrupted.inputs, cache, tl_metric)

    def ours(site: str, by: str | None) -> object:
        return patch(model, task, clean, corrupted, site=site, by=by, metric="logit_diff", max_batch=args.max_batch)

    print(f"machine: {machine()}")
    print(f"model: 2 layers, 4 heads, d_model 128, d_mlp 512, {clean.inputs.shape[1]} tokens; batch {args.batch}; "
          f"trained {args.train_steps} steps ({t_train:.1f} s); query at {q}")
    with torch.no_grad():
        out_clean, out_corr = model(clean.inputs), model(corrupted.inputs)
    print(f"metric: logit_diff, clean {tl_metric(out_clean).item():.3f}, corrupted {tl_metric(out_corr).item():.3f}")

    speedups, tl_times = {}, {}
    for label, site, by, tl_fn, order in [
        ("head by position (z)", "z", "head_pos", tl_patching.get_act_patch_attn_head_out_by_pos, (0, 2, 1)),
        ("resid_pre by position", "resid_pre", None, tl_patching.get_act_patch_resid_pre, (0, 1)),
    ]:
        t_ours, result = median_time(lambda: ours(site, by), args.repeats)
        t_tl, ref = timed(lambda: tl_sweep(tl_fn))
        ref = ref.permute(*order)  # TransformerLens lays heads last: [layer, pos, head]
        delta = (result.extras["metric"] - ref).abs().max().item()
        meta = result.metadata
        speedups[site], tl_times[site] = t_tl / t_ours, t_tl
        print(f"\n{label}: {meta['n_variants']} variants, {meta['n_patched_runs']} need a patched run, "
              f"{meta['n_forward_passes']} forward passes")
        print(f"  transformer_lens.patching: {t_tl:8.2f} s")
        print(f"  probes.patching:           {t_ours:8.2f} s  (median of {args.repeats})")
        print(f"  max |Δ| = {delta:.2e}  {'OK' if delta <= 1e-5 else 'MISMATCH'}")
        print(f"  ratio: {speedups[site]:.1f}x")
        if site == "z":
            exact_head_pos = ref

    print(f"\nspeed-up: {speedups['z']:.1f}")
    print(f"speed-up resid_pre: {speedups['resid_pre']:.1f}")
    attribution_section(model, task, clean, corrupted, exact_head_pos, tl_times["z"])


def attribution_section(model, task, clean, corrupted, exact_head_pos: Tensor, t_tl_head: float) -> None:
    """Attribution patching against TransformerLens's exact head-by-position sweep, when probes.attribution has it."""
    try:
        from probes.attribution import attribution_patch, correlation
    except ImportError as e:
        print(f"\nattribution patching: skipped (probes.attribution does not offer it yet: {e})")
        return
    t_attr, result = median_time(lambda: attribution_patch(model, task, clean, corrupted, site="head_pos", metric="logit_diff"), 3)
    corr = correlation(result, exact_head_pos)  # correlation ignores the offset: exact is the patched metric itself
    print(f"\nattribution patching (head by position): {t_attr:.3f} s (median of 3), "
          f"{t_tl_head / t_attr:.0f}x faster than TransformerLens's exact sweep")
    print(f"  against TransformerLens's exact sweep: Pearson {corr['pearson']:.3f}, Spearman {corr['spearman']:.3f} "
          f"over {int(corr['n'])} cells")


if __name__ == "__main__":
    main()
