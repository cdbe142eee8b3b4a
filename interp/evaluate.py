"""Error (or accuracy) against the number of in-context examples, for a model beside its baselines.

Regression error is Garg et al.'s: the squared error (summed over output channels) divided by a constant d,
``squared_error_over_d``, named "squared error / d" in every table. d is the task's ``error_scale`` (d_x unless
the task says otherwise), as the official code divides by n_dims (github dtsip/in-context-learning,
``src/plot_utils.py``); for y = w·x with x, w ~ N(0, I_d) the zero predictor scores 1 on average. This one
function is the training log's ``error`` (pooled over the loss positions), ``evaluate``'s curves (per
position), ``error_vs_scale`` and the probes' default regression metric. The repo's earlier metric, each
position over the batch mean of y² there, is kept as "error / mean y²" (``ERROR_OVER_MEAN_Y2``) for the
tables made with it. Modular tasks report exact-match accuracy. Every curve is measured on the task and on
``task.ood()`` (or on He et al.'s four sets), with a 95% confidence interval of the mean over sequences.

Modular tasks also get by-kind curves (``EvalResult.by_kind``): accuracy on every query and on copyable,
ratio-matchable and regression-only queries (``interp.query_kinds``), averaged per task (a, b) then over
tasks as He et al.'s code does, with the number of queries behind each point. The plain curves stay pooled
over sequences (their s.e.m. is over sequences), so the two "all queries" numbers differ by the task weights.

The curves, their tables and their ``Result`` form are in ``interp.curves`` (re-exported here).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Sequence

import einops
import torch
from torch import Tensor, nn

from .curves import (ERROR, ERROR_OVER_MEAN_Y2, METRIC_LABELS, Z95, Curve, EvalResult, KindCurve,  # noqa: F401
                     ScaleResult, metric_label, spread)
from .progress import progress_bar
from .query_kinds import GROUPS, classify_queries, last_region, task_averaged, task_ids
from .tasks import Batch, ModularTask, TaskBase

Predictor = Callable[[Batch], Tensor]

# --- metrics (their names and labels: interp.curves) ---------------------------------------------------


def squared_error_over_d(pred: Tensor, target: Tensor, d: float) -> Tensor:
    """The regression error, Garg et al.'s: squared error summed over output channels, over the constant d (the
    task's ``error_scale``): [..., d_out], [..., d_out] -> [...].

    The one definition behind the training log, ``evaluate``, ``error_vs_scale`` and ``probes.metrics``. d does not
    depend on the data, so scaling x by s scales the zero predictor's error by s² (y = w·x)."""
    return (pred - target).pow(2).sum(dim=-1) / d


def error_by_position(pred: Tensor, batch: Batch, d: float) -> Tensor:
    """``squared_error_over_d`` at the loss positions: [batch, pos, d_out] -> [batch, k]."""
    err = squared_error_over_d(pred, batch.targets, d)[batch.loss_mask]
    return einops.rearrange(err, "(b k) -> b k", b=batch.targets.shape[0])


def error_over_mean_y2_by_position(pred: Tensor, batch: Batch) -> Tensor:
    """The earlier metric, "error / mean y²": at each loss position the squared error over the batch mean of the
    squared target there: [batch, pos, d_out] -> [batch, k]. Not Garg's: its denominator depends on the batch
    and moves with a shift (x scaled by s moves it by s²), so the zero predictor scores 1 at every scale. Kept
    for the tables made with it (``models/kernel-grid/table.json``)."""
    err = error_by_position(pred, batch, 1.0)
    y2 = error_by_position(torch.zeros_like(pred), batch, 1.0)  # the zero predictor's squared error: |y|²
    return err / y2.mean(dim=0).clamp(min=torch.finfo(err.dtype).tiny)


def accuracy_by_position(pred: Tensor, batch: Batch) -> Tensor:
    """Exact match at the loss positions: [batch, pos] long -> [batch, k] float in {0, 1}."""
    correct = (pred == batch.targets)[batch.loss_mask].float()
    return einops.rearrange(correct, "(b k) -> b k", b=batch.targets.shape[0])


def shots(batch: Batch) -> list[int]:
    """The number of complete in-context examples before each loss position: [k] ints.

    Counted from ``pos_labels``: an example is complete once its answer token (y, or z for token tasks)
    has been seen, or its paired token (xy)."""
    answers = ("z",) if batch.inputs.dtype == torch.long else ("y", "xy")
    done = [label.rstrip("0123456789") in answers for label in batch.pos_labels]
    return [sum(done[:p]) for p in batch.loss_mask[0].nonzero()[:, 0].tolist()]


# --- evaluation --------------------------------------------------------------------------------------


def model_predictor(model: nn.Module, task: TaskBase) -> Predictor:
    """The model as a baseline-shaped predictor: batch (CPU) -> [batch, pos, d_out] or argmax tokens [batch, pos], on CPU."""
    device = next(model.parameters()).device

    def predict(batch: Batch) -> Tensor:
        out = model(batch.to(device).inputs)
        if task.kind == "classification":
            out = out.argmax(dim=-1)
        return out.cpu()

    return predict


def metric_of(task: TaskBase, metric: str | None = None) -> tuple[str, Callable[[Tensor, Batch], Tensor]]:
    """The metric name and its per-position function for ``task``: accuracy for classification; for regression
    ``ERROR`` (the default: squared error / the task's ``error_scale``) or ``ERROR_OVER_MEAN_Y2``."""
    if task.kind == "classification":
        return "accuracy", accuracy_by_position
    if metric in (None, ERROR):
        return ERROR, partial(error_by_position, d=task.error_scale)  # type: ignore[attr-defined]
    if metric == ERROR_OVER_MEAN_Y2:
        return ERROR_OVER_MEAN_Y2, error_over_mean_y2_by_position
    raise ValueError(f"metric must be {ERROR!r} or {ERROR_OVER_MEAN_Y2!r} for a regression task, got {metric!r}")


def collect(
    predictors: dict[str, Predictor],
    task: TaskBase,
    n_examples: int,
    *,
    n_batches: int,
    batch_size: int,
    generator: torch.Generator,
    score: Callable[[Tensor, Batch], Tensor],
    keep: Callable[[Batch], dict[str, Tensor]] | None = None,
    bar: Any = None,
) -> tuple[dict[str, Tensor], list[int], dict[str, Tensor]]:
    """Per-sequence scores of every predictor on the same batches: {name: [n_batches * batch_size, k]}, the
    shots, and what ``keep`` reads off each batch, concatenated over batches ({} without ``keep``). ``bar``
    (a ``progress_bar``) advances by one per batch."""
    if n_batches < 1:
        raise ValueError(f"n_batches must be at least 1, got {n_batches}")
    scores: dict[str, list[Tensor]] = {name: [] for name in predictors}
    kept: dict[str, list[Tensor]] = {}
    for _ in range(n_batches):
        batch = task.sample(batch_size, n_examples, generator)  # type: ignore[attr-defined]
        for name, predict in predictors.items():
            scores[name].append(score(predict(batch), batch))
        for name, value in (keep(batch) if keep else {}).items():
            kept.setdefault(name, []).append(value)
        if bar is not None:
            bar.update(1)
    return {name: torch.cat(s) for name, s in scores.items()}, shots(batch), {k: torch.cat(v) for k, v in kept.items()}


def query_info(task: ModularTask) -> Callable[[Batch], dict[str, Tensor]]:
    """What the by-kind curves need of a modular batch: its task ids [batch] and query kinds [batch, k]."""
    return lambda batch: {"task": task_ids(batch.params, task.p), "kind": classify_queries(batch.examples, task.p)}


def kind_curves(split: str, method: str, xs: list[int], correct: Tensor, kept: dict[str, Tensor]) -> list[KindCurve]:
    """The by-kind curves of one method on one split from its per-sequence correctness [n, k]."""
    by_shot = task_averaged(correct, kept["task"], kept["kind"])
    overall = task_averaged(correct, kept["task"], kept["kind"], range(len(xs)))
    region = last_region(len(xs))
    last = task_averaged(correct, kept["task"], kept["kind"], region)
    return [KindCurve(split, method, group, list(xs), by_shot.acc[g].tolist(), by_shot.n_queries[g].tolist(),
                      by_shot.n_tasks[g].tolist(), overall.acc[g].item(), int(overall.n_queries[g]),
                      [xs[i] for i in region], last.acc[g].item(), int(last.n_queries[g]))
            for g, group in enumerate(GROUPS)]


def mean_sem(scores: Tensor) -> tuple[list[float], list[float]]:
    """Mean and standard error over sequences: [n, k] -> ([k], [k])."""
    sem = scores.std(dim=0) / math.sqrt(scores.shape[0]) if scores.shape[0] > 1 else torch.zeros(scores.shape[1])
    return scores.mean(dim=0).tolist(), sem.tolist()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: TaskBase,
    n_examples: int,
    *,
    n_batches: int = 4,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    baselines: bool = True,
    metric: str | None = None,
    progress: bool = False,
) -> EvalResult:
    """Metric vs number of in-context examples for ``model`` (and the task's baselines) on every split of
    ``task.eval_splits()``: ID and OOD, or He et al.'s four sets for modular tasks with held-out pairs; for
    modular tasks also the by-kind curves (``EvalResult.by_kind``) of every method. ``metric``: see ``metric_of``.
    ``progress``: a bar over the batches on stderr (plain lines when it is not a terminal)."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    metric, score = metric_of(task, metric)
    curves: list[Curve] = []
    by_kind: list[KindCurve] = []
    was_training = model.training
    model.eval()
    splits = task.eval_splits()
    try:
        with progress_bar(total=len(splits) * n_batches, desc="eval", unit="batch", enabled=progress) as bar:
            for split, t in splits.items():
                bar.set_description_str(f"eval {split}", refresh=False)
                predictors = {"model": model_predictor(model, t)} | (t.baselines() if baselines else {})
                keep = query_info(t) if isinstance(t, ModularTask) else None
                scores, xs, kept = collect(predictors, t, n_examples, n_batches=n_batches, batch_size=batch_size,
                                            generator=generator, score=score, keep=keep, bar=bar)
                for name, s in scores.items():
                    curves.append(Curve(split, name, xs, *mean_sem(s)))
                    if kept:
                        by_kind += kind_curves(split, name, xs, s, kept)
    finally:
        model.train(was_training)
    d = float(task.error_scale) if metric == ERROR else None  # type: ignore[attr-defined]
    return EvalResult(task.describe(), metric, n_batches * batch_size, curves, by_kind, d)


def zero_predictor(batch: Batch) -> Tensor:
    """Predicts 0 everywhere: batch -> [batch, pos, d_out]."""
    return torch.zeros_like(batch.targets)


def error_at_query(pred: Tensor, batch: Batch, d: float) -> Tensor:
    """``squared_error_over_d`` at the last loss position: [batch, pos, d_out] -> [batch, 1]."""
    return error_by_position(pred, batch, d)[:, -1:]


@torch.no_grad()
def error_vs_scale(
    model: nn.Module,
    task: TaskBase,
    scales: Sequence[float],
    n_examples: int,
    *,
    field: str | None = None,
    n_batches: int = 4,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    baselines: bool = False,
) -> ScaleResult:
    """Squared error / d at the query (``squared_error_over_d``, d the task's ``error_scale``) as ``task.<field>``
    is multiplied by each of ``scales``.

    ``field`` defaults to the task's input scale (``task.scale_field``); pass e.g. "coef_scale" for the
    polynomial coefficients. Methods: "model", "zero", and the task's baselines if ``baselines``."""
    if task.kind != "regression":
        raise ValueError(f"error_vs_scale needs a regression task, got {task.name!r}")
    field = field or task.scale_field
    if field is None or not isinstance(getattr(task, field, None), (int, float)):
        raise ValueError(f"field must name a numeric field of {task.name!r}, got {field!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    errors: dict[str, list[float]] = {}
    sems: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    try:
        for s in scales:
            t = task.replace(**{field: getattr(task, field) * s})
            predictors = {"model": model_predictor(model, t), "zero": zero_predictor}
            predictors |= t.baselines() if baselines else {}
            scores, _, _ = collect(predictors, t, n_examples, n_batches=n_batches, batch_size=batch_size, generator=generator,
                                   score=partial(error_at_query, d=task.error_scale))  # type: ignore[attr-defined]
            for name, sc in scores.items():
                mean, sem = mean_sem(sc)
                errors.setdefault(name, []).append(mean[0])
                sems.setdefault(name, []).append(sem[0])
    finally:
        model.train(was_training)
    d = float(task.error_scale)  # type: ignore[attr-defined]
    return ScaleResult(task.describe(), field, n_examples, list(scales), errors, sems, d)
