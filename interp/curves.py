"""What ``interp.evaluate`` returns: curves of a metric against the number of in-context examples, their
tables, and their ``Result`` form for notebooks and JSON (``EvalResult.to_result``, ``kind_result``,
``ScaleResult.to_result``), with the names every table and axis gives the metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .query_kinds import metric_key
from .results import Result

NAN = float("nan")
F64 = torch.float64  # the curves are Python floats: float64 holds them exactly

ERROR = "squared_error_over_d"
"""The regression metric: ``squared_error_over_d``, Garg et al.'s squared error / d."""
ERROR_OVER_MEAN_Y2 = "error_over_mean_y2"
"""The repo's earlier regression metric, kept under this name: ``error_over_mean_y2_by_position``."""
METRIC_LABELS: dict[str, str] = {ERROR: "squared error / d", ERROR_OVER_MEAN_Y2: "error / mean y²", "accuracy": "accuracy"}
"""How tables, axes and cards name each metric."""
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def metric_label(metric: str, d: float | None = None) -> str:
    """The name tables and axes give ``metric`` (a ``METRIC_LABELS`` key), with d where it is known."""
    label = METRIC_LABELS.get(metric, metric.replace("_", " "))
    return f"{label} (d = {d:g})" if metric == ERROR and d is not None else label



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

    def to_result(self) -> Result:
        """The curves as one Result: scores [split, method, shot] the mean, extras "sem" and "ci95" of the same
        shape (NaN where a split has no such method), shot ticks the numbers of examples."""
        splits, methods = ordered(c.split for c in self.curves), ordered(c.method for c in self.curves)
        xs = self.curves[0].shots
        mean, sem = (torch.full((len(splits), len(methods), len(xs)), NAN, dtype=F64) for _ in range(2))
        for c in self.curves:
            at = splits.index(c.split), methods.index(c.method)
            mean[at], sem[at] = torch.tensor(c.mean, dtype=F64), torch.tensor(c.sem, dtype=F64)
        return Result("icl_curves", mean, ("split", "method", "shot"),
                      {"split": splits, "method": methods, "shot": [str(k) for k in xs]},
                      extras={"sem": sem, "ci95": Z95 * sem},
                      metadata={"task": self.task, "metric": self.metric, "label": self.label,
                                "n_sequences": self.n_sequences, "error_scale": self.error_scale})

    def kind_result(self) -> Result:
        """The by-kind curves as one Result: scores [split, method, kind, shot] the per-task-averaged accuracy
        (NaN where no query is), extras "n_queries" and "n_tasks" of that shape, and "overall" and "last"
        [split, method, kind] (``KindCurve.overall`` and ``.last``). ValueError for a task without them."""
        if not self.by_kind:
            raise ValueError(f"by-kind curves are measured on modular tasks only, not on {self.task!r}")
        splits, methods = ordered(c.split for c in self.by_kind), ordered(c.method for c in self.by_kind)
        kinds, xs = ordered(c.kind for c in self.by_kind), self.by_kind[0].shots
        shape = (len(splits), len(methods), len(kinds))
        acc, n_queries, n_tasks = (torch.full((*shape, len(xs)), NAN, dtype=F64) for _ in range(3))
        overall, last = torch.full(shape, NAN, dtype=F64), torch.full(shape, NAN, dtype=F64)
        for c in self.by_kind:
            at = splits.index(c.split), methods.index(c.method), kinds.index(c.kind)
            acc[at], n_queries[at], n_tasks[at] = (torch.tensor(v, dtype=F64) for v in (c.mean, c.n_queries, c.n_tasks))
            overall[at], last[at] = c.overall, c.last
        return Result("icl_curves_by_kind", acc, ("split", "method", "kind", "shot"),
                      {"split": splits, "method": methods, "kind": kinds, "shot": [str(k) for k in xs]},
                      extras={"n_queries": n_queries, "n_tasks": n_tasks, "overall": overall, "last": last},
                      metadata={"task": self.task, "metric": "accuracy", "averaged": "per task (a, b), then over tasks",
                                "last_shots": self.by_kind[0].last_shots, "n_sequences": self.n_sequences})

    def results(self) -> dict[str, Result]:
        """{"curves": ``to_result()``, and "by_kind": ``kind_result()`` for modular tasks}, for JSON."""
        return {"curves": self.to_result(), **({"by_kind": self.kind_result()} if self.by_kind else {})}

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

    def to_result(self) -> Result:
        """The sweep as one Result: scores [method, scale] the mean error, extras "sem" and "ci95" of that shape."""
        methods = list(self.errors)
        mean = torch.tensor([self.errors[m] for m in methods], dtype=F64)
        sem = torch.tensor([self.sems[m] for m in methods], dtype=F64)
        return Result("error_vs_scale", mean, ("method", "scale"),
                      {"method": methods, "scale": [f"{s:g}" for s in self.scales]},
                      extras={"sem": sem, "ci95": Z95 * sem},
                      metadata={"task": self.task, "field": self.field, "n_examples": self.n_examples,
                                "metric": self.metric, "label": metric_label(self.metric, self.error_scale),
                                "scales": list(self.scales), "error_scale": self.error_scale})

    def to_table(self) -> list[dict[str, Any]]:
        """Rows {scale, <method>: error, ...} for a CLI table."""
        return [{"scale": s, **{m: e[j] for m, e in self.errors.items()}} for j, s in enumerate(self.scales)]


def ordered(names: Any) -> list[str]:
    """The distinct names in first-seen order."""
    return list(dict.fromkeys(names))


def spread(values: Sequence[int], n: int = 5) -> list[int]:
    """Up to ``n`` entries of ``values`` evenly spaced from the first to the last."""
    if len(values) <= n:
        return list(values)
    return [values[round(j * (len(values) - 1) / (n - 1))] for j in range(n)]

