"""How far one training step moves each block under Cheng et al.'s per-layer clipping, before and after the
official clipping constant grows tenfold at step 8,000 (run-exp.ipynb: 1e-8, then 1e-7).

    python scripts/cheng_clip_step.py runs/cheng-converged-cpu/<cell> --step 6158

The rule clips block i's gradient to norm clip / (9 - i)^2, far below AdamW's eps (1e-8): each coordinate's
sqrt(v) is then much smaller than eps, so AdamW's update lr * m / (sqrt(v) + eps) is about lr * m / eps, and a
block moves by about lr * clip / ((9 - i)^2 * eps) per step. The tenfold clip is a tenfold step. This script
measures it: from the weights at ``--step`` (a snapshot), it takes ``--steps`` training steps at each constant,
from the same weights, batches and fresh optimizer state, and prints each block's mean step norm, the bound
lr * clip / ((9 - i)^2 * eps), and the largest sqrt(v) / eps seen.
"""
from __future__ import annotations

import argparse
import copy

import torch

from interp import load
from interp.checkpoint import Checkpoint
from interp.config import load_run
from interp.train import TrainConfig, make_optimizer, train_batch, train_step


def block_vector(block: torch.nn.Module) -> torch.Tensor:
    """All of a block's parameters as one flat vector (a copy)."""
    return torch.cat([p.detach().flatten() for p in block.parameters()])


def block_steps(ckpt: Checkpoint, cfg: TrainConfig, clip: float, steps: int) -> tuple[list[float], float]:
    """Mean step norm per block over ``steps`` steps at constant ``clip``, and the largest sqrt(v)/eps."""
    model = copy.deepcopy(ckpt.model).train()
    optimizer = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    moved = torch.zeros(len(model.blocks))
    ratio = 0.0
    batch = None
    for step in range(steps):
        if step % cfg.resample_every == 0 or batch is None:
            batch = train_batch(ckpt.task, cfg, step, g)
        before = [block_vector(b) for b in model.blocks]
        train_step(model, optimizer, batch, cfg.lr, cfg.grad_clip, clip)
        for i, b in enumerate(model.blocks):
            moved[i] += torch.linalg.vector_norm(block_vector(b) - before[i])
        eps = optimizer.param_groups[0]["eps"]
        bias2 = 1 - optimizer.param_groups[0]["betas"][1] ** (step + 1)
        for state in optimizer.state.values():
            ratio = max(ratio, (state["exp_avg_sq"] / bias2).sqrt().max().item() / eps)
    return (moved / steps).tolist(), ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", help="a Cheng checkpoint folder trained with layer_clip")
    ap.add_argument("--step", type=int, default=None, help="start from this weight snapshot (default: the final weights)")
    ap.add_argument("--steps", type=int, default=30, help="training steps measured at each constant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = load(args.ckpt, step=args.step)
    cfg = load_run(f"{args.ckpt}/config.json").train
    clips = [cfg.layer_clip] + ([cfg.layer_clip_after[1]] if cfg.layer_clip_after else [10 * cfg.layer_clip])
    norms = ", ".join(f"{torch.linalg.vector_norm(block_vector(b)):.3g}" for b in ckpt.model.blocks)
    eps = make_optimizer(copy.deepcopy(ckpt.model), cfg).defaults["eps"]
    print(f"{args.ckpt} at step {ckpt.step or 'final'}: lr {cfg.lr}, {args.steps} steps from the same weights; "
          f"block weight norms {norms}")
    for clip in clips:
        moved, ratio = block_steps(ckpt, cfg, clip, args.steps)
        bounds = [cfg.lr * clip / ((9 - i) ** 2 * eps) for i in range(len(moved))]
        shown = ", ".join(f"block {i}: {m:.2e} (bound {b:.2e})" for i, (m, b) in enumerate(zip(moved, bounds)))
        print(f"clip {clip:.0e}: mean step norm {shown}; largest sqrt(v)/eps {ratio:.2g}")


if __name__ == "__main__":
    main()
