"""Which algorithm can answer a modular query (He et al. 2024), and accuracy averaged per task as in their code.

Example i of a sequence, used as the query given examples 0..i-1 (its shot count is i), is of one kind:

- ``COPYABLE``: the same (x, y) pair appeared earlier; copying its z answers it.
- ``RATIO`` (ratio-matchable): not copyable, but (x_q, y_q) = c·(x_j, y_j) mod p for an earlier j and some
  c ∈ Z_p; c·z_j answers it. c = 0 is included, so the query (0, 0) is ratio-matchable once there is any
  earlier example.
- ``REGRESSION`` (regression-only): neither, with at least 2 earlier examples: only combining several
  examples (modular regression) can answer it.
- ``NONE``: neither, with fewer than 2 earlier examples (shot 0, and unmatched shot-1 queries).

Copying is ratio matching with c = 1, so the kinds are exclusive in that order. The definitions are used as
written for every p, prime or not: c runs over all of Z_p, zero divisors included, and c·z_j is then the right
answer for any p (z is linear in (x, y)). For composite p the relation is not symmetric (2·(1, 0) = (2, 0) mod 4,
but (1, 0) is no multiple of (2, 0)). "Regression-only" says that no single example answers the query, not that
the context determines it: when every earlier example lies on one line through 0 mod p (or p is composite) the
answer can stay open; ``interp.baselines.mod_p_solver`` scores exactly the determined share.

Accuracy is computed per task (a, b) and then averaged over tasks, as ``val_loss_acc_icl`` in He et al.'s
``_src/train_utils.py`` does: within a task every query of a cell (a shot, a kind, or a pooled range of shots)
counts once; a task with no query in the cell is left out of that cell's average.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import einops
import torch
from torch import Tensor

COPYABLE, RATIO, REGRESSION, NONE = 0, 1, 2, 3
KINDS = (COPYABLE, RATIO, REGRESSION)
KIND_NAMES = ("copyable", "ratio-matchable", "regression-only")
KIND_KEYS = ("copyable", "ratio", "regression")  # the kinds in metric names: ood_test_acc_regression, ...
GROUPS = ("all", *KIND_KEYS)  # the rows of a by-kind table: every query (NONE included), then each kind
GROUP_NAMES = ("all queries", *KIND_NAMES)


def classify_queries(pairs: Tensor, p: int) -> Tensor:
    """The kind of each example as a query given the examples before it: (x, y) pairs [batch, k, 2] long ->
    [batch, k] long codes (COPYABLE, RATIO, REGRESSION or NONE)."""
    if pairs.ndim != 3 or pairs.shape[-1] != 2 or pairs.is_floating_point():
        raise ValueError(f"pairs must be [batch, k, 2] integers, got {tuple(pairs.shape)} {pairs.dtype}")
    k = pairs.shape[1]
    pairs = pairs % p
    code = pairs[..., 0] * p + pairs[..., 1]  # one integer per pair: [batch, k]
    earlier = torch.ones(k, k, dtype=torch.bool, device=pairs.device).tril(-1)  # [query i, example j]: j < i
    copy = (code[:, :, None] == code[:, None, :]) & earlier  # [batch, i, j]
    multiple = torch.zeros_like(copy)
    for c in range(p):  # one comparison per multiplier: memory stays [batch, k, k] for any p
        scaled = (c * pairs[..., 0] % p) * p + c * pairs[..., 1] % p  # c·(x_j, y_j) as a code: [batch, j]
        multiple |= code[:, :, None] == scaled[:, None, :]
    copyable, ratio = copy.any(-1), (multiple & earlier).any(-1)
    n_before = torch.arange(k, device=pairs.device).expand_as(code)
    kinds = torch.where(n_before >= 2, REGRESSION, NONE)
    kinds = torch.where(ratio, RATIO, kinds)
    return torch.where(copyable, COPYABLE, kinds)


def task_ids(params: dict[str, Tensor], p: int) -> Tensor:
    """One id per sequence for its task (a, b): a·p + b, [batch] long."""
    return params["a"] * p + params["b"]


def last_region(k: int) -> list[int]:
    """The loss positions of the last-shot region: the last quarter of the k shots (at least the last one)."""
    return list(range(k - max(1, k // 4), k))


class TaskAveraged(NamedTuple):
    """Accuracy per cell averaged per task then over tasks (NaN where no task has a query), with the number of
    queries and of tasks behind each cell."""

    acc: Tensor
    n_queries: Tensor
    n_tasks: Tensor


def group_masks(kinds: Tensor) -> Tensor:
    """Which queries each group of GROUPS holds: kinds [batch, k] -> [group, batch, k] bool."""
    return torch.stack([torch.ones_like(kinds, dtype=torch.bool), *(kinds == c for c in KINDS)])


def task_averaged(correct: Tensor, tasks: Tensor, kinds: Tensor, positions: Sequence[int] | None = None) -> TaskAveraged:
    """Accuracy by group (GROUPS) and shot, averaged per task then over tasks.

    correct [batch, k] (bool or 0/1), tasks [batch] (``task_ids``), kinds [batch, k] (``classify_queries``) ->
    acc, n_queries, n_tasks each [group, k]; with ``positions`` those loss positions are pooled within each task
    into one cell per group: each [group]."""
    unique, task = torch.unique(tasks, return_inverse=True)
    masks = einops.rearrange(group_masks(kinds), "g b k -> b g k").to(torch.float64)
    shape = (len(unique), *masks.shape[1:])  # [task, group, k]: sums of exact 0/1 values, in any order
    hits = masks.new_zeros(shape).index_add_(0, task, masks * correct.to(torch.float64)[:, None])
    counts = masks.new_zeros(shape).index_add_(0, task, masks)
    if positions is not None:
        hits, counts = hits[..., list(positions)].sum(-1), counts[..., list(positions)].sum(-1)
    present = counts > 0
    per_task = torch.where(present, hits / counts.clamp(min=1), 0.0)
    n_tasks = present.sum(0)
    acc = per_task.sum(0) / n_tasks  # 0 / 0 = NaN where no task has a query
    return TaskAveraged(acc, counts.sum(0).long(), n_tasks.long())


def metric_key(group: str, *, last: bool = False, count: bool = False) -> str:
    """The name of a group's accuracy (or query count) in a metrics record, after the split: ``acc``,
    ``acc_last``, ``acc_ratio``, ``acc_regression_last``, ``n_regression_last``, ..."""
    name = ("n" if count else "acc") + ("" if group == "all" else f"_{group}")
    return name + ("_last" if last else "")


def kind_metrics(correct: Tensor, tasks: Tensor, kinds: Tensor, *, counts: bool = False) -> dict[str, float]:
    """The flat record of one evaluation set: ``acc`` over all shots and ``acc_last`` over the last-shot region
    (``last_region``), and the same per kind (``acc_copyable``, ..., ``acc_regression_last``), each averaged per
    task then over tasks. A kind with no query in a cell has no key; ``counts`` adds the query counts (``n_...``).
    Shapes as in ``task_averaged``."""
    pooled = {False: task_averaged(correct, tasks, kinds, range(correct.shape[1])),
              True: task_averaged(correct, tasks, kinds, last_region(correct.shape[1]))}
    out: dict[str, float] = {}
    for last, r in pooled.items():
        for g, group in enumerate(GROUPS):
            if r.n_queries[g] > 0:
                out[metric_key(group, last=last)] = r.acc[g].item()
                if counts:
                    out[metric_key(group, last=last, count=True)] = int(r.n_queries[g])
    return out


def correct_by_example(pred: Tensor, targets: Tensor, loss_mask: Tensor) -> Tensor:
    """Exact match at the loss positions, one per example: [batch, pos] x2, mask -> [batch, k] bool."""
    hits = (pred == targets)[loss_mask]
    return einops.rearrange(hits, "(b k) -> b k", b=targets.shape[0])
