"""What notebooks import: ``import interp; m = interp.load("models/<name>"); interp.patch(m, ...)``.

Each function takes a loaded checkpoint (or a path to one), draws its inputs from the checkpoint's own task
with a seed, runs one probe and returns a ``probes.results.Result`` whose metadata names the checkpoint,
the corruption, the metric and the seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .evaluate import EvalResult
from .evaluate import evaluate as evaluate_model
from .spec import ModelSpec
from .tasks import TASKS, TaskBase
from .train import TrainConfig
from .train import train as train_model

CheckpointLike = Checkpoint | str | Path


def load(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder: ``m.model`` (HookedTransformer or RegressionTransformer), ``m.task``, ``m.spec``."""
    return load_checkpoint(path)


def as_checkpoint(m: CheckpointLike) -> Checkpoint:
    return m if isinstance(m, Checkpoint) else load_checkpoint(m)


def train(task: str | TaskBase, out: str | Path | None = None, n_examples: int = 11, steps: int = 2000,
          task_args: dict[str, Any] | None = None, progress: bool = True, **model_and_train: Any) -> Checkpoint:
    """Train a model on ``task`` (a name such as "modular" or a task object). Keyword arguments go to
    ``ModelSpec`` (n_layers, d_model, scoring, ...) or ``TrainConfig`` (lr, batch_size, ...) by name."""
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
        task = TASKS[task](**(task_args or {}))
    spec_fields = set(ModelSpec.__dataclass_fields__)
    train_fields = set(TrainConfig.__dataclass_fields__)
    unknown = set(model_and_train) - spec_fields - train_fields
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))}: not a ModelSpec or TrainConfig field")
    spec = ModelSpec.for_task(task, n_examples, **{k: v for k, v in model_and_train.items() if k in spec_fields})
    cfg = TrainConfig(steps=steps, n_examples=n_examples, **{k: v for k, v in model_and_train.items() if k in train_fields})
    return train_model(task, spec, cfg, out=out, progress=progress)


def evaluate(m: CheckpointLike, n: int = 512, seed: int = 0) -> EvalResult:
    """Error (or accuracy) against the number of in-context examples, ID and OOD, beside the baselines."""
    ckpt = as_checkpoint(m)
    batch_size = min(n, 256)
    return evaluate_model(ckpt.model, ckpt.task, ckpt.train["n_examples"], n_batches=-(-n // batch_size),
                          batch_size=batch_size, generator=torch.Generator().manual_seed(seed))
