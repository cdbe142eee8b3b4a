"""Saturation: how far outside its training range a regression model's prediction can go, and why.

Naim & Asher (SCIENCE.md §2): a model trained on bounded targets tracks the target inside the training range
and then plateaus at a boundary value B. The argument is that layer norm keeps vector norms bounded and
softmax makes each attention output a convex combination of such vectors, so the prediction cannot leave
the hull of what training taught. ``saturation`` sweeps one scale field of the task (inputs x·s, or the
coefficient scale σ) from inside the training range to far outside it and records, at the query, what the
argument is about: the prediction against the target, attention entropy and maximum weight per head, the
range of attention scores, the layer-norm scale per site and the residual-stream norm per layer. From the
prediction it reads off B and sets it beside the training range R that explains it.
``compare_boundaries`` does the same for several variants on identical sequences, to show which removal
(LN, softmax, MLPs) moves or removes the plateau.

Every sweep re-seeds one generator at every scale, so the sequences at scale s are the scale-1 sequences with
the swept field multiplied by s (for Gaussian and uniform draws this is exact): curves differ by scale only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from interp.evaluate import SCALE_FIELDS
from interp.spec import Model
from interp.tasks import Batch, TaskBase, examples_that_fit
from probes.results import Result

DEFAULT_SCALES: tuple[float, ...] = tuple(2.0 ** (i / 2) for i in range(-4, 9))
"""0.25 to 16 in half-octaves: scale 1 is the training distribution."""

COEF_FIELDS: dict[str, str] = {"linear": "w_scale", "polynomial": "coef_scale", "complex-zeros": "root_radius"}
"""The field that scales the function (σ, or the roots' radius) per task; ``field="coef"`` picks it,
``field="input"`` the input scale."""

EXTRA_AXES: dict[str, tuple[str, ...]] = {
    "prediction": ("scale", "example", "out"),
    "target": ("scale", "example", "out"),
    "target_quantile": ("scale",),
    "median_prediction": ("scale",),
    "relative_error": ("scale",),
    "normalised_error": ("scale",),
    "entropy": ("scale", "layer", "head"),
    "max_weight": ("scale", "layer", "head"),
    "weight_sum": ("scale", "layer", "head"),
    "score_range": ("scale", "layer", "head"),
    "ln_scale": ("scale", "site"),
    "resid_norm": ("scale", "layer"),
}
"""Axis names of every extra a saturation Result carries (also stored in its metadata)."""


# --- arguments -----------------------------------------------------------------------------------------


def _check_task(task: TaskBase, what: str) -> None:
    if getattr(task, "kind", None) != "regression":
        raise ValueError(f"{what} needs a regression task; task {getattr(task, 'name', task)!r} is {getattr(task, 'kind', '?')}")


def _resolve_field(task: TaskBase, field: str | None) -> str:
    """The task field a sweep multiplies: ``field`` itself, or the input scale (None, "input") or σ ("coef")."""
    floats = [f.name for f in dataclasses.fields(task) if isinstance(getattr(task, f.name), float)]  # type: ignore[arg-type]
    if field in (None, "input"):
        field = SCALE_FIELDS.get(task.name)
    elif field == "coef":
        field = COEF_FIELDS.get(task.name)
        if field is None:
            raise ValueError(f"field 'coef' has no meaning for task {task.name!r}; choose from {', '.join(floats)}")
    if field not in floats:
        raise ValueError(f"field must be a float field of task {task.name!r} ({', '.join(floats)}) or 'input'/'coef', got {field!r}")
    return field


def _check_scales(scales: Sequence[float] | None) -> list[float]:
    scales = list(DEFAULT_SCALES if scales is None else scales)
    if not scales or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive finite numbers, got {scales!r}")
    return sorted(float(s) for s in scales)


def _check_sizes(n: int, quantile: float) -> None:
    if n < 8:
        raise ValueError(f"n must be at least 8, got {n}")
    if not 0.5 <= quantile < 1:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")


def _seed(generator: torch.Generator | None) -> int:
    return 0 if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


# --- measuring one batch ------------------------------------------------------------------------------


def _sites(model: Model) -> dict[str, list[str]]:
    """The hook names the sweep reads, by role; LN sites only where the model has them."""
    n_layers = model.cfg.n_layers
    ln = [f"blocks.{l}.{s}.hook_scale" for l in range(n_layers) for s in ("ln1", "ln2")] + ["ln_final.hook_scale"]
    return {
        "pattern": [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)],
        "scores": [f"blocks.{l}.attn.hook_attn_scores" for l in range(n_layers)],
        "ln": [h for h in ln if h in model.hook_dict],
        "resid": [f"blocks.{l}.hook_resid_post" for l in range(n_layers)],
    }


def _query_stats(model: Model, batch: Batch, sites: dict[str, list[str]], device: torch.device) -> dict[str, Tensor]:
    """Prediction, target and attention / LN / residual statistics at the query, per example."""
    q = batch.query_pos
    wanted = {h for hs in sites.values() for h in hs}
    out, cache = model.run_with_cache(batch.inputs.to(device), names_filter=lambda name: name in wanted)
    # Only keys 0..q exist for the query row; scores elsewhere are -inf from the causal mask.
    pattern = torch.stack([cache[h][:, :, q, : q + 1] for h in sites["pattern"]], dim=1).double().cpu()  # [b, layer, head, key]
    scores = torch.stack([cache[h][:, :, q, : q + 1] for h in sites["scores"]], dim=1).double().cpu()
    # Entropy of |weights| renormalised: the usual entropy for softmax, still defined for relu / linear scoring.
    mass = pattern.abs()
    p = mass / mass.sum(-1, keepdim=True).clamp(min=1e-300)
    entropy = -(p * p.clamp(min=1e-300).log()).sum(-1)
    finite = torch.isfinite(scores)
    hi = torch.where(finite, scores, torch.full_like(scores, -math.inf)).amax(-1)
    lo = torch.where(finite, scores, torch.full_like(scores, math.inf)).amin(-1)
    n = batch.inputs.shape[0]
    return {
        "prediction": out[:, q].double().cpu(),
        "target": batch.targets[:, q].double(),
        "entropy": entropy,
        "max_weight": pattern.amax(-1),
        "weight_sum": pattern.sum(-1),
        "score_range": torch.where(finite.any(-1), hi - lo, torch.zeros_like(hi)),
        "ln_scale": torch.stack([cache[h][:, q].reshape(n, -1).mean(-1) for h in sites["ln"]], dim=-1).double().cpu()
        if sites["ln"] else torch.zeros(n, 0, dtype=torch.float64),
        "resid_norm": torch.stack([cache[h][:, q].norm(dim=-1) for h in sites["resid"]], dim=-1).double().cpu(),
    }


@torch.no_grad()
def _sweep(model: Model, task: TaskBase, scales: list[float], field: str, n: int, n_examples: int, seed: int,
           chunk: int = 512) -> dict[str, Tensor]:
    """Per-example query statistics at every scale: {name: [scale, example, ...]}."""
    device = next(model.parameters()).device
    sites = _sites(model)
    base = getattr(task, field)
    was_training = model.training
    model.eval()
    try:
        rows = []
        for s in scales:
            batch = task.replace(**{field: base * s}).sample(n, n_examples, torch.Generator().manual_seed(seed))  # type: ignore[attr-defined]
            parts = [_query_stats(model, _rows(batch, i, i + chunk), sites, device) for i in range(0, n, chunk)]
            rows.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    finally:
        model.train(was_training)
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    """Sequences ``start:stop`` of ``batch`` (inputs, targets and mask are all the statistics need)."""
    return Batch(batch.inputs[start:stop], batch.targets[start:stop], batch.loss_mask[start:stop], pos_labels=batch.pos_labels)


def _train_range(task: TaskBase, n_examples: int, seed: int, quantile: float = 0.99, n: int = 4096) -> tuple[float, float]:
    """(high quantile, max) of |target| over every loss position of ``n`` sequences at scale 1: the range of y
    a model trained on ``task`` has seen."""
    batch = task.sample(n, n_examples, torch.Generator().manual_seed(seed + 1))  # type: ignore[attr-defined]
    mags = batch.targets[batch.loss_mask].double().norm(dim=-1)
    return torch.quantile(mags, quantile).item(), mags.max().item()


# --- reading off the boundary --------------------------------------------------------------------------


def _magnitude(v: Tensor) -> Tensor:
    """|v| over output channels: [..., out] -> [...]."""
    return v.norm(dim=-1)


def _boundary(pred: Tensor, target: Tensor, scales: list[float], train_range: float,
              quantile: float, far: float, tol: float) -> dict[str, Any]:
    """B and where tracking stops, from predictions and targets [scale, example, out].

    B is the ``quantile`` of |prediction| over the examples whose |target| exceeds ``far`` x the training range,
    at the tail scales (the largest two octaves of the grid, at least the two largest scales): the level |prediction|
    approaches as |target| grows. ``tail_slope`` is d log |prediction| / d log |target| (upper quantiles) over
    those scales: near 0 on a plateau, near 1 while the model extrapolates."""
    p_mag, t_mag = _magnitude(pred), _magnitude(target)
    tail = [j for j, s in enumerate(scales) if s >= scales[-1] / 4]
    if len(tail) < 2:
        tail = list(range(len(scales)))[-2:]
    p_tail, t_tail = p_mag[tail], t_mag[tail]
    is_far = t_tail > far * train_range
    nan = float("nan")
    out: dict[str, Any] = {"boundary": torch.quantile(p_tail[is_far], quantile).item() if is_far.any() else nan,
                           "n_far": int(is_far.sum()), "tail_scales": [scales[j] for j in tail]}
    if pred.shape[-1] == 1:
        p_s, t_s = pred[tail, :, 0], target[tail, :, 0]
        up, down = t_s > far * train_range, t_s < -far * train_range
        out["boundary_plus"] = torch.quantile(p_s[up], quantile).item() if up.any() else nan
        out["boundary_minus"] = torch.quantile(p_s[down], 1 - quantile).item() if down.any() else nan
    else:
        out["boundary_plus"] = out["boundary_minus"] = None
    if len(tail) >= 2:
        lp = torch.quantile(p_tail, quantile, dim=1).clamp(min=1e-300).log()
        lt = torch.quantile(t_tail, quantile, dim=1).clamp(min=1e-300).log()
        dt = lt - lt.mean()
        out["tail_slope"] = ((dt * (lp - lp.mean())).sum() / dt.pow(2).sum().clamp(min=1e-300)).item()
    else:
        out["tail_slope"] = nan
    out["saturated"] = bool(out["tail_slope"] < 0.5) if not math.isnan(out["tail_slope"]) else None

    rel = (pred - target).norm(dim=-1) / t_mag.clamp(min=1e-300)  # [scale, example]
    per_scale = rel.median(dim=1).values
    out["breakdown_scale"] = _first_of_failing_run(per_scale.tolist(), scales, tol)
    # The same in target units: bin every example of every scale by |target| (log bins), median error per bin.
    t_all, r_all = t_mag.flatten(), rel.flatten()
    lo, hi = torch.quantile(t_all, 0.05).clamp(min=1e-12).item(), t_all.max().item()
    n_bins = max(4, min(24, len(t_all) // 40))
    edges = torch.logspace(math.log10(lo), math.log10(hi) + 1e-9, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(t_all, edges) - 1
    errs, lefts = [], []
    for b in range(len(edges) - 1):
        sel = idx == b
        if sel.sum() >= 10:
            errs.append(r_all[sel].median().item())
            lefts.append(edges[b].item())
    out["stops_tracking_at"] = _first_of_failing_run(errs, lefts, tol)
    out["relative_error"] = per_scale
    return out


def _first_of_failing_run(errors: list[float], xs: list[float], tol: float) -> float | None:
    """The first x from which every error exceeds ``tol`` (None when the last one is within it)."""
    if not errors or errors[-1] <= tol:
        return None
    j = len(errors) - 1
    while j > 0 and errors[j - 1] > tol:
        j -= 1
    return xs[j]


def _ln_final_bound(model: Model) -> list[list[float]] | None:
    """[[low, high] per output]: the supremum of the read-out over every residual stream, from the final norm.

    LN makes the normalised vector n centred with ‖n‖ ≤ √d_model, so pred_j = n·(γ⊙W_U[:, j]) + β·W_U[:, j] + b_U[j]
    lies within √d_model·‖P(γ⊙W_U[:, j])‖ of its centre (P removes the mean; RMS norms do not centre).
    None for models without a final norm, whose output is unbounded."""
    norm = model.cfg.normalization_type
    if norm is None or not hasattr(model, "ln_final") or not hasattr(model.unembed, "W_U"):
        return None
    w_u = model.unembed.W_U.detach().double().cpu()  # [d_model, d_out]
    ln = model.ln_final
    gamma = ln.w.detach().double().cpu() if hasattr(ln, "w") else torch.ones(w_u.shape[0], dtype=torch.float64)
    beta = ln.b.detach().double().cpu() if hasattr(ln, "b") else torch.zeros(w_u.shape[0], dtype=torch.float64)
    b_u = model.unembed.b_U.detach().double().cpu()
    g = gamma[:, None] * w_u
    if norm.startswith("LN"):
        g = g - g.mean(dim=0, keepdim=True)
    centre = b_u + beta @ w_u
    half = math.sqrt(w_u.shape[0]) * g.norm(dim=0)
    return [[c - h, c + h] for c, h in zip(centre.tolist(), half.tolist())]


def _architecture(model: Model) -> dict[str, Any]:
    cfg = model.cfg
    return {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model, "attn_only": cfg.attn_only,
            "normalization": cfg.normalization_type or "none"}


# --- front ends ----------------------------------------------------------------------------------------


def saturation(
    model: Model,
    task: TaskBase,
    scales: Sequence[float] | None = None,
    field: str | None = None,
    n: int = 256,
    generator: torch.Generator | None = None,
    n_examples: int | None = None,
    quantile: float = 0.9,
    far: float = 2.0,
    tol: float = 0.25,
) -> Result:
    """Sweep ``task.<field>`` by ``scales`` and record saturation at the query: Result over ("scale",).

    ``task`` is the training task, so scale 1 is the distribution the model was trained on.
    scores [scale]: the ``quantile`` of |prediction|. ``field``: a float field of the task, "input" (default:
    x_scale / x_range) or "coef" (w_scale / coef_scale). Extras (axes in ``EXTRA_AXES``): prediction and target
    [scale, example, out]; entropy, max_weight, weight_sum, score_range [scale, layer, head]; ln_scale
    [scale, site]; resid_norm [scale, layer]; target_quantile, median_prediction, relative_error,
    normalised_error [scale]. Metadata: boundary (B), boundary_plus / boundary_minus (signed plateaus),
    train_range (R: the 0.99 quantile of |y| at scale 1), boundary_over_range, tail_slope, saturated,
    breakdown_scale and stops_tracking_at (the first scale / |target| from which the median relative error
    stays above ``tol``), ln_final_bound (the read-out's supremum through the final norm, or None)."""
    _check_task(task, "saturation")
    field = _resolve_field(task, field)
    scales = _check_scales(scales)
    _check_sizes(n, quantile)
    n_examples = examples_that_fit(task, model.cfg.n_ctx, n_examples)
    seed = _seed(generator)
    raw = _sweep(model, task, scales, field, n, n_examples, seed)
    return _result(model, task, raw, scales, field, n, n_examples, seed, quantile, far, tol)


def _result(model: Model, task: TaskBase, raw: dict[str, Tensor], scales: list[float], field: str, n: int,
            n_examples: int, seed: int, quantile: float, far: float, tol: float) -> Result:
    pred, target = raw["prediction"], raw["target"]
    train_range, train_max = _train_range(task, n_examples, seed)
    b = _boundary(pred, target, scales, train_range, quantile, far, tol)
    p_mag, t_mag = _magnitude(pred), _magnitude(target)
    sq_err = (pred - target).pow(2).sum(-1)
    extras = {
        "prediction": pred,
        "target": target,
        "target_quantile": torch.quantile(t_mag, quantile, dim=1),
        "median_prediction": p_mag.median(dim=1).values,
        "relative_error": b.pop("relative_error"),
        "normalised_error": sq_err.mean(1) / t_mag.pow(2).mean(1).clamp(min=1e-300),
        **{k: raw[k].mean(dim=1) for k in ("entropy", "max_weight", "weight_sum", "score_range", "ln_scale", "resid_norm")},
    }
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    metadata = {
        "title": f"saturation: {task.describe()} over {field}",
        "value_name": f"|prediction| q{round(100 * quantile)}",
        "task": task.to_dict(),  # type: ignore[attr-defined]
        "field": field,
        "base_value": getattr(task, field),
        "n": n,
        "n_examples": n_examples,
        "seed": seed,
        "quantile": quantile,
        "far": far,
        "tol": tol,
        "train_range": train_range,
        "train_max": train_max,
        **b,
        "boundary_over_range": b["boundary"] / train_range if train_range > 0 else float("nan"),
        "ln_final_bound": _ln_final_bound(model),
        "architecture": _architecture(model),
        "extra_axes": {k: list(v) for k, v in EXTRA_AXES.items()},
        "extra_labels": {
            "scale": [f"{s:g}" for s in scales],
            "layer": [str(l) for l in range(n_layers)],
            "head": [str(h) for h in range(n_heads)],
            "site": [h.removesuffix(".hook_scale") for h in _sites(model)["ln"]],
        },
    }
    return Result(kind="saturation", scores=torch.quantile(p_mag, quantile, dim=1), axes=("scale",),
                  labels={"scale": [f"{s:g}" for s in scales]}, extras=extras, metadata=metadata)


def saturation_panel(result: Result, name: str) -> Result:
    """One extra of a saturation Result as a Result of its own, with its axes and labels (for ``.figure()``)."""
    axes = result.metadata.get("extra_axes", {}).get(name)
    if result.kind != "saturation" or axes is None or name not in result.extras:
        known = ", ".join(k for k in result.extras if k in result.metadata.get("extra_axes", {}))
        raise ValueError(f"name must be an extra of a saturation result ({known}), got {name!r}")
    ticks = result.metadata["extra_labels"]
    labels = {a: ticks[a] for a in axes if a in ticks and len(ticks[a]) == result.extras[name].shape[axes.index(a)]}
    return Result(kind=f"saturation.{name}", scores=result.extras[name], axes=tuple(axes), labels=labels,
                  metadata={**{k: v for k, v in result.metadata.items() if k not in ("extra_axes", "extra_labels")},
                            "title": f"{name}: {result.metadata.get('title', '')}", "value_name": name})


def compare_boundaries(
    variants: Sequence[tuple[str, Model]] | Mapping[str, Model],
    task: TaskBase,
    scales: Sequence[float] | None = None,
    field: str | None = None,
    n: int = 256,
    generator: torch.Generator | None = None,
    n_examples: int | None = None,
    quantile: float = 0.9,
    far: float = 2.0,
    tol: float = 0.25,
    moved: float = 0.25,
) -> Result:
    """B per variant on identical sequences: Result over ("variant",), scores [variant] = boundary.

    The first variant is the reference. Extras: curve [variant, scale] (the |prediction| quantile),
    target_quantile [scale], shift [variant] (B / reference B), tail_slope, boundary_plus, boundary_minus,
    stops_tracking_at [variant]. metadata["moves_plateau"][name] is True where B differs from the reference by
    more than ``moved`` (relative) or the variant saturates where the reference does not, or the reverse."""
    _check_task(task, "compare_boundaries")
    pairs = list(variants.items()) if isinstance(variants, Mapping) else [tuple(v) for v in variants]
    if not pairs or any(len(v) != 2 or not isinstance(v[0], str) for v in pairs):
        raise ValueError("variants must be a non-empty list of (name, model) pairs or a {name: model} mapping")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"variants must have distinct names, got {names}")
    field = _resolve_field(task, field)
    scales = _check_scales(scales)
    _check_sizes(n, quantile)
    # the same examples for every variant: the fewest that fit every model's context
    n_examples = min(examples_that_fit(task, m.cfg.n_ctx, n_examples) for _, m in pairs)
    seed = _seed(generator)
    results = [_result(m, task, _sweep(m, task, scales, field, n, n_examples, seed), scales, field, n, n_examples,
                       seed, quantile, far, tol) for _, m in pairs]
    meta = [r.metadata for r in results]

    def col(key: str) -> Tensor:
        return torch.tensor([float("nan") if m[key] is None else m[key] for m in meta], dtype=torch.float64)

    boundary = col("boundary")
    ref, ref_sat = boundary[0].item(), meta[0]["saturated"]
    moves = {name: bool(j > 0 and (not (abs(boundary[j].item() - ref) <= moved * abs(ref)) or m["saturated"] != ref_sat))
             for j, (name, m) in enumerate(zip(names, meta))}
    extras = {
        "curve": torch.stack([r.scores for r in results]),
        "target_quantile": results[0].extras["target_quantile"],
        "shift": boundary / ref if ref else torch.full_like(boundary, float("nan")),
        **{k: col(k) for k in ("tail_slope", "boundary_plus", "boundary_minus", "stops_tracking_at", "breakdown_scale")},
    }
    shared = ("task", "field", "base_value", "n", "n_examples", "seed", "quantile", "far", "tol", "train_range", "train_max")
    metadata = {
        "title": f"boundary per variant: {task.describe()} over {field}",
        "value_name": "boundary B",
        **{k: meta[0][k] for k in shared},
        "reference": names[0],
        "moves_plateau": moves,
        "saturated": {name: m["saturated"] for name, m in zip(names, meta)},
        "ln_final_bound": {name: m["ln_final_bound"] for name, m in zip(names, meta)},
        "architecture": {name: m["architecture"] for name, m in zip(names, meta)},
        "extra_axes": {"curve": ["variant", "scale"], "target_quantile": ["scale"],
                       **{k: ["variant"] for k in extras if k not in ("curve", "target_quantile")}},
        "extra_labels": {"variant": names, "scale": [f"{s:g}" for s in scales]},
    }
    return Result(kind="saturation_comparison", scores=boundary, axes=("variant",), labels={"variant": names},
                  extras=extras, metadata=metadata)


# --- figure --------------------------------------------------------------------------------------------


def saturation_figure(result: Result, max_points: int = 3000):
    """Plotly figure of a saturation Result: |prediction| and |target| against scale, prediction against target,
    attention entropy and LN scale against scale; the training range is shaded and B drawn dashed.
    A comparison Result gets one |prediction| curve per variant."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    meta = result.metadata
    r, b = meta["train_range"], meta.get("boundary")
    if result.kind == "saturation_comparison":
        scales = [float(s) for s in meta["extra_labels"]["scale"]]
        fig = go.Figure()
        fig.add_hrect(y0=0, y1=r, fillcolor="green", opacity=0.12, line_width=0, annotation_text="training range", exclude_empty_subplots=False)
        fig.add_trace(go.Scatter(x=scales, y=result.extras["target_quantile"].tolist(), name="|target|", line={"dash": "dot", "color": "black"}))
        for j, name in enumerate(result.ticks("variant")):
            fig.add_trace(go.Scatter(x=scales, y=result.extras["curve"][j].tolist(), name=f"{name} (B={result.scores[j].item():.3g})", mode="lines+markers"))
        fig.update_xaxes(type="log", title_text=meta["field"] + " × scale")
        fig.update_yaxes(type="log", title_text=meta["value_name"])
        fig.update_layout(title=meta["title"])
        return fig
    if result.kind != "saturation":
        raise ValueError(f"result must be a saturation result, got kind {result.kind!r}")
    scales = [float(s) for s in result.ticks("scale")]
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "|prediction| and |target| vs scale", "prediction vs target (query)", "attention entropy (query, mean over heads)", "LN scale (query)"))
    # (1, 1): magnitudes against scale, training range of |y| shaded
    fig.add_hrect(y0=0, y1=r, fillcolor="green", opacity=0.12, line_width=0, exclude_empty_subplots=False, row=1, col=1)
    fig.add_trace(go.Scatter(x=scales, y=result.scores.tolist(), name=meta["value_name"], mode="lines+markers"), row=1, col=1)
    fig.add_trace(go.Scatter(x=scales, y=result.extras["target_quantile"].tolist(), name="|target| (same quantile)",
                             line={"dash": "dot"}), row=1, col=1)
    if b is not None and math.isfinite(b):
        fig.add_hline(y=b, line_dash="dash", line_color="red", annotation_text=f"B = {b:.3g}", row=1, col=1)
    # (1, 2): prediction against target, pooled over scales; training range of y shaded
    pred, target = result.extras["prediction"][..., 0].flatten(), result.extras["target"][..., 0].flatten()
    step = max(1, len(pred) // max_points)
    fig.add_vrect(x0=-r, x1=r, fillcolor="green", opacity=0.12, line_width=0, exclude_empty_subplots=False, row=1, col=2)
    fig.add_trace(go.Scattergl(x=target[::step].tolist(), y=pred[::step].tolist(), mode="markers", marker={"size": 3},
                               name="examples"), row=1, col=2)
    lim = target.abs().max().item()
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line={"dash": "dot", "color": "grey"}, name="y = x"), row=1, col=2)
    for level in (meta.get("boundary_plus"), meta.get("boundary_minus")):
        if level is not None and math.isfinite(level):
            fig.add_hline(y=level, line_dash="dash", line_color="red", row=1, col=2)
    # (2, *): mechanism curves, scale ≤ 1 (the training distribution) shaded
    for col, name, sites in ((1, "entropy", meta["extra_labels"]["layer"]), (2, "ln_scale", meta["extra_labels"]["site"])):
        fig.add_vrect(x0=scales[0], x1=1.0, fillcolor="green", opacity=0.12, line_width=0, exclude_empty_subplots=False, row=2, col=col)
        values = result.extras[name]
        values = values.mean(-1) if name == "entropy" else values
        for j, site in enumerate(sites):
            label = f"layer {site}" if name == "entropy" else site
            fig.add_trace(go.Scatter(x=scales, y=values[:, j].tolist(), name=label, mode="lines"), row=2, col=col)
    for row, col in ((1, 1), (2, 1), (2, 2)):
        fig.update_xaxes(type="log", title_text=f"{meta['field']} × scale", row=row, col=col)
    fig.update_xaxes(title_text="target", row=1, col=2)
    fig.update_yaxes(title_text="prediction", row=1, col=2)
    fig.update_layout(title=meta["title"], height=800)
    return fig
