"""ICL task families behind one Task protocol."""
from __future__ import annotations

from typing import Any

from .base import CORRUPTIONS, LAYOUTS, Batch, RegressionTask, Task, TaskBase, examples_that_fit, interleave
from .complex_zeros import ComplexZerosTask
from .kernel import KernelTask
from .linear import LinearTask
from .modular import ModularTask
from .polynomial import PolynomialTask

TASKS: dict[str, type[TaskBase]] = {
    cls.name: cls for cls in (LinearTask, PolynomialTask, KernelTask, ModularTask, ComplexZerosTask)
}


def task_from_dict(spec: dict[str, Any]) -> TaskBase:
    """Rebuild a task from ``task.to_dict()``; unknown names or fields raise ValueError."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](**spec)
    except TypeError as e:
        raise ValueError(f"bad fields for task {name!r}: {e}") from None


__all__ = [
    "CORRUPTIONS", "LAYOUTS", "Batch", "Task", "TaskBase", "RegressionTask", "interleave", "examples_that_fit", "TASKS", "task_from_dict",
    "LinearTask", "PolynomialTask", "KernelTask", "ModularTask", "ComplexZerosTask",
]
