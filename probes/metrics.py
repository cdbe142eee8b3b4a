"""Metrics at the query position, per example, as the task defines them.

A metric takes the model's output at the query, [batch, d_out] (regression) or [batch, d_vocab] logits
(modular), and the clean and corrupted answers there, and returns one value per example, [batch]. Every
probe reduces with the same functions, so a user's own callable of this shape works everywhere. The default
regression metric is the repo's one error, ``interp.evaluate.squared_error_over_d`` with the task's d.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from interp.evaluate import ERROR, squared_error_over_d
from interp.tasks import Batch, TaskBase


@dataclass(frozen=True)
class Answers:
    """The targets at the query: [batch] long for token tasks, [batch, d_out] float for regression."""

    clean: Tensor
    corrupted: Tensor

    @classmethod
    def of(cls, clean: Batch, corrupted: Batch) -> "Answers":
        pos = clean.query_pos
        return cls(clean.targets[:, pos], corrupted.targets[:, pos])


Metric = Callable[[Tensor, Answers], Tensor]


def error_metric(d: float) -> Metric:
    """The metric ``squared_error_over_d`` (squared error against the clean answer over d, the task's
    ``error_scale``): out [batch, d_out] -> [batch]."""
    def metric(out: Tensor, answers: Answers) -> Tensor:
        return squared_error_over_d(out, answers.clean, d)

    metric.__name__ = ERROR
    return metric


def signed_error(out: Tensor, answers: Answers) -> Tensor:
    """Prediction minus the clean answer, summed over output channels: [batch, d_out] -> [batch]."""
    return (out - answers.clean).sum(-1)


def logit_diff(out: Tensor, answers: Answers) -> Tensor:
    """Logit of the clean answer minus logit of the corrupted answer: [batch, d_vocab] -> [batch]."""
    return out.gather(-1, answers.clean[:, None])[:, 0] - out.gather(-1, answers.corrupted[:, None])[:, 0]


def prob_correct(out: Tensor, answers: Answers) -> Tensor:
    """Softmax probability of the clean answer: [batch, d_vocab] -> [batch]."""
    return out.softmax(-1).gather(-1, answers.clean[:, None])[:, 0]


def accuracy(out: Tensor, answers: Answers) -> Tensor:
    """1 where the arg-max is the clean answer: [batch, d_vocab] -> [batch]."""
    return (out.argmax(-1) == answers.clean).to(out.dtype)


CLASSIFICATION_METRICS: dict[str, Metric] = {"logit_diff": logit_diff, "prob": prob_correct, "accuracy": accuracy}


def metrics_for(task: TaskBase) -> dict[str, Metric]:
    """The named metrics that apply to ``task``; the first is the default (regression: ``squared_error_over_d``
    with the task's d, then ``signed_error``)."""
    if task.kind == "regression":
        return {ERROR: error_metric(task.error_scale), "signed_error": signed_error}  # type: ignore[attr-defined]
    return CLASSIFICATION_METRICS


def callable_metric(fields: dict) -> Metric | None:
    """Take a callable ``metric`` out of a probe's keyword fields: a settings field holds a metric's name only."""
    return fields.pop("metric") if callable(fields.get("metric")) else None


def resolve_metric(task: TaskBase, metric: str | Metric | None) -> tuple[str, Metric]:
    """(name, function) for a metric name, a user's callable, or None (the task's default)."""
    known = metrics_for(task)
    if metric is None:
        return next(iter(known.items()))
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric not in known:
        raise ValueError(f"metric {metric!r} does not apply to task {task.name}; choose from {', '.join(known)}")
    return metric, known[metric]


# the head probes' metrics: also the logit of the answer and the bare prediction, which direct effects add up to


def correct_logit(out: Tensor, answers: Answers) -> Tensor:
    """Logit of the clean answer: [batch, d_vocab] -> [batch]."""
    return out.gather(-1, answers.clean[:, None])[:, 0]


def prediction(out: Tensor, answers: Answers) -> Tensor:
    """The prediction, summed over output channels: [batch, d_out] -> [batch]."""
    return out.sum(-1)


def _extra_metrics(task: TaskBase) -> dict[str, Metric]:
    return {"logit": correct_logit} if task.kind == "classification" else {"prediction": prediction}


def _linear_metrics(task: TaskBase) -> tuple[str, ...]:
    """Metrics that are linear in the output, so direct effects add up to them exactly."""
    return ("logit", "logit_diff") if task.kind == "classification" else ("prediction", "signed_error")


def attribution_metric(task: TaskBase, metric: str | Metric | None, corrupted: Batch | None, *,
                       linear: bool = False) -> tuple[str, Metric]:
    """(name, function) of a metric: the probes.metrics names plus ``logit`` (classification) and ``prediction``
    (regression). None means ``logit_diff`` with a corrupted batch and ``logit`` without (classification), and
    ``squared_error_over_d`` (or ``prediction`` when ``linear``) for regression."""
    known = metrics_for(task) | _extra_metrics(task)
    if metric is None:
        if task.kind == "classification":
            metric = "logit_diff" if corrupted is not None else "logit"
        else:
            metric = "prediction" if linear else "squared_error_over_d"
    if callable(metric):
        if linear:
            raise ValueError(f"metric for direct attribution must be one of {', '.join(_linear_metrics(task))}, not a callable")
        return getattr(metric, "__name__", "custom"), metric
    if metric not in known:
        raise ValueError(f"metric {metric!r} does not apply to task {task.name}; choose from {', '.join(known)}")
    if linear and metric not in _linear_metrics(task):
        raise ValueError(f"metric {metric!r} is not linear in the output; direct attribution takes {', '.join(_linear_metrics(task))}")
    if metric == "logit_diff" and corrupted is None:
        raise ValueError("metric 'logit_diff' needs a corrupted batch (its answer is the one to beat)")
    return metric, known[metric]


def at_query(out: Tensor, batch: Batch) -> Tensor:
    """The model output at the query position: [batch, pos, d] -> [batch, d]."""
    return out[:, batch.query_pos]
