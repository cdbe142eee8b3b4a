"""Attention-feature geometry (He et al. 2024): PCA of one head's output over the (x, y) grid.

He et al. find that head features form a "circle of circles" (an outer circle indexed by x, an inner circle
indexed by y around each point of it) and that even and odd residues lie on two planes. With the context
fixed, each of the p² grid examples (x, y) gets its own sequence, and the head's output is read either at
that example's z token (``pos="z"``: the example is appended whole, as the model sees earlier examples; the
d=2 model's layer-0 heads collect x and y there) or at its y position, where z is predicted (``pos="query"``).

Scores, each 1 at best and about 0 for structureless features:
- outer x: circularity (``probes.fourier.circularity``) of the x-means (the mean over y for each x);
- inner y: mean over x of the circularity of the p points (x, ·);
- outer y / inner x: the same with the roles swapped;
- parity x / parity y: 2·(balanced accuracy) − 1 of a linear separator of even from odd residues in the top
  ``parity_dims`` principal components.
"""
from __future__ import annotations

from typing import Any, Literal

import einops
import numpy as np
import torch
from torch import Tensor

from interp.results import Result, tick_label
from interp.spec import check_layer
from interp.tasks import ModularTask
from probes.fourier import circularity, pca
from probes.grid import (Context, check_modular, check_token_model, max_context, query_grid,
                         resolve_context, run_grid)
from probes.settings import GeometrySettings

MEASURES = ("outer x", "inner y", "outer y", "inner x", "parity x", "parity y")


def head_features(
    model: Any,
    task: ModularTask,
    layer: int,
    head: int,
    context: Context,
    *,
    output: Literal["z", "result"] = "z",
    pos: Literal["z", "query"] = "z",
    batch_size: int = 256,
) -> Tensor:
    """One head's output over the grid: [x, y, d_head] (``output="z"``, hook_z) or [x, y, d_model] (z @ W_O)."""
    batch = query_grid(task, context)
    inputs, read_at = batch.inputs, batch.query_pos
    if pos == "z":  # append the grid example's own z and read there
        inputs = torch.cat([inputs, batch.targets[:, read_at : read_at + 1]], dim=1)
        read_at += 1
    name = f"blocks.{layer}.attn.hook_z"
    _, acts = run_grid(model, inputs, read_at, read=[name], batch_size=batch_size)
    z = acts[name][:, head]  # [p², d_head]
    if output == "result":
        z = z @ model.W_O[layer, head].detach()
    return einops.rearrange(z, "(x y) d -> x y d", x=task.p)


def _separability(points: np.ndarray, labels: np.ndarray) -> float:
    """2·(balanced accuracy) − 1 of a logistic-regression separator: 0 at chance, 1 when a plane splits the classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    if labels.all() or not labels.any():
        return 0.0
    x = StandardScaler().fit_transform(points)
    fit = LogisticRegression(C=100.0, max_iter=2000).fit(x, labels)
    return float(max(0.0, 2 * balanced_accuracy_score(labels, fit.predict(x)) - 1))


def feature_geometry(features: Tensor, n_components: int = 6, parity_dims: int = 3) -> Result:
    """Circle-of-circles and even/odd scores of grid features [x, y, d]: scores [measure] (see the module doc);
    extras explained_variance_ratio [component], projection [x, y, component], components [component, d],
    inner_y [x] (the circularity around each x), inner_x [y]."""
    if features.dim() != 3 or features.shape[0] != features.shape[1] or features.shape[0] < 3:
        raise ValueError(f"features must be [p, p, d] with p >= 3, got shape {tuple(features.shape)}")
    if parity_dims < 1:
        raise ValueError(f"parity_dims must be at least 1, got {parity_dims}")
    p = features.shape[0]
    f = features.detach().double()
    outer_x, outer_y = circularity(f.mean(dim=1)), circularity(f.mean(dim=0))
    inner_y = torch.tensor([circularity(f[x]).metadata["score"] for x in range(p)])
    inner_x = torch.tensor([circularity(f[:, y]).metadata["score"] for y in range(p)])
    pcs = pca(f, max(n_components, parity_dims))
    coords = einops.rearrange(pcs.extras["projection"], "x y c -> (x y) c")[:, :parity_dims].double().numpy()
    r = np.arange(p)
    even_x, even_y = np.repeat(r % 2 == 0, p), np.tile(r % 2 == 0, p)
    scores = torch.tensor([outer_x.metadata["score"], float(inner_y.mean()), outer_y.metadata["score"],
                           float(inner_x.mean()), _separability(coords, even_x), _separability(coords, even_y)])
    n = min(n_components, pcs.scores.shape[0])
    return Result("head_geometry", scores.float(), ("measure",), labels={"measure": list(MEASURES)},
                  extras={"explained_variance_ratio": pcs.scores[:n], "projection": pcs.extras["projection"][..., :n],
                          "components": pcs.extras["components"][:n], "inner_y": inner_y.float(), "inner_x": inner_x.float()},
                  metadata={"p": p, "parity_dims": parity_dims, "outer_x_frequency": outer_x.metadata["frequency"],
                            "outer_y_frequency": outer_y.metadata["frequency"], "value_name": "score",
                            "title": "head geometry"})


def head_geometry(model: Any, task: ModularTask, settings: GeometrySettings | None = None, *,
                  context: Context | None = None, generator: torch.Generator | None = None, **fields: Any) -> Result:
    """PCA and circle-of-circles / even-odd scores of head ``settings.head`` of block ``settings.layer`` over the p²
    grid examples after a fixed context (default: ``settings.n_context`` sampled examples, as many as fit when None,
    from ``generator``); see ``feature_geometry``. ``GeometrySettings`` or its fields by name."""
    s = GeometrySettings.resolve(settings, fields)
    output, pos, n_components, parity_dims, batch_size = s.output, s.pos, s.n_components, s.parity_dims, s.batch_size
    task = check_modular(task)
    check_token_model(model, task)
    layer = check_layer(model, s.layer)
    n_heads, head = model.cfg.n_heads, s.head
    if not 0 <= head < n_heads:
        raise ValueError(f"head must be in [0, {n_heads - 1}], got {head!r}")
    most = max_context(model, extra_tokens=3 if pos == "z" else 2)
    if most < 0:
        raise ValueError(f"model n_ctx={model.cfg.n_ctx} is too short for one whole example; use pos='query'")
    ctx = resolve_context(task, context if context is not None else s.n_context, most, generator)
    features = head_features(model, task, layer, int(head), ctx, output=output, pos=pos, batch_size=batch_size)
    result = feature_geometry(features, n_components, parity_dims)
    hook = f"blocks.{layer}.attn.hook_z" + (" @ W_O" if output == "result" else "")
    result.metadata |= {"layer": layer, "head": int(head), "hook_name": hook, "pos": pos, "context": ctx.to_dict(),
                        "a": ctx.a, "b": ctx.b, "title": f"{tick_label(layer, head)} geometry ({hook} at {pos})"}
    return result


