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

Over 400 lines on purpose: the one error definition, the evaluation loop and the tables that name it stay together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import einops
import torch
from torch import Tensor, nn

from .progress import progress_bar
from .query_kinds import GROUPS, classify_queries, last_region, metric_key, task_averaged, task_ids
from .tasks import Batch, ModularTask, TaskBase

Predictor = Callable[[Batch], Tensor]

# --- metrics -----------------------------------------------------------------------------------------


ERROR = "squared_error_over_d"
"""The regression metric: ``squared_error_over_d``, Garg et al.'s squared error / d."""
ERROR_OVER_MEAN_Y2 = "error_over_mean_y2"
"""The repo's earlier regression metric, kept under this name: ``error_over_mean_y2_by_position``."""
METRIC_LABELS: dict[str, str] = {ERROR: "squared error / d", ERROR_OVER_MEAN_Y2: "error / mean y²", "accuracy": "accuracy"}
"""How tables, axes and cards name each metric."""
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


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


def metric_label(metric: str, d: float | None = None) -> str:
    """The name tables and axes give ``metric`` (a ``METRIC_LABELS`` key), with d where it is known."""
    label = METRIC_LABELS.get(metric, metric.replace("_", " "))
    return f"{label} (d = {d:g})" if metric == ERROR and d is not None else label


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


# --- results -----------------------------------------------------------------------------------------


@dataclass
class Curve:
    """One method's metric against the number of in-context examples, on one split."""

    split: str
    method: str
    shots: list[int]
    mean: list[float]
    sem: list[float]

    @property
    def ci95(self) -> list[float]:
        """Half-widths of the 95% confidence interval of the mean over sequences (normal, ±1.96 s.e.m.): [k]."""
        return [Z95 * s for s in self.sem]


@dataclass
class KindCurve:
    """One method's accuracy on one group of queries (``query_kinds.GROUPS``: "all", "copyable", "ratio",
    "regression") against the number of examples, on one split, averaged per task (a, b) then over tasks.

    ``mean[j]`` is NaN where no query of the group is at ``shots[j]``; ``n_queries`` and ``n_tasks`` give the
    support. ``overall`` pools every shot within each task, ``last`` the last-shot region ``last_shots``."""

    split: str
    method: str
    kind: str
    shots: list[int]
    mean: list[float]
    n_queries: list[int]
    n_tasks: list[int]
    overall: float
    n_overall: int
    last_shots: list[int]
    last: float
    n_last: int


@dataclass
class EvalResult:
    """Curves for the model and its baselines on the ID and OOD task; ``metric`` names what they measure (a
    ``METRIC_LABELS`` key; ``label`` is its display name), ``error_scale`` the d of squared error / d (None for
    accuracy); ``by_kind`` holds the per-task-averaged curves by kind of query (modular tasks only)."""

    task: str
    metric: str
    n_sequences: int
    curves: list[Curve]
    by_kind: list[KindCurve] = field(default_factory=list)
    error_scale: float | None = None

    @property
    def label(self) -> str:
        """The metric's display name, e.g. "squared error / d (d = 5)"."""
        return metric_label(self.metric, self.error_scale)

    def curve(self, split: str, method: str) -> Curve:
        """The curve of ``method`` on ``split``; KeyError naming the known ones otherwise."""
        for c in self.curves:
            if (c.split, c.method) == (split, method):
                return c
        known = ", ".join(f"{c.split}/{c.method}" for c in self.curves)
        raise KeyError(f"no curve {split}/{method}; known: {known}")

    def to_table(self, at: Sequence[int] | None = None, ci: bool = False) -> list[dict[str, Any]]:
        """Rows {split, method, "k=<n>": mean at n examples, ..., "avg": mean over positions} for a CLI table;
        with ``ci`` each "k=<n>" is followed by "k=<n> ci95", the half-width of its 95% interval.

        ``at`` picks the numbers of examples (default: up to five, spread from first to last)."""
        rows = []
        for c in self.curves:
            picks = list(at) if at is not None else spread(c.shots)
            row: dict[str, Any] = {"split": c.split, "method": c.method}
            for n in picks:
                row[f"k={n}"] = c.mean[c.shots.index(n)] if n in c.shots else float("nan")
                if ci:
                    row[f"k={n} ci95"] = c.ci95[c.shots.index(n)] if n in c.shots else float("nan")
            row["avg"] = sum(c.mean) / len(c.mean)
            rows.append(row)
        return rows

    def kind_curve(self, split: str, kind: str, method: str = "model") -> KindCurve:
        """The by-kind curve of ``method`` on ``split`` for ``kind`` (a ``query_kinds.GROUPS`` entry)."""
        for c in self.by_kind:
            if (c.split, c.method, c.kind) == (split, method, kind):
                return c
        known = ", ".join(sorted({f"{c.split}/{c.method}" for c in self.by_kind})) or "none (not a modular task)"
        raise KeyError(f"no by-kind curve {split}/{method}/{kind}; known: {known}")

    def kind_table(self, methods: Sequence[str] = ("model",), at: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Rows {split, method, kind, "k=<n>": accuracy, ..., "all shots", "last": the last-shot region,
        "n last": its number of queries} of the by-kind curves, for a CLI table. NaN where there is no query."""
        rows = []
        for c in self.by_kind:
            if c.method not in methods:
                continue
            row: dict[str, Any] = {"split": c.split, "method": c.method, "kind": c.kind}
            for n in list(at) if at is not None else spread(c.shots):
                row[f"k={n}"] = c.mean[c.shots.index(n)] if n in c.shots else float("nan")
            row |= {"all shots": c.overall, "last": c.last, "n last": c.n_last}
            rows.append(row)
        return rows

    def kind_metrics(self, method: str = "model") -> dict[str, float]:
        """The by-kind numbers of ``method`` as a flat record with the training log's names and the query counts:
        ``ood_test_acc_regression_last``, ``ood_test_n_regression_last``, ``id_train_acc``, ... (none for a cell
        without queries)."""
        out: dict[str, float] = {}
        for c in self.by_kind:
            if c.method != method:
                continue
            for last, value, n in ((False, c.overall, c.n_overall), (True, c.last, c.n_last)):
                if n > 0:
                    out[f"{c.split}_{metric_key(c.kind, last=last)}"] = value
                    out[f"{c.split}_{metric_key(c.kind, last=last, count=True)}"] = n
        return out


@dataclass
class ScaleResult:
    """Squared error / d at the query (``squared_error_over_d``) against a multiplier of one task field, per method.

    ``errors[method][j]`` (and ``sems``, over sequences) is at ``scales[j]``; method "zero" is the zero
    predictor's, the mean squared target over d. ``error_scale`` is d (fixed: it does not move with the scale)."""

    task: str
    field: str
    n_examples: int
    scales: list[float]
    errors: dict[str, list[float]]
    sems: dict[str, list[float]]
    error_scale: float = 1.0
    metric: str = ERROR

    def to_table(self) -> list[dict[str, Any]]:
        """Rows {scale, <method>: error, ...} for a CLI table."""
        return [{"scale": s, **{m: e[j] for m, e in self.errors.items()}} for j, s in enumerate(self.scales)]


def spread(values: Sequence[int], n: int = 5) -> list[int]:
    """Up to ``n`` entries of ``values`` evenly spaced from the first to the last."""
    if len(values) <= n:
        return list(values)
    return [values[round(j * (len(values) - 1) / (n - 1))] for j in range(n)]


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
                scores, xs, kept = collect(predictors, t, n_examples, n_batches, batch_size, generator, score, keep, bar)
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
            scores, _, _ = collect(predictors, t, n_examples, n_batches, batch_size, generator,
                                   partial(error_at_query, d=task.error_scale))  # type: ignore[attr-defined]
            for name, sc in scores.items():
                mean, sem = mean_sem(sc)
                errors.setdefault(name, []).append(mean[0])
                sems.setdefault(name, []).append(sem[0])
    finally:
        model.train(was_training)
    d = float(task.error_scale)  # type: ignore[attr-defined]
    return ScaleResult(task.describe(), field, n_examples, list(scales), errors, sems, d)
