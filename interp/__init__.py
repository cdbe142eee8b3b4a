"""icl-interp: train small transformers on in-context-learning tasks and open them up.

The notebook API lives in ``interp.api`` and is re-exported here: ``interp.load``, ``interp.train``,
``interp.evaluate``, ... (``interp.train`` and ``interp.evaluate`` are the API functions; the modules of
the same names stay importable as ``from interp.train import TrainConfig``).
"""
from __future__ import annotations

from .api import (algorithms, attribute, compare_saturation, evaluate, geometry, load, mlp, patch, probe,
                  saturation, train)

__all__ = ["load", "train", "evaluate", "patch", "attribute", "mlp", "algorithms", "geometry", "saturation", "compare_saturation", "probe"]
