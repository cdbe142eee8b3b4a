"""Probe targets: per-sequence quantities of a task that a linear probe (``probes.probing``) may try to read.

Each task class names its own in ``probe_targets``; the pieces several tasks share live here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import einops
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .base import Batch, TaskBase

TargetKind = Literal["regression", "classification"]


@dataclass(frozen=True)
class Target:
    """A named probe target: ``fn(task, batch) -> [batch, ...]`` (float for regression, long for classes)."""

    fn: Callable[["TaskBase", "Batch"], Tensor]
    kind: TargetKind
    doc: str


def context(batch: "Batch") -> tuple[Tensor, Tensor, Tensor]:
    """Regression context before the query, float64: xs [batch, k-1, d_x], ys [batch, k-1, d_y], query x [batch, d_x]."""
    xs = batch.examples.double()  # type: ignore[union-attr]
    ys = einops.rearrange(batch.targets[batch.loss_mask].double(), "(b k) d -> b k d", b=xs.shape[0])
    return xs[:, :-1], ys[:, :-1], xs[:, -1]


def y_query(task: "TaskBase", batch: "Batch") -> Tensor:
    return batch.targets[:, batch.query_pos]


def x_query(task: "TaskBase", batch: "Batch") -> Tensor:
    return batch.examples[:, -1]  # type: ignore[index]


def param(name: str) -> Callable[["TaskBase", "Batch"], Tensor]:
    """The task parameter ``name`` of each sequence, ``batch.params[name]``."""
    return lambda task, batch: batch.params[name]


def least_squares_pred(task: "TaskBase", batch: "Batch") -> Tensor:
    """Minimum-norm least squares on the context, predicted at the query: [batch, d_y]."""
    xs, ys, xq = context(batch)
    return einops.einsum(xq, torch.linalg.pinv(xs) @ ys, "b d, b d o -> b o").float()


QUERY: dict[str, Target] = {
    "y_query": Target(y_query, "regression", "the target at the query"),
    "x_query": Target(x_query, "regression", "the query input x"),
}
"""The targets every regression task with a query has."""
