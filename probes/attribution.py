"""Head attribution: direct attribution through the read-out, head ablation, attribution patching, head types.

Every function takes ``(model, task, clean[, corrupted])`` and returns a ``Result``; ``attribute`` is the one
front end. Scores are read at the query position (``clean.query_pos``) and are per-example means; the
per-example values are kept in ``Result.per_example`` for error bars.

- ``direct_attribution`` / ``decompose_output``: each component's direct effect through the read-out. The final
  norm is frozen at the clean run's cached scale, exactly as TransformerLens's ``ActivationCache.apply_ln_to_stack``
  does, so the effects of all components plus the bias term add up to the model's actual output.
- ``ablate_heads``: zero, mean or resample ablation of each head's ``hook_z``, every head in one batched pass
  (variants stacked along the batch dimension, chunked).
- ``attribution_patching``: the first-order estimate (a_clean - a_corrupted) . d metric / d a of exact activation
  patching, for every head, MLP and resid_pre position from one clean forward pass and one corrupted forward and
  backward pass. ``correlation`` reports how well it agrees with exact patching.
- ``head_types``: how much of each head's attention goes to the previous token, itself, token 0, tokens with the
  same value or role, and the x and y of its own and of earlier examples.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable

import einops
import torch
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint

from interp.spec import Model
from interp.tasks import Batch, TaskBase

from .metrics import Answers, Metric, at_query, metrics_for
from interp.results import Result

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
SITES: dict[str, tuple[str, ...]] = {
    "head": ("layer", "head"),
    "head_pos": ("layer", "head", "pos"),
    "mlp": ("layer",),
    "mlp_pos": ("layer", "pos"),
    "resid_pre": ("layer", "pos"),
}
DIRECTIONS = ("denoise", "noise")
HEAD_TYPES: dict[str, str] = {
    "prev_token": "the token just before the query",
    "self": "the query position itself",
    "first_token": "position 0 (from queries after it)",
    "same_token": "earlier tokens with the same value as the query token",
    "same_role": "earlier tokens with the same role (x, y or z slot) as the query",
    "own_x": "the x of the query's own example (when it is earlier)",
    "own_y": "the y of the query's own example (when it is earlier)",
    "earlier_x": "the x tokens of earlier examples",
    "earlier_y": "the y tokens of earlier examples",
}


# ----------------------------------------------------------------------------------------------- metrics


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


def attribution_metric(task: TaskBase, metric: str | Metric | None, corrupted: Batch | None, linear: bool = False) -> tuple[str, Metric]:
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


# ----------------------------------------------------------------------------------------------- plumbing


def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


def _check(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None) -> None:
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


def _labels(model: Model, clean: Batch, axes: tuple[str, ...]) -> dict[str, list[str]]:
    n_pos = clean.inputs.shape[1]
    ticks = {
        "layer": [f"L{l}" for l in range(model.cfg.n_layers)],
        "head": [f"H{h}" for h in range(model.cfg.n_heads)],
        "pos": list(clean.pos_labels) if len(clean.pos_labels) == n_pos else [str(p) for p in range(n_pos)],
        "type": list(HEAD_TYPES),
    }
    return {a: ticks[a] for a in axes}


def _metadata(task: TaskBase, clean: Batch, method: str, metric: str, **more: Any) -> dict[str, Any]:
    return {
        "method": method,
        "metric": metric,
        "task": task.describe(),
        "n_sequences": int(clean.inputs.shape[0]),
        "n_examples": None if clean.examples is None else int(clean.examples.shape[1]),
        "query_pos": clean.query_pos,
        **more,
    }


def _result(kind: str, per_example: Tensor, axes: tuple[str, ...], model: Model, clean: Batch, **kw: Any) -> Result:
    per_example = per_example.detach().float().cpu()
    return Result(kind, per_example.mean(0), axes, _labels(model, clean, axes), per_example, **kw)


def _z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


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
        labels += [f"L{l}H{h}" for h in range(model.cfg.n_heads)] + [f"L{l} attn bias"]
        columns += [*head_fx[:, l].unbind(-1), bias_fx[:, l]]
        if f"{l}_mlp_out" in rest_fx:
            labels.append(f"L{l} mlp")
            columns.append(rest_fx[f"{l}_mlp_out"])
    labels.append("final bias")
    columns.append(constant.expand(clean.inputs.shape[0]))
    return name, labels, torch.stack(columns, dim=-1), fn(at_query(out, clean), answers)


def decompose_output(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None,
                     metric: str | None = None) -> Result:
    """Direct effect of every component on the metric at the query: scores [component], per_example
    [batch, component]. Components: embed, pos_embed, each head, each layer's attention bias, each MLP, and the
    final bias (read-out bias plus the final norm's bias); they add up to the metric (``extras["output"]``)."""
    _check(model, task, clean, corrupted)
    device = _device(model)
    clean, corrupted = clean.to(device), None if corrupted is None else corrupted.to(device)
    name, labels, fx, output = _direct_effects(model, task, clean, corrupted, metric)
    fx = fx.float().cpu()
    return Result("direct_effects", fx.mean(0), ("component",), {"component": labels}, fx,
                  extras={"output": output.float().cpu()}, metadata=_metadata(task, clean, "dla", name))


def direct_attribution(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None,
                       metric: str | None = None) -> Result:
    """Each head's direct effect through the read-out on the metric at the query: scores [layer, head],
    per_example [batch, layer, head]. Metric: ``logit`` (of the clean answer; default without a corrupted batch),
    ``logit_diff`` (clean minus corrupted answer; default with one), ``prediction`` or ``signed_error``."""
    full = decompose_output(model, task, clean, corrupted, metric)
    labels = full.labels["component"]
    index = [labels.index(f"L{l}H{h}") for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    per_example = einops.rearrange(full.per_example[:, index], "b (l h) -> b l h", l=model.cfg.n_layers)
    return _result("direct_attribution", per_example, ("layer", "head"), model, clean,
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
    names = [_z_name(l) for l in range(model.cfg.n_layers)]
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
    _check(model, task, clean, corrupted)
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    device = _device(model)
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
                hooks.append((_z_name(l), partial(_ablate_hook, mask=mask, replacement=values[l])))
        stack = partial(einops.repeat, pattern="b ... -> (n b) ...", n=n)
        out = model.run_with_hooks(stack(clean.inputs), fwd_hooks=hooks)
        metric_vals = fn(out[:, clean.query_pos], Answers(stack(answers.clean), stack(answers.corrupted)))
        effects[:, start : start + n] = einops.rearrange(metric_vals, "(n b) -> b n", n=n) - base[:, None]
    per_example = einops.rearrange(effects, "b (l h) -> b l h", l=n_layers)
    return _result("head_ablation", per_example, ("layer", "head"), model, clean,
                   extras={"clean_metric": base.mean().cpu()},
                   metadata=_metadata(task, clean, "ablate", name, ablation=ablation,
                                      resample_source=("corrupted" if corrupted is not None else "next clean sequence")
                                      if ablation == "resample" else None))


# ----------------------------------------------------------------------------------------------- attribution patching


def _site_names(model: Model) -> dict[str, list[str]]:
    layers = range(model.cfg.n_layers)
    return {
        "z": [_z_name(l) for l in layers],
        "mlp_out": [] if model.cfg.attn_only else [f"blocks.{l}.hook_mlp_out" for l in layers],
        "resid_pre": [f"blocks.{l}.hook_resid_pre" for l in layers],
    }


def attribution_patching(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, metric: str | Metric | None = None,
                         direction: str = "denoise") -> dict[str, Result]:
    """Attribution patching of every site in ``SITES`` from one source forward and one target forward and backward.

    ``denoise`` (as TransformerLens's get_act_patch_*): the estimate of metric(corrupted run with the clean
    activation patched in) - metric(corrupted run), i.e. (a_clean - a_corrupted) . d metric / d a at the corrupted
    run. ``noise``: corrupted into clean, (a_corrupted - a_clean) . d metric / d a at the clean run.
    Returns {site: Result}; ``mlp``/``mlp_pos`` are absent for attention-only models."""
    _check(model, task, clean, corrupted)
    if corrupted is None:
        raise ValueError("attribution patching needs a corrupted batch")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    device = _device(model)
    clean, corrupted = clean.to(device), corrupted.to(device)
    name, fn = attribution_metric(task, metric, corrupted)
    answers = Answers.of(clean, corrupted)
    source, target = (clean, corrupted) if direction == "denoise" else (corrupted, clean)
    names = _site_names(model)
    flat = [n for group in names.values() for n in group]

    with torch.no_grad():
        src_out, src_cache = model.run_with_cache(source.inputs, names_filter=flat)
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: HookPoint) -> Tensor:
        acts[hook.name] = act  # type: ignore[index]
        return act

    def leaf(act: Tensor, hook: HookPoint) -> Tensor:
        # a frozen model would give activations outside the graph; start one at the embedding
        return act if act.requires_grad else act.detach().requires_grad_(True)

    with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", leaf)] + [(n, keep) for n in flat]):
        tgt_out = model(target.inputs)
        tgt_metric = fn(at_query(tgt_out, clean), answers)
        grads = dict(zip(flat, torch.autograd.grad(tgt_metric.sum(), [acts[n] for n in flat])))

    def attrib(hook_name: str, pattern: str) -> Tensor:
        delta = src_cache[hook_name] - acts[hook_name].detach()
        return einops.einsum(delta, grads[hook_name], pattern)

    head_pos = torch.stack([attrib(n, "b p h d, b p h d -> b h p") for n in names["z"]], dim=1)  # [b, l, h, p]
    per_site = {"head": head_pos.sum(-1), "head_pos": head_pos,
                "resid_pre": torch.stack([attrib(n, "b p d, b p d -> b p") for n in names["resid_pre"]], dim=1)}
    if names["mlp_out"]:
        per_site["mlp_pos"] = torch.stack([attrib(n, "b p d, b p d -> b p") for n in names["mlp_out"]], dim=1)
        per_site["mlp"] = per_site["mlp_pos"].sum(-1)
    with torch.no_grad():
        src_metric = fn(at_query(src_out, clean), answers)
    metric_clean, metric_corrupted = (src_metric, tgt_metric) if direction == "denoise" else (tgt_metric, src_metric)
    meta = _metadata(task, clean, "attrib", name, direction=direction,
                     metric_clean=metric_clean.mean().item(), metric_corrupted=metric_corrupted.mean().item())
    return {site: _result("attribution_patching", per_site[site], SITES[site], model, clean,
                          metadata=meta | {"site": site}) for site in SITES if site in per_site}


def attribution_patch(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, site: str = "head",
                      metric: str | Metric | None = None, direction: str = "denoise") -> Result:
    """Attribution patching at one site of ``SITES``: head [layer, head], head_pos [layer, head, pos],
    mlp [layer], mlp_pos [layer, pos], resid_pre [layer, pos]."""
    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    if site.startswith("mlp") and model.cfg.attn_only:
        raise ValueError(f"site {site!r} needs MLPs but the model is attention-only")
    return attribution_patching(model, task, clean, corrupted, metric, direction)[site]


def correlation(a: Result | Tensor, b: Result | Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation of two score tensors of the same shape (e.g. attribution vs exact
    patching), over all cells: {"pearson", "spearman", "n"}. NaN when either is constant."""
    from scipy.stats import rankdata

    x = (a.scores if isinstance(a, Result) else a).detach().double().cpu().flatten()
    y = (b.scores if isinstance(b, Result) else b).detach().double().cpu().flatten()
    if x.shape != y.shape:
        raise ValueError(f"cannot correlate scores of {x.numel()} and {y.numel()} cells; shapes must match")

    def pearson(u: Tensor, v: Tensor) -> float:
        u, v = u - u.mean(), v - v.mean()
        denom = (u.norm() * v.norm()).item()
        return float("nan") if denom == 0 else (u @ v).item() / denom

    rx, ry = torch.from_numpy(rankdata(x.numpy())), torch.from_numpy(rankdata(y.numpy()))
    return {"pearson": pearson(x, y), "spearman": pearson(rx, ry), "n": float(x.numel())}


# ----------------------------------------------------------------------------------------------- head types


def _roles(labels: tuple[str, ...], n_pos: int) -> tuple[list[str], Tensor]:
    """(role per position, example index per position) parsed from pos_labels like ("x0", "y0", "z0", ...)."""
    if len(labels) != n_pos:
        raise ValueError(f"clean.pos_labels has {len(labels)} labels for {n_pos} positions; sample it with task.sample")
    parsed = [re.fullmatch(r"([A-Za-z_]+?)(\d*)", lab) for lab in labels]
    if not all(parsed):
        raise ValueError(f"clean.pos_labels must look like 'x0', 'y0', ... or a bare role like 'query'; got {labels[:3]}")
    # a bare role (complex-zeros' final "query") belongs to an example of its own, after every numbered one
    last = max((int(m.group(2)) for m in parsed if m and m.group(2)), default=-1)  # type: ignore[union-attr]
    return ([m.group(1) for m in parsed],  # type: ignore[union-attr]
            torch.tensor([int(m.group(2)) if m.group(2) else last + 1 for m in parsed]))  # type: ignore[union-attr]


def head_type_masks(clean: Batch) -> dict[str, Tensor]:
    """For each of ``HEAD_TYPES``, which keys count: [batch or 1, query_pos, key_pos] bool."""
    n_pos = clean.inputs.shape[1]
    role, idx = _roles(clean.pos_labels, n_pos)
    device = clean.inputs.device
    idx = idx.to(device)
    qpos, kpos = torch.arange(n_pos, device=device)[:, None], torch.arange(n_pos, device=device)[None, :]
    before = kpos < qpos
    codes = {r: i for i, r in enumerate(sorted(set(role)))}
    rc = torch.tensor([codes[r] for r in role], device=device)
    is_x, is_y = rc == codes.get("x", -1), rc == codes.get("y", -1)
    tokens = clean.inputs
    same = tokens[:, :, None] == tokens[:, None, :]
    if tokens.dim() == 3:  # real-valued tokens: every channel equal
        same = same.all(-1)
    own = idx[None, :] == idx[:, None]
    earlier = idx[None, :] < idx[:, None]
    masks = {
        "prev_token": kpos == qpos - 1,
        "self": kpos == qpos,
        "first_token": (kpos == 0) & (qpos >= 1),
        "same_token": before[None] & same,
        "same_role": before & (rc[None, :] == rc[:, None]),
        "own_x": before & own & is_x[None, :],
        "own_y": before & own & is_y[None, :],
        "earlier_x": earlier & is_x[None, :],
        "earlier_y": earlier & is_y[None, :],
    }
    return {k: (m if m.dim() == 3 else m[None]) for k, m in masks.items()}


@torch.no_grad()
def head_types(model: Model, task: TaskBase, clean: Batch, queries: str | None = None) -> Result:
    """Share of each head's attention that goes to each of ``HEAD_TYPES``: scores [layer, head, type].

    A share is |pattern[q, k]| summed over the keys of the type, over |pattern[q, :]| summed (for softmax the
    row already sums to 1). It is averaged over sequences and query positions where the type has at least one
    key (e.g. own_y only from z positions), and ``queries`` (a role such as "y") restricts the query positions;
    a type with no such query scores NaN. ``extras["n_queries"]`` [type] counts the (sequence, query) pairs."""
    _check(model, task, clean, None)
    clean = clean.to(_device(model))
    n_pos = clean.inputs.shape[1]
    masks = head_type_masks(clean)
    role, _ = _roles(clean.pos_labels, n_pos)
    if queries is not None and queries not in role:
        raise ValueError(f"queries must be a role among {', '.join(sorted(set(role)))} or None, got {queries!r}")
    use_q = torch.tensor([queries is None or r == queries for r in role], device=clean.inputs.device)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(clean.inputs, names_filter=names)
    weights = torch.stack([cache[n] for n in names]).abs()  # [layer, batch, head, q, k]
    share = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    scores, counts = [], []
    for mask in masks.values():
        m = mask.to(share.dtype)  # [batch or 1, q, k]
        defined = (mask.any(-1) & use_q).to(share.dtype).expand(clean.inputs.shape[0], n_pos)  # [batch, q]
        got = einops.einsum(share, m.expand(clean.inputs.shape[0], n_pos, n_pos), "l b h q k, b q k -> l b h q")
        total = einops.einsum(got, defined, "l b h q, b q -> l h")
        n = defined.sum()
        scores.append(total / n if n > 0 else torch.full_like(total, float("nan")))
        counts.append(n)
    result_scores = torch.stack(scores, dim=-1).float().cpu()
    axes = ("layer", "head", "type")
    return Result("head_types", result_scores, axes, _labels(model, clean, axes),
                  extras={"n_queries": torch.stack(counts).float().cpu()},
                  metadata=_metadata(task, clean, "head_types", "attention share", queries=queries))


# ----------------------------------------------------------------------------------------------- front end


def attribute(model: Model, task: TaskBase, clean: Batch, corrupted: Batch | None = None, method: str = "dla",
              metric: str | Metric | None = None, ablation: str = "mean", site: str = "head",
              direction: str = "denoise", queries: str | None = None) -> Result:
    """Head attribution by ``method`` (see ``METHODS``): dla -> [layer, head]; ablate -> [layer, head];
    attrib -> the axes of ``site`` (see ``SITES``); head_types -> [layer, head, type]."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    runners: dict[str, Callable[[], Result]] = {
        "dla": lambda: direct_attribution(model, task, clean, corrupted, metric),  # type: ignore[arg-type]
        "ablate": lambda: ablate_heads(model, task, clean, corrupted, ablation, metric),
        "attrib": lambda: attribution_patch(model, task, clean, corrupted, site, metric, direction),  # type: ignore[arg-type]
        "head_types": lambda: head_types(model, task, clean, queries),
    }
    if method == "attrib" and corrupted is None:
        raise ValueError("method 'attrib' needs a corrupted batch (e.g. task.corrupt(clean, 'params', generator))")
    return runners[method]()


__all__ = [
    "METHODS", "ABLATIONS", "SITES", "DIRECTIONS", "HEAD_TYPES", "attribute", "direct_attribution",
    "decompose_output", "ablate_heads", "ablation_values", "attribution_patching", "attribution_patch",
    "correlation", "head_types", "head_type_masks", "correct_logit", "prediction", "attribution_metric",
]
