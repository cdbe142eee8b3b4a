# Over 400 lines on purpose: the one definition of B± (the docstring) sits beside the only code that measures and draws it.
"""Saturation: how far outside its training range a regression model's prediction can go, and why.

Naim & Asher (SCIENCE.md §2): a model trained on bounded targets tracks the target inside the training range
and then plateaus at a boundary value B. The argument is that layer norm keeps vector norms bounded and
softmax makes each attention output a convex combination of such vectors, so the prediction cannot leave
the hull of what training taught. ``saturation`` sweeps one scale field of the task (inputs x·s, or the
coefficient scale σ) from inside the training range to far outside it and records, at the query, what the
argument is about: the prediction against the target, attention entropy and maximum weight per head, the
range of attention scores, the layer-norm scale per site and the residual-stream norm per layer. From the
prediction it reads off the signed boundary values B+ and B− and sets them beside the training range that
explains them. ``compare_boundaries`` does the same for several variants on identical sequences, to show which
removal (LN, the final LN alone, softmax, MLPs) moves or removes the plateau.

Every sweep re-seeds one generator at every scale, so the sequences at scale s are the scale-1 sequences with
the swept field multiplied by s (for Gaussian and uniform draws this is exact): curves differ by scale only.
The default sweep scales the function ("coef": w_scale, coef_scale or root_radius) where the task has such a
field, so the target leaves the training range while the inputs x stay where training put them; other tasks
scale the inputs.

The boundary values (the one definition; the cards, the CLI and the dashboard all read it from here):

- Pairs. Every (target y, prediction p) at the query, over every scale of the sweep and every example; a model
  with several output channels (complex-zeros: the real and imaginary part of the root) adds one pair per
  channel, so B± are levels of one coordinate.
- Training range [R−, R+]. The central ``RANGE_QUANTILE`` (99%) of the signed training targets: the 0.005 and
  0.995 quantiles of y over every loss position and channel of 4096 sequences drawn from the task at scale 1.
- Median prediction against the target. Sort the pairs by y and cut them into ``bins`` groups of equal count
  (64 by default; fewer when that would leave under ``MIN_PER_BIN`` = 8 pairs a group). Each group gives one
  point (median y, median p).
- B+ is the highest median p over the groups whose median y is ≥ 0; B− the lowest over those whose median y is
  ≤ 0. ``turn_plus`` / ``turn_minus`` is that group's median y: where the prediction stops following the target
  (the group nearest y = 0 when several tie). For p = clip(y, B−, B+) this gives B± exactly, at y = B±.
- B+ is only read when the sweep takes the target well out of the range: at least ``MIN_PER_BIN`` targets
  beyond R+ + w/2, w = R+ − R− (that is 2·R+ for a range symmetric about 0); likewise B− below R− − w/2. A sweep
  whose targets stay in or near the training range (the 0.5% of training targets beyond R± are always there)
  says nothing about where the prediction stops: B± NaN, saturated None, and ``note`` says why.
- Fall-back. ``fallback_plus`` is the least-squares slope (with intercept) of p against y over the pairs with
  y > R+, ``fallback_minus`` over those with y < R−: 1 while the model extrapolates, 0 on a flat plateau,
  negative when the prediction falls back toward 0 (p = B − s·(y − B) beyond B gives −s).
- ``saturated_plus`` / ``saturated_minus``: the fall-back slope on that side is below ``follows`` (0.5), i.e. the
  prediction grows less than half as fast as the target beyond R; ``saturated`` is True when every side that
  could be read is saturated, False when one is not, None when neither could be read.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from interp.evaluate import ERROR, squared_error_over_d
from interp.progress import progress_bar
from interp.spec import Model
from interp.tasks import Batch, TaskBase, examples_that_fit
from interp.results import Result, tick_labels
from probes.settings import SaturationSettings

DEFAULT_SCALES: tuple[float, ...] = tuple(2.0 ** (i / 2) for i in range(-4, 9))
"""0.25 to 16 in half-octaves: scale 1 is the training distribution."""

RANGE_QUANTILE = 0.99
"""The training range [R−, R+] holds this central share of the training targets (half the rest on each side)."""
MIN_PER_BIN = 8
"""The fewest pairs in one group of the median curve, and beyond R on one side for B and the fall-back there."""
BOUNDARY_KEYS: tuple[str, ...] = (
    "field", "range_minus", "range_plus", "boundary_minus", "boundary_plus", "turn_minus", "turn_plus",
    "fallback_minus", "fallback_plus", "saturated_minus", "saturated_plus", "saturated")
"""The metadata keys that state the boundary values (module docstring), in the order cards and tables list them."""
SIDES: tuple[str, str] = ("B+", "B-")
"""Tick labels of the "side" axis of a comparison: above the training range, below it."""

EXTRA_AXES: dict[str, tuple[str, ...]] = {
    "prediction": ("scale", "example", "out"),
    "target": ("scale", "example", "out"),
    "target_quantile": ("scale",),
    "bin_target": ("bin",),
    "bin_prediction": ("bin",),
    "median_prediction": ("scale",),
    "relative_error": ("scale",),
    ERROR: ("scale",),
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
    """The task field a sweep multiplies: ``field`` itself, the input scale ("input": ``task.scale_field``) or σ
    ("coef": ``task.coef_field``); None is ``default_field(task)``."""
    floats = [f.name for f in dataclasses.fields(task) if isinstance(getattr(task, f.name), float)]  # type: ignore[arg-type]
    field = default_field(task) if field is None else field
    if field == "input":
        field = task.scale_field
    elif field == "coef":
        field = task.coef_field
        if field is None:
            raise ValueError(f"field 'coef' has no meaning for task {task.name!r}; choose from {', '.join(floats)}")
    if field not in floats:
        raise ValueError(f"field must be a float field of task {task.name!r} ({', '.join(floats)}) or 'input'/'coef', got {field!r}")
    return field


def default_field(task: TaskBase) -> str:
    """The sweep a saturation probe runs when none is named: "coef" where the task has a field that scales the
    function (the target leaves the training range while x stays in it), else "input"."""
    return "coef" if task.coef_field is not None else "input"


def _scales(scales: Sequence[float] | None) -> list[float]:
    """The sweep's scales, sorted (``SaturationSettings`` has checked them)."""
    return sorted(float(s) for s in (DEFAULT_SCALES if scales is None else scales))


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


@dataclasses.dataclass(frozen=True)
class ScaleSweep:
    """What one sweep holds fixed, for every model it measures: the training task, the multipliers of its
    ``field``, and the sequences (``n`` of ``n_examples`` examples from ``seed``, the same at every scale)."""

    task: TaskBase
    scales: list[float]
    field: str
    n: int
    n_examples: int
    seed: int


@torch.no_grad()
def _sweep(model: Model, sweep: ScaleSweep, *, chunk: int = 512, bar: Any = None) -> dict[str, Tensor]:
    """Per-example query statistics at every scale: {name: [scale, example, ...]}; ``bar`` (a
    ``progress_bar``) advances by one per scale."""
    device = next(model.parameters()).device
    sites = _sites(model)
    task, field, n, n_examples, seed = sweep.task, sweep.field, sweep.n, sweep.n_examples, sweep.seed
    base = getattr(task, field)
    was_training = model.training
    model.eval()
    try:
        rows = []
        for s in sweep.scales:
            batch = task.replace(**{field: base * s}).sample(n, n_examples, torch.Generator().manual_seed(seed))  # type: ignore[attr-defined]
            parts = [_query_stats(model, _rows(batch, i, i + chunk), sites, device) for i in range(0, n, chunk)]
            rows.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    """Sequences ``start:stop`` of ``batch`` (inputs, targets and mask are all the statistics need)."""
    return Batch(batch.inputs[start:stop], batch.targets[start:stop], batch.loss_mask[start:stop], pos_labels=batch.pos_labels)


def _train_range(task: TaskBase, n_examples: int, seed: int, n: int = 4096) -> tuple[float, float, float]:
    """(R−, R+, max |y|): the central RANGE_QUANTILE of the signed target over every loss position and output
    channel of ``n`` sequences at scale 1 (the range of y a model trained on ``task`` has seen), and its largest
    magnitude."""
    batch = task.sample(n, n_examples, torch.Generator().manual_seed(seed + 1))  # type: ignore[attr-defined]
    y = batch.targets[batch.loss_mask].double().flatten()
    tail = (1 - RANGE_QUANTILE) / 2
    lo, hi = torch.quantile(y, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return lo, hi, y.abs().max().item()


# --- reading off the boundary --------------------------------------------------------------------------


def _magnitude(v: Tensor) -> Tensor:
    """|v| over output channels: [..., out] -> [...]."""
    return v.norm(dim=-1)


def _ls_slope(x: Tensor, y: Tensor) -> float:
    """Least-squares slope (with intercept) of y against x; NaN when x does not vary."""
    dx = x - x.mean()
    var = dx.pow(2).sum()
    return (dx * (y - y.mean())).sum().item() / var.item() if var > 0 else float("nan")


def median_curve(pred: Tensor, target: Tensor, bins: int = 64) -> tuple[Tensor, Tensor]:
    """(median target, median prediction) per group of equal count of the pairs sorted by target: [bin] each.

    ``pred``, ``target``: any matching shape (every entry one pair, e.g. [scale, example, out]). There are
    ``bins`` groups, or fewer so that each holds at least MIN_PER_BIN pairs."""
    t, p = target.double().flatten(), pred.double().flatten()
    order = t.argsort()
    chunks = torch.tensor_split(order, max(1, min(bins, len(t) // MIN_PER_BIN)))
    return torch.stack([t[c].median() for c in chunks]), torch.stack([p[c].median() for c in chunks])


def boundary_values(pred: Tensor, target: Tensor, range_minus: float, range_plus: float, bins: int = 64,
                    follows: float = 0.5) -> dict[str, Any]:
    """The signed boundary values of the module docstring from (prediction, target) pairs of any matching shape.

    Returns boundary_plus / boundary_minus (B±), turn_plus / turn_minus (the median target there),
    fallback_plus / fallback_minus (slope beyond R±), saturated_plus / saturated_minus / saturated,
    n_beyond_plus / n_beyond_minus (pairs beyond R±), note (why a side could not be read, or ""), and the
    median curve bin_target / bin_prediction [bin]."""
    t, p = target.double().flatten(), pred.double().flatten()
    bin_t, bin_p = median_curve(p, t, bins)
    nan = float("nan")
    out: dict[str, Any] = {"bin_target": bin_t, "bin_prediction": bin_p}
    notes = []
    # plus: groups in ascending target from y = 0, highest median; minus: descending from 0, lowest median
    half = (range_plus - range_minus) / 2
    for side, beyond, far, groups, pick in (
            ("plus", t > range_plus, range_plus + half, torch.nonzero(bin_t >= 0).flatten(), torch.argmax),
            ("minus", t < range_minus, range_minus - half, torch.nonzero(bin_t <= 0).flatten().flip(0), torch.argmin)):
        n_beyond = int(beyond.sum())
        n_far = int((t > far).sum() if side == "plus" else (t < far).sum())
        if n_far < MIN_PER_BIN or len(groups) == 0:
            b = turn = slope = nan
            notes.append(f"B{'+' if side == 'plus' else '−'} not read: {n_far} targets {'above' if side == 'plus' else 'below'} "
                         f"{far:.3g} (needs {MIN_PER_BIN}); the sweep does not take the target out of the training range "
                         f"[{range_minus:.3g}, {range_plus:.3g}] on that side")
        else:
            j = groups[pick(bin_p[groups])]
            b, turn = bin_p[j].item(), bin_t[j].item()
            slope = _ls_slope(t[beyond], p[beyond])
        out |= {f"boundary_{side}": b, f"turn_{side}": turn, f"fallback_{side}": slope, f"n_beyond_{side}": n_beyond,
                f"saturated_{side}": None if math.isnan(slope) else bool(slope < follows)}
    known = [out[f"saturated_{s}"] for s in ("plus", "minus") if out[f"saturated_{s}"] is not None]
    out["saturated"] = all(known) if known else None
    out["note"] = "; ".join(notes)
    return out


def _ln_final_bound(model: Model) -> list[list[float]] | None:
    """[[low, high] per output]: the supremum of the read-out over every residual stream, from the final norm.

    LN makes the normalised vector n centred with ‖n‖ ≤ √d_model, so pred_j = n·(γ⊙W_U[:, j]) + β·W_U[:, j] + b_U[j]
    lies within √d_model·‖P(γ⊙W_U[:, j])‖ of its centre (P removes the mean; RMS norms do not centre).
    None for models without a final norm (no norm at all, or final_norm=False; the block norms may still bound
    the output, as in models/linear1d-u5-nofinalln)."""
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


def saturation(model: Model, task: TaskBase, settings: SaturationSettings | None = None, *,
               generator: torch.Generator | None = None, n_examples: int | None = None, progress: bool = False,
               **fields: Any) -> Result:
    """Sweep ``task.<field>`` by ``scales`` and record saturation at the query: Result over ("scale",);
    ``SaturationSettings`` (scales, field, n, quantile, bins, follows) or its fields by name.

    ``task`` is the training task, so scale 1 is the distribution the model was trained on.
    scores [scale]: the ``quantile`` of |prediction| (a curve to look at; the boundary values are not read from
    it). ``field``: a float field of the task, "input" (x_scale / x_range / radius) or "coef" (w_scale /
    coef_scale / root_radius); None: ``default_field(task)``. Extras (axes in ``EXTRA_AXES``): prediction and
    target [scale, example, out]; bin_target, bin_prediction [bin] (the median curve); entropy, max_weight,
    weight_sum, score_range [scale, layer, head]; ln_scale [scale, site]; resid_norm [scale, layer];
    target_quantile, median_prediction, relative_error (median |p − y| / |y|), squared_error_over_d (the one regression error) [scale].
    Metadata: the boundary values of the module docstring (``BOUNDARY_KEYS``, with ``bins`` and ``follows``),
    n_beyond_plus / n_beyond_minus, note, train_max (largest |y| at scale 1), ln_final_bound (the read-out's
    supremum through the final norm, or None). ``progress``: a bar over the scales on stderr (plain lines when
    it is not a terminal)."""
    s = SaturationSettings.resolve(settings, fields)
    _check_task(task, "saturation")
    sweep = ScaleSweep(task, _scales(s.scales), _resolve_field(task, s.field), s.n,
                       examples_that_fit(task, model.cfg.n_ctx, n_examples), _seed(generator))
    with progress_bar(total=len(sweep.scales), desc="saturation", unit="scale", enabled=progress) as bar:
        raw = _sweep(model, sweep, bar=bar)
    return _result(model, sweep, raw, s)


def _result(model: Model, sweep: ScaleSweep, raw: dict[str, Tensor], settings: SaturationSettings) -> Result:
    """The saturation Result of one model's sweep ``raw`` (``_sweep``), read with ``settings``' quantile, bins
    and follows."""
    task, scales, field, n, n_examples, seed = sweep.task, sweep.scales, sweep.field, sweep.n, sweep.n_examples, sweep.seed
    quantile, bins, follows = settings.quantile, settings.bins, settings.follows
    pred, target = raw["prediction"], raw["target"]
    range_minus, range_plus, train_max = _train_range(task, n_examples, seed)
    b = boundary_values(pred, target, range_minus, range_plus, bins, follows)
    p_mag, t_mag = _magnitude(pred), _magnitude(target)
    extras = {
        "prediction": pred,
        "target": target,
        "target_quantile": torch.quantile(t_mag, quantile, dim=1),
        "bin_target": b.pop("bin_target"),
        "bin_prediction": b.pop("bin_prediction"),
        "median_prediction": p_mag.median(dim=1).values,
        "relative_error": ((pred - target).norm(dim=-1) / t_mag.clamp(min=1e-300)).median(dim=1).values,
        ERROR: squared_error_over_d(pred, target, task.error_scale).mean(1),  # type: ignore[attr-defined]
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
        "bins": bins,
        "follows": follows,
        "range_minus": range_minus,
        "range_plus": range_plus,
        "train_max": train_max,
        **b,
        "ln_final_bound": _ln_final_bound(model),
        "architecture": _architecture(model),
        "extra_axes": {k: list(v) for k, v in EXTRA_AXES.items()},
        "print_extras": ["entropy", "ln_scale"],  # the CLI prints these under the prediction's quantile
        "extra_labels": {
            "scale": [f"{s:g}" for s in scales],
            "layer": tick_labels("layer", n_layers),
            "head": tick_labels("head", n_heads),
            "site": [h.removesuffix(".hook_scale").replace("blocks.", "L") for h in _sites(model)["ln"]],
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


def compare_boundaries(variants: Sequence[tuple[str, Model]] | Mapping[str, Model], task: TaskBase,
                       settings: SaturationSettings | None = None, *, generator: torch.Generator | None = None,
                       n_examples: int | None = None, progress: bool = False, **fields: Any) -> Result:
    """B+ and B− per variant on identical sequences: Result over ("variant", "side"), scores [variant, side],
    side ticks SIDES ("B+", "B-"); each variant's values are exactly what ``saturation`` gives it alone, with the
    same ``SaturationSettings`` (or its fields by name).

    The first variant is the reference. Extras: fallback, turn, shift (B / the reference's B) [variant, side];
    curve [variant, scale] (the |prediction| quantile); target_quantile [scale]; bin_target [bin] and
    bin_prediction [variant, bin] (the median curves: the sequences, hence the groups, are the same for every
    variant). metadata["moves_plateau"][name] is True where B+ or B− differs from the reference's by more than
    ``moved`` (relative; a side read for one and not the other counts), or the variant saturates where the
    reference does not, or the reverse. ``progress``: a bar over variants × scales on stderr."""
    s = SaturationSettings.resolve(settings, fields)
    _check_task(task, "compare_boundaries")
    pairs = list(variants.items()) if isinstance(variants, Mapping) else [tuple(v) for v in variants]
    if not pairs or any(len(v) != 2 or not isinstance(v[0], str) for v in pairs):
        raise ValueError("variants must be a non-empty list of (name, model) pairs or a {name: model} mapping")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"variants must have distinct names, got {names}")
    # the same examples for every variant: the fewest that fit every model's context
    sweep = ScaleSweep(task, _scales(s.scales), _resolve_field(task, s.field), s.n,
                       min(examples_that_fit(task, m.cfg.n_ctx, n_examples) for _, m in pairs), _seed(generator))
    with progress_bar(total=len(pairs) * len(sweep.scales), desc="saturation", unit="scale", enabled=progress) as bar:
        raws = []
        for name, m in pairs:
            bar.set_description_str(f"saturation {name}", refresh=False)
            raws.append(_sweep(m, sweep, bar=bar))
    results = [_result(m, sweep, raw, s) for (_, m), raw in zip(pairs, raws)]
    meta = [r.metadata for r in results]

    def sided(key: str) -> Tensor:
        return torch.tensor([[m[f"{key}_plus"], m[f"{key}_minus"]] for m in meta], dtype=torch.float64)

    boundary = sided("boundary")

    def differs(j: int) -> bool:
        for b, ref in zip(boundary[j].tolist(), boundary[0].tolist()):
            if math.isnan(b) != math.isnan(ref) or not (math.isnan(b) or abs(b - ref) <= s.moved * abs(ref)):
                return True
        return meta[j]["saturated"] != meta[0]["saturated"]

    moves = {name: j > 0 and differs(j) for j, name in enumerate(names)}
    extras = {
        "fallback": sided("fallback"),
        "turn": sided("turn"),
        "shift": boundary / boundary[0],
        "curve": torch.stack([r.scores for r in results]),
        "target_quantile": results[0].extras["target_quantile"],
        "bin_target": results[0].extras["bin_target"],
        "bin_prediction": torch.stack([r.extras["bin_prediction"] for r in results]),
    }
    shared = ("task", "field", "base_value", "n", "n_examples", "seed", "quantile", "bins", "follows",
              "range_minus", "range_plus", "train_max")
    metadata = {
        "title": f"boundary per variant: {task.describe()} over {sweep.field}",
        "value_name": "boundary value",
        **{k: meta[0][k] for k in shared},
        "reference": names[0],
        "print_extras": ["fallback", "turn"],  # the CLI prints these beside B± (interp.report)
        "moves_plateau": moves,
        **{key: {name: m[key] for name, m in zip(names, meta)}
           for key in ("saturated", "saturated_plus", "saturated_minus", "note", "ln_final_bound", "architecture")},
        "extra_axes": {"fallback": ["variant", "side"], "turn": ["variant", "side"], "shift": ["variant", "side"],
                       "curve": ["variant", "scale"], "target_quantile": ["scale"], "bin_target": ["bin"],
                       "bin_prediction": ["variant", "bin"]},
        "extra_labels": {"variant": names, "side": list(SIDES), "scale": [f"{x:g}" for x in sweep.scales]},
    }
    return Result(kind="saturation_comparison", scores=boundary, axes=("variant", "side"),
                  labels={"variant": names, "side": list(SIDES)}, extras=extras, metadata=metadata)


# --- figure --------------------------------------------------------------------------------------------


def saturation_figure(result: Result, max_points: int = 3000):
    """Plotly figure of a saturation Result: prediction against target with the median curve, the training range
    [R−, R+] shaded on the target axis (and ending there) and B± dashed; |prediction| and |target| against
    scale; attention entropy and LN scale against scale (scale ≤ 1, the training distribution, shaded).
    A comparison Result gets one median curve per variant against the target."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    meta = result.metadata
    lo, hi = meta["range_minus"], meta["range_plus"]

    def finite(v: Any) -> bool:
        return v is not None and math.isfinite(v)

    def target_axis(t: Tensor) -> list[float]:
        """The target axis spans the data (and the training range), so the shading ends at R, not at the edge."""
        a, b = min(t.min().item(), lo), max(t.max().item(), hi)
        pad = 0.03 * (b - a or 1.0)
        return [a - pad, b + pad]

    if result.kind == "saturation_comparison":
        bin_t = result.extras["bin_target"]
        fig = go.Figure()
        fig.add_vrect(x0=lo, x1=hi, fillcolor="green", opacity=0.12, line_width=0, annotation_text="training range",
                      exclude_empty_subplots=False)
        ends = [bin_t.min().item(), bin_t.max().item()]
        fig.add_trace(go.Scatter(x=ends, y=ends, mode="lines", line={"dash": "dot", "color": "grey"}, name="y = x"))
        for j, name in enumerate(result.ticks("variant")):
            bp, bm = result.scores[j].tolist()
            fig.add_trace(go.Scatter(x=bin_t.tolist(), y=result.extras["bin_prediction"][j].tolist(), mode="lines+markers",
                                     name=f"{name} (B+={bp:.3g}, B−={bm:.3g})"))
        fig.update_xaxes(title_text="target (median of each group)", range=target_axis(bin_t))
        fig.update_yaxes(title_text="median prediction")
        fig.update_layout(title=meta["title"])
        return fig
    if result.kind != "saturation":
        raise ValueError(f"result must be a saturation result, got kind {result.kind!r}")
    scales = [float(s) for s in result.ticks("scale")]
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "prediction vs target (query)", "|prediction| and |target| vs scale", "attention entropy (query, mean over heads)",
        "LN scale (query)"))
    # (1, 1): prediction against target, pooled over scales and channels; training range of y shaded
    pred, target = result.extras["prediction"].flatten(), result.extras["target"].flatten()
    step = max(1, len(pred) // max_points)
    fig.add_vrect(x0=lo, x1=hi, fillcolor="green", opacity=0.12, line_width=0, exclude_empty_subplots=False,
                  annotation_text="training range", annotation_position="top left", row=1, col=1)
    fig.add_trace(go.Scattergl(x=target[::step].tolist(), y=pred[::step].tolist(), mode="markers", marker={"size": 3},
                               name="examples"), row=1, col=1)
    fig.add_trace(go.Scatter(x=result.extras["bin_target"].tolist(), y=result.extras["bin_prediction"].tolist(),
                             mode="lines+markers", line={"color": "black"}, name="median prediction"), row=1, col=1)
    ends = [target.min().item(), target.max().item()]
    fig.add_trace(go.Scatter(x=ends, y=ends, mode="lines", line={"dash": "dot", "color": "grey"}, name="y = x"), row=1, col=1)
    for side, sign in (("plus", "+"), ("minus", "−")):
        level = meta.get(f"boundary_{side}")
        if finite(level):
            fig.add_hline(y=level, line_dash="dash", line_color="red", annotation_text=f"B{sign} = {level:.3g}", row=1, col=1)
    fig.update_xaxes(title_text="target", range=target_axis(target), row=1, col=1)
    fig.update_yaxes(title_text="prediction", row=1, col=1)
    # (1, 2): magnitudes against scale
    fig.add_trace(go.Scatter(x=scales, y=result.scores.tolist(), name=meta["value_name"], mode="lines+markers"), row=1, col=2)
    fig.add_trace(go.Scatter(x=scales, y=result.extras["target_quantile"].tolist(), name="|target| (same quantile)",
                             line={"dash": "dot"}), row=1, col=2)
    # (2, *): mechanism curves
    for col, name, sites in ((1, "entropy", meta["extra_labels"]["layer"]), (2, "ln_scale", meta["extra_labels"]["site"])):
        values = result.extras[name]
        values = values.mean(-1) if name == "entropy" else values
        for j, site in enumerate(sites):
            fig.add_trace(go.Scatter(x=scales, y=values[:, j].tolist(), name=site, mode="lines"), row=2, col=col)
    # scale ≤ 1 is the training distribution on every scale axis
    for row, col in ((1, 2), (2, 1), (2, 2)):
        fig.add_vrect(x0=scales[0], x1=1.0, fillcolor="green", opacity=0.12, line_width=0, exclude_empty_subplots=False,
                      row=row, col=col)
        fig.update_xaxes(type="log", title_text=f"{meta['field']} × scale", row=row, col=col)
    fig.update_layout(title=meta["title"], height=800)
    return fig
