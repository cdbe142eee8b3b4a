"""MLP representations of modular arithmetic in context, over the full (x, y) grid of queries (``probes.grid``).

At one layer, ``mlp_analysis`` gives the norm of W_E per frequency with its key frequencies, PCA of W_E, the
MLP output and the residual stream, the circularity of their class means by x, y and z, each neuron's top
frequency (``probes.fourier``), and the restricted / excluded loss: the loss at the query with only the
key-frequency components of an activation kept, or with them removed (Nanda et al., "Progress measures for
grokking").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import einops
import torch
import torch.nn.functional as F
from torch import Tensor

from interp.results import Result
from interp.spec import check_layer
from interp.tasks import Batch, ModularTask
from probes.fourier import circularity, frequency_norms, grouped_means, neuron_fourier, pca, split_frequencies
from probes.grid import (Context, check_modular, check_token_model, grid_answers, max_context, query_grid,
                         resolve_context, run_grid)
from probes.settings import MlpSettings

# --- restricted / excluded loss ----------------------------------------------------------------------


def restricted_loss(
    model: Any,
    task: ModularTask,
    hook_name: str,
    frequencies: Sequence[int] | None = None,
    context: Context | int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> Result:
    """Loss at the query over the grid with ``hook_name`` at the query position kept whole ("full"), restricted
    to the components of the ``frequencies`` (and the grid mean), or with those components removed ("excluded"):
    scores [variant]; per_example [query, variant] cross-entropy; extras accuracy [variant].

    ``frequencies`` defaults to the key frequencies of W_E."""
    task = check_modular(task)
    check_token_model(model, task)
    if hook_name not in model.hook_dict:
        raise ValueError(f"hook_name {hook_name!r} is not a hook of this model")
    ctx = resolve_context(task, context, max_context(model), generator)
    if frequencies is None:
        frequencies = frequency_norms(model.W_E.detach()[: task.p]).metadata["key_frequencies"]
    frequencies = [int(f) for f in frequencies]
    if any(not 1 <= f <= task.p // 2 for f in frequencies):
        raise ValueError(f"frequencies must be in [1, {task.p // 2}], got {frequencies}")
    batch = query_grid(task, ctx)
    logits, acts = run_grid(model, batch.inputs, batch.query_pos, read=[hook_name], batch_size=batch_size)
    return _restricted_from(model, task, batch, context=ctx, hook_name=hook_name, acts=acts[hook_name], logits=logits,
                            frequencies=frequencies, batch_size=batch_size)


def _restricted_from(model: Any, task: ModularTask, batch: Batch, *, context: Context, hook_name: str, acts: Tensor,
                     logits: Tensor, frequencies: list[int], batch_size: int) -> Result:
    """The restricted-loss Result from the grid run already made: acts [p², ...] at ``hook_name``, logits [p², d_vocab]."""
    p, pos = task.p, batch.query_pos
    grid = einops.rearrange(acts, "(x y) ... -> x y ...", x=p)
    restricted, excluded = split_frequencies(grid, frequencies)
    target = batch.targets[:, pos]
    outs = [logits]
    for variant in (restricted, excluded):
        new = einops.rearrange(variant, "x y ... -> (x y) ...")
        outs.append(run_grid(model, batch.inputs, pos, replace={hook_name: new}, batch_size=batch_size)[0])
    losses = torch.stack([F.cross_entropy(o.float(), target, reduction="none") for o in outs], dim=-1)
    accuracy = torch.stack([(o.argmax(-1) == target).float().mean() for o in outs])
    return Result("restricted_loss", losses.mean(0), ("variant",), labels={"variant": ["full", "restricted", "excluded"]},
                  per_example=losses, extras={"accuracy": accuracy},
                  metadata={"hook_name": hook_name, "frequencies": frequencies, "p": p, "context": context.to_dict(),
                            "value_name": "loss at the query", "title": f"restricted / excluded loss at {hook_name}"})


# --- everything at once ------------------------------------------------------------------------------


@dataclass
class PCAs:
    """The PCA Results ``mlp_analysis`` draws: of the embedding and of the MLP's and the residual's activations."""

    W_E: Result  # [residue]: the embedding's residues projected
    mlp_post: Result  # [x, y] projections of the MLP's output over the query grid
    resid_post: Result  # [x, y] projections of the block's residual output over the query grid

    def results(self) -> dict[str, Result]:
        """Each PCA by name, in field order."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class MLPAnalysis:
    """What ``mlp_analysis`` finds at one layer; every field is a Result."""

    frequencies: Result  # norm of W_E per frequency; metadata["key_frequencies"]
    pca: PCAs  # .W_E [residue], .mlp_post and .resid_post [x, y] projections
    circularity: Result  # scores [activation, residue]: circularity of the class means by x, y and z
    neurons: Result  # per-neuron top frequency, fraction and cluster
    loss: Result  # full / restricted / excluded loss at the MLP output
    context: Context

    def results(self) -> dict[str, Result]:
        """Every Result by name, flat (for the CLI and JSON)."""
        return {"frequencies": self.frequencies, **{f"pca_{k}": v for k, v in self.pca.results().items()},
                "circularity": self.circularity, "neurons": self.neurons, "loss": self.loss}


def mlp_analysis(model: Any, task: ModularTask, settings: MlpSettings | None = None, *, context: Context | None = None,
                 generator: torch.Generator | None = None, **fields: Any) -> MLPAnalysis:
    """PCA, Fourier analysis, circularity and restricted / excluded loss of block ``settings.layer``'s MLP over the
    p² queries after a fixed context (default: ``settings.n_context`` sampled examples, as many as the model reads
    when None, from ``generator``); ``MlpSettings`` or its fields by name."""
    s = MlpSettings.resolve(settings, fields)
    n_components, min_gap, min_fraction, batch_size = s.n_components, s.min_gap, s.min_fraction, s.batch_size
    task = check_modular(task)
    check_token_model(model, task)
    layer = check_layer(model, s.layer)
    if model.cfg.attn_only:
        raise ValueError("model is attention-only: it has no MLP to analyse")
    ctx = resolve_context(task, context if context is not None else s.n_context, max_context(model), generator)
    p = task.p
    mlp_name, resid_name = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_resid_post"
    batch = query_grid(task, ctx)
    logits, flat = run_grid(model, batch.inputs, batch.query_pos, read=[mlp_name, resid_name], batch_size=batch_size)
    acts = {n: einops.rearrange(a, "(x y) d -> x y d", x=p) for n, a in flat.items()}
    w_e = model.W_E.detach()[:p]

    freqs = frequency_norms(w_e, min_gap)
    grid_meta = {"p": p, "a": ctx.a, "b": ctx.b, "layer": layer}
    pcas = PCAs(pca(w_e, n_components, {"p": p, "title": "PCA of W_E"}),
                *(pca(acts[name], n_components, grid_meta | {"hook_name": name, "title": f"PCA of {name}"})
                  for name in (mlp_name, resid_name)))

    answers = grid_answers(p, ctx).flatten()
    x_lab, y_lab = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    circ_rows, best = [], {}
    w_e_score = circularity(w_e).metadata["score"]
    circ_rows.append([w_e_score] * 3)  # W_E is indexed by the token's residue, the same for every role
    for short, name in (("mlp_post", mlp_name), ("resid_post", resid_name)):
        points = flat[name]
        row = []
        for role, lab in (("x", x_lab), ("y", y_lab), ("z", answers)):
            means = grouped_means(points, lab, p)
            c = circularity(means) if means is not None else None
            row.append(0.0 if c is None else c.metadata["score"])
            best[f"{short} {role}"] = None if c is None else c.metadata["frequency"]
        circ_rows.append(row)
    circ = Result("circularity_table", torch.tensor(circ_rows), ("activation", "residue"),
                  labels={"activation": ["W_E", "mlp_post", "resid_post"], "residue": ["x", "y", "z"]},
                  metadata={"p": p, "layer": layer, "best_frequency": best, "context": ctx.to_dict(),
                            "title": f"circularity of the class means, layer {layer}"})

    neurons = neuron_fourier(acts[mlp_name], min_fraction)
    neurons.metadata |= {"layer": layer, "hook_name": mlp_name}
    loss = _restricted_from(model, task, batch, context=ctx, hook_name=mlp_name, acts=flat[mlp_name], logits=logits,
                            frequencies=freqs.metadata["key_frequencies"], batch_size=batch_size)
    return MLPAnalysis(freqs, pcas, circ, neurons, loss, ctx)
