"""Head attribution: direct attribution through the read-out and head ablation, and ``attribute``, the one front end
of the head probes (with attribution patching, ``probes.attribution_patching``, and head types, ``probes.head_types``).

Every function takes ``(model, task, clean[, corrupted])`` and returns a ``Result``. Scores are read at the query
position (``clean.query_pos``) and are per-example means; the per-example values are kept in
``Result.per_example`` for error bars.

- ``direct_attribution`` / ``decompose_output``: each component's direct effect through the read-out. The final
  norm is frozen at the clean run's cached scale, exactly as TransformerLens's ``ActivationCache.apply_ln_to_stack``
  does, so the effects of all components plus the bias term add up to the model's actual output.
- ``ablate_heads``: zero, mean or resample ablation of each head's ``hook_z``, every head in one batched pass
  (variants stacked along the batch dimension, chunked).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import einops
import torch
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interp.results import Result, tick_label
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.attribution_patching import DIRECTIONS, SITES, attribution_patch
from probes.head_types import head_types
from probes.inputs import check_batches, mean_result, model_device, run_metadata
from probes.metrics import Answers, Metric, at_query, attribution_metric, callable_metric
from probes.settings import AttributeSettings

METHODS: dict[str, str] = {
    "dla": "direct effect of each head through the read-out at the query (frozen final norm)",
    "ablate": "change in the metric when each head's output (hook_z) is ablated",
    "attrib": "attribution patching: (a_clean - a_corrupted) . d metric / d a, the linear estimate of patching",
    "head_types": "share of each head's attention going to the previous token, same value, same role, ...",
}
ABLATIONS: dict[str, str] = {
    "zero": "hook_z set to zero",
    "mean": "hook_z set to its mean over the clean batch, position by position",
    "resample": "hook_z taken from the corrupted batch (or, without one, from the next sequence of the clean batch)",
}


# ----------------------------------------------------------------------------------------------- direct attribution


def _readout_direction(model: Model, task: TaskBase, name: str, answers: Answers) -> tuple[Tensor, Tensor]:
    """(direction [batch, d_model], constant [batch]) such that metric = x . direction + constant, where x is the
    resid at the query after the final norm's centring and scaling but before its weight (what apply_ln_to_stack
    gives). The norm's weight is folded into the direction; its bias, b_U and any answer offset into the constant."""
    W_U, b_U = model.unembed.W_U, model.unembed.b_U  # [d_model, d_out], [d_out]
    if name in ("logit", "logit_diff"):
        coef = torch.nn.functional.one_hot(answers.clean, W_U.shape[1]).to(W_U.dtype)
        if name == "logit_diff":
            coef = coef - torch.nn.functional.one_hot(answers.corrupted, W_U.shape[1]).to(W_U.dtype)
    else:
        coef = torch.ones(answers.clean.shape[0], W_U.shape[1], dtype=W_U.dtype, device=W_U.device)
    direction = coef @ W_U.T  # [batch, d_model]
    constant = coef @ b_U
    if name == "signed_error":
        constant = constant - answers.clean.sum(-1)
    ln = getattr(model, "ln_final", None)
    if getattr(ln, "b", None) is not None:
        constant = constant + direction @ ln.b
    if getattr(ln, "w", None) is not None:
        direction = direction * ln.w
    return direction, constant


@torch.no_grad()
def _direct_effects(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None,
                    metric: str | None) -> tuple[str, list[str], Tensor, Tensor]:
    """(metric name, component labels, effects [batch, component], actual metric [batch])."""
    name, fn = attribution_metric(task, metric, corrupted, linear=True)
    answers = Answers.of(clean, corrupted if corrupted is not None else clean)
    q, n_layers = clean.query_pos, model.cfg.n_layers
    wanted = ("hook_embed", "hook_pos_embed", "ln_final.hook_scale", "attn.hook_z", "hook_mlp_out")
    out, cache = model.run_with_cache(clean.inputs, names_filter=lambda n: n.endswith(wanted))
    assert isinstance(cache, ActivationCache)
    # embeddings and MLP outputs, normalised with the cached final scale (the frozen-LN identity); a model without
    # a final norm (none at all, or final_norm=False) reads the residual out linearly, so nothing is normalised
    final_ln = hasattr(model, "ln_final")
    rest, rest_labels = cache.decompose_resid(mode="mlp", apply_ln=final_ln, pos_slice=q, return_labels=True)
    heads = cache.stack_head_results(layer=-1, pos_slice=q, apply_ln=final_ln)  # [layer*head, batch, d_model]
    b_O = einops.repeat(torch.stack([block.attn.b_O for block in model.blocks]), "l d -> l b d", b=clean.inputs.shape[0])
    if final_ln:
        b_O = cache.apply_ln_to_stack(b_O, None, pos_slice=q)
    direction, constant = _readout_direction(model, task, name, answers)

    def effects(stack: Tensor) -> Tensor:
        return einops.einsum(stack, direction, "c b d, b d -> b c")

    head_fx = einops.rearrange(effects(heads), "b (l h) -> b l h", l=n_layers)
    rest_fx = dict(zip(rest_labels, effects(rest).unbind(-1)))
    bias_fx = effects(b_O)
    labels, columns = [], []
    for key in ("embed", "pos_embed"):
        if key in rest_fx:
            labels.append(key)
            columns.append(rest_fx[key])
    for l in range(n_layers):
        labels += [tick_label(l, h) for h in range(model.cfg.n_heads)] + [f"{tick_label(l)} attn bias"]
        columns += [*head_fx[:, l].unbind(-1), bias_fx[:, l]]
        if f"{l}_mlp_out" in rest_fx:
            labels.append(f"{tick_label(l)} mlp")
            columns.append(rest_fx[f"{l}_mlp_out"])
    labels.append("final bias")
    columns.append(constant.expand(clean.inputs.shape[0]))
    return name, labels, torch.stack(columns, dim=-1), fn(at_query(out, clean), answers)


def decompose_output(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None,
                     metric: str | None = None) -> Result:
    """Direct effect of every component on the metric at the query: scores [component], per_example
    [batch, component]. Components: embed, pos_embed, each head, each layer's attention bias, each MLP, and the
    final bias (read-out bias plus the final norm's bias); they add up to the metric (``extras["output"]``)."""
    check_batches(model, task, clean, corrupted)
    device = model_device(model)
    clean, corrupted = clean.to(device), None if corrupted is None else corrupted.to(device)
    name, labels, fx, output = _direct_effects(model, task, clean, corrupted, metric)
    fx = fx.float().cpu()
    return Result("direct_effects", fx.mean(0), ("component",), {"component": labels}, fx,
                  extras={"output": output.float().cpu()}, metadata=run_metadata(task, clean, "dla", name))


def direct_attribution(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None,
                       metric: str | None = None) -> Result:
    """Each head's direct effect through the read-out on the metric at the query: scores [layer, head],
    per_example [batch, layer, head]. Metric: ``logit`` (of the clean answer; default without a corrupted batch),
    ``logit_diff`` (clean minus corrupted answer; default with one), ``prediction`` or ``signed_error``."""
    full = decompose_output(model, task, clean, corrupted, metric)
    labels = full.labels["component"]
    index = [labels.index(tick_label(l, h)) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    per_example = einops.rearrange(full.per_example[:, index], "b (l h) -> b l h", l=model.cfg.n_layers)
    return mean_result("direct_attribution", per_example, ("layer", "head"), model, clean,
                       extras={"output": full.extras["output"].mean()}, metadata=full.metadata)


# ----------------------------------------------------------------------------------------------- ablation


def _ablate_hook(z: Tensor, hook: HookPoint, mask: Tensor, replacement: Tensor) -> Tensor:
    """Variant i of the stacked batch gets ``replacement`` in the heads ``mask[i]`` marks.
    z: [(variant batch), pos, head, d_head]; mask: [variant, head]; replacement: [batch, pos, head, d_head]."""
    zv = einops.rearrange(z, "(n b) p h d -> n b p h d", n=mask.shape[0])
    out = torch.where(mask[:, None, None, :, None], replacement[None], zv)
    return einops.rearrange(out, "n b p h d -> (n b) p h d")


def ablation_values(model: Model, clean: Batch, corrupted: Batch | None, ablation: str) -> list[Tensor]:
    """What ablation puts in each layer's hook_z: [layer] of [batch, pos, head, d_head]."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    if ablation == "resample" and corrupted is None and clean.inputs.shape[0] < 2:
        raise ValueError("ablation 'resample' without a corrupted batch needs at least 2 clean sequences")
    source = corrupted if (ablation == "resample" and corrupted is not None) else clean
    with torch.no_grad():
        _, cache = model.run_with_cache(source.inputs, names_filter=names)
    zs = [cache[n] for n in names]
    if ablation == "zero":
        return [torch.zeros_like(z) for z in zs]
    if ablation == "mean":
        return [z.mean(0, keepdim=True).expand_as(z) for z in zs]
    return zs if corrupted is not None else [torch.roll(z, 1, dims=0) for z in zs]  # another clean sequence


@torch.no_grad()
def ablate_heads(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None, ablation: str = "mean",
                 metric: str | Metric | None = None, max_batch: int = 2048) -> Result:
    """metric(head ablated) - metric(clean) for every head: scores [layer, head], per_example [batch, layer, head].

    Every (layer, head) is one variant of the clean batch; variants are stacked along the batch dimension,
    ``max_batch`` sequences per forward pass."""
    check_batches(model, task, clean, corrupted)
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    device = model_device(model)
    clean, corrupted = clean.to(device), None if corrupted is None else corrupted.to(device)
    name, fn = attribution_metric(task, metric, corrupted)
    answers = Answers.of(clean, corrupted if corrupted is not None else clean)
    values = ablation_values(model, clean, corrupted, ablation)
    n_layers, n_heads, batch = model.cfg.n_layers, model.cfg.n_heads, clean.inputs.shape[0]
    base = fn(at_query(model(clean.inputs), clean), answers)
    variants = [(l, h) for l in range(n_layers) for h in range(n_heads)]
    per_chunk = max(1, max_batch // batch)
    effects = torch.empty(batch, len(variants), device=device)
    for start in range(0, len(variants), per_chunk):
        chunk = variants[start : start + per_chunk]
        n = len(chunk)
        hooks = []
        for l in range(n_layers):
            mask = torch.zeros(n, n_heads, dtype=torch.bool, device=device)
            for i, (layer, head) in enumerate(chunk):
                mask[i, head] = layer == l
            if mask.any():
                hooks.append((get_act_name("z", l), partial(_ablate_hook, mask=mask, replacement=values[l])))
        stack = partial(einops.repeat, pattern="b ... -> (n b) ...", n=n)
        out = model.run_with_hooks(stack(clean.inputs), fwd_hooks=hooks)
        metric_vals = fn(out[:, clean.query_pos], Answers(stack(answers.clean), stack(answers.corrupted)))
        effects[:, start : start + n] = einops.rearrange(metric_vals, "(n b) -> b n", n=n) - base[:, None]
    per_example = einops.rearrange(effects, "b (l h) -> b l h", l=n_layers)
    return mean_result("head_ablation", per_example, ("layer", "head"), model, clean,
                       extras={"clean_metric": base.mean().cpu()},
                       metadata=run_metadata(task, clean, "ablate", name, ablation=ablation,
                                             resample_source=("corrupted" if corrupted is not None else "next clean sequence")
                                             if ablation == "resample" else None))


# ----------------------------------------------------------------------------------------------- front end


def attribute(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None,
              settings: AttributeSettings | None = None, **fields: Any) -> Result:
    """Head attribution by ``settings.method`` (see ``METHODS``; ``AttributeSettings`` or its fields by name):
    dla -> [layer, head]; ablate -> [layer, head]; attrib -> the axes of ``site`` (see ``SITES``);
    head_types -> [layer, head, type]. ``metric`` may also be a callable (out, answers) -> [batch]."""
    metric = callable_metric(fields)
    s = AttributeSettings.resolve(settings, fields)
    metric = metric or s.metric
    runners: dict[str, Callable[[], Result]] = {
        "dla": lambda: direct_attribution(model, task, clean, corrupted, metric),  # type: ignore[arg-type]
        "ablate": lambda: ablate_heads(model, task, clean, corrupted, s.ablation, metric, max_batch=s.max_batch),
        "attrib": lambda: attribution_patch(model, task, clean, corrupted, s.site, metric, s.direction),  # type: ignore[arg-type]
        "head_types": lambda: head_types(model, task, clean, s.queries),
    }
    if s.method == "attrib" and corrupted is None:
        raise ValueError("method 'attrib' needs a corrupted batch (e.g. task.corrupt(clean, 'params', generator))")
    return runners[s.method]()


__all__ = ["METHODS", "ABLATIONS", "attribute", "direct_attribution", "decompose_output", "ablate_heads", "ablation_values"]
