"""What the head probes (attribution, attribution patching, head types) share about their inputs: one check of the
clean / corrupted batches, their tick labels and metadata, and a Result averaged over the clean sequences."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from interp.results import Result, tick_labels
from interp.spec import Model
from interp.tasks import Batch, TaskBase


def model_device(model: Model) -> torch.device:
    """Where the model's parameters live (the batches are moved there)."""
    return next(model.parameters()).device


def check_batches(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None) -> None:
    """One-line errors for batches that do not fit the model or each other."""
    if not isinstance(clean, Batch):
        raise ValueError(f"clean must be a Batch from task.sample, got {type(clean).__name__}")
    if clean.inputs.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"clean has {clean.inputs.shape[1]} positions but the model's n_ctx is {model.cfg.n_ctx}")
    if (task.kind == "classification") == clean.inputs.is_floating_point():
        raise ValueError(f"clean does not hold {task.kind} inputs for task {task.name}")
    if corrupted is not None:
        if not isinstance(corrupted, Batch):
            raise ValueError(f"corrupted must be a Batch or None, got {type(corrupted).__name__}")
        if corrupted.inputs.shape != clean.inputs.shape:
            raise ValueError(f"corrupted inputs {tuple(corrupted.inputs.shape)} must have the clean shape {tuple(clean.inputs.shape)}")


def axis_labels(model: Model, clean: Batch, axes: tuple[str, ...]) -> dict[str, list[str]]:
    """Tick labels of the ``axes`` among layer ("L0", ...), head ("H0", ...) and pos (the clean batch's labels)."""
    n_pos = clean.inputs.shape[1]
    ticks = {
        "layer": tick_labels("layer", model.cfg.n_layers),
        "head": tick_labels("head", model.cfg.n_heads),
        "pos": list(clean.pos_labels) if len(clean.pos_labels) == n_pos else [str(p) for p in range(n_pos)],
    }
    return {a: ticks[a] for a in axes if a in ticks}


def run_metadata(task: TaskBase, clean: Batch, method: str, metric: str, **more: Any) -> dict[str, Any]:
    """The metadata every head probe records: method, metric, task and the shape of the clean batch."""
    return {
        "method": method,
        "metric": metric,
        "task": task.describe(),
        "n_sequences": int(clean.inputs.shape[0]),
        "n_examples": None if clean.examples is None else int(clean.examples.shape[1]),
        "query_pos": clean.query_pos,
        **more,
    }


def mean_result(kind: str, per_example: Tensor, axes: tuple[str, ...], model: Model, clean: Batch, **kw: Any) -> Result:
    """A Result whose scores are the mean of ``per_example`` [batch, *axes] over the clean sequences."""
    per_example = per_example.detach().float().cpu()
    return Result(kind, per_example.mean(0), axes, axis_labels(model, clean, axes), per_example, **kw)
