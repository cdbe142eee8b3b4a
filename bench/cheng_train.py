"""Training step of Cheng et al.'s restricted layer: the fused passes against TransformerLens's own forward.

    python bench/cheng_train.py [--batch-size 3000] [--layers 3] [--scorings relu,exp,softmax,linear]
                                [--steps 10] [--repeats 5] [--threads 1]

Three ways to run one training step (``interp.train.train_step``: forward, backward, their per-layer clipping,
AdamW) of the same model on the same pre-sampled batches of ``configs/cheng/base.yaml``'s task:

- **TL path** (the anchor): TransformerLens's forward with the scoring and mask hooks, what runs whenever a user
  hook is attached (the model in eval mode, which changes nothing else here: no dropout, no norm);
- **general fused**: ``ChengBlock.fused_general``, every projection, bias and W_O (what a block takes once it
  leaves the official form);
- **official fused**: ``ChengBlock.forward`` in the official form (zero frozen biases, identity W_O).

The three are timed in alternating blocks of ``--steps`` steps (order reversed every round), so load from
other processes hits them alike; the table gives the median ms a step and each one's speed-up over the anchor.
Before timing, the script checks that the three give the same outputs and gradients (max |Δ| printed).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from contextlib import contextmanager
from typing import Iterator
from unittest import mock

import torch

from interp.config import read_config_file, run_from_dict, with_overrides
from interp.tasks import Batch
from interp.train import layer_clip_at, make_optimizer, train_batch, train_step

MODES = ("TL path", "general fused", "official fused")


@contextmanager
def mode(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Run ``model`` in one of ``MODES`` inside the block."""
    model.train(name != "TL path")
    if name == "general fused":
        with mock.patch("interp.cheng.official_form", lambda attn: False):
            yield
    else:
        yield


def gradients(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output and the trainable parameters' gradients of the summed squared output."""
    model.zero_grad()
    out = model(batch.inputs)
    out.pow(2).mean().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def bench_scoring(args: argparse.Namespace, scoring: str) -> dict[str, list[float]]:
    run = run_from_dict(with_overrides(read_config_file("configs/cheng/base.yaml"),
                                       {"model.scoring": scoring, "model.n_layers": args.layers,
                                        "train.batch_size": args.batch_size}))
    g = torch.Generator().manual_seed(0)
    batches = [train_batch(run.task, run.train, 0, g) for _ in range(2)]
    models = {}
    for name in MODES:  # same seed: the same weights
        models[name] = run.spec.build()
        models[name] = (models[name], make_optimizer(models[name], run.train))
    reference = None
    for name, (model, _) in models.items():
        with mode(model, name):
            out, grads = gradients(model, batches[0])
        if reference is None:
            reference = (out, grads)
            continue
        diff = max([(out - reference[0]).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(grads, reference[1])])
        print(f"  {scoring}: {name} against the TL path: max |Δ| (output, gradients) = {diff:.2g}")
        assert diff < 1e-4, f"{name} differs from TransformerLens's path by {diff}"
    clip = layer_clip_at(0, run.train)

    def block(name: str, steps: int) -> float:
        model, opt = models[name]
        with mode(model, name):
            t0 = time.perf_counter()
            for i in range(steps):
                train_step(model, opt, batches[i % 2], run.train.lr, run.train.grad_clip, clip)
            return (time.perf_counter() - t0) / steps * 1e3

    for name in MODES:
        block(name, 2)  # warm-up
    ms: dict[str, list[float]] = {name: [] for name in MODES}
    for r in range(args.repeats):
        for name in MODES if r % 2 == 0 else MODES[::-1]:
            ms[name].append(block(name, args.steps))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=3000)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--scorings", default="relu,exp,softmax,linear")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s); batch {args.batch_size}, {args.layers} layers, median of {args.repeats} blocks "
          f"of {args.steps} steps")
    rows = []
    for scoring in args.scorings.split(","):
        ms = bench_scoring(args, scoring)
        rows.append((scoring, {name: statistics.median(v) for name, v in ms.items()}))
    print(f"\n| activation | {' | '.join(f'{m} ms/step' for m in MODES)} | general fused / TL | official fused / TL |")
    print("|---" * (len(MODES) + 3) + "|")
    for scoring, med in rows:
        anchor = med["TL path"]
        print(f"| {scoring} | {' | '.join(f'{med[m]:.1f}' for m in MODES)} | {anchor / med['general fused']:.2f}x "
              f"| {anchor / med['official fused']:.2f}x |")


if __name__ == "__main__":
    main()
