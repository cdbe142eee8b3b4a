"""icl-interp: train small transformers on in-context-learning tasks and open them up.

The notebook API lives in ``interp.api`` and is re-exported here: ``interp.load``, ``interp.train``,
``interp.evaluate``, ... (``interp.train`` and ``interp.evaluate`` are the API functions; the modules of
the same names stay importable as ``from interp.train import TrainConfig``).

The re-exports are lazy (a module ``__getattr__``): ``import interp.tasks`` or the CLI's argument parser loads
no TransformerLens, torch model code or probes; the first ``interp.load`` (or any API name) imports ``interp.api``.
"""
from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["load", "train", "evaluate", "patch", "attribute", "mlp", "algorithms", "geometry", "saturation",
           "compare_saturation", "probe", "circuit", "Result"]
_SHADOWED = {"train", "evaluate"}  # API functions that share their name with a submodule


def __getattr__(name: str) -> Any:
    if name == "Result":
        from .results import Result

        return Result
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package module: importing the submodule ``interp.train`` (or ``interp.evaluate``) does not rebind
    ``interp.train`` from the API function to the submodule, as the import system otherwise would."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
