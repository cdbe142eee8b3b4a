"""Attribution patching: the first-order estimate (a_clean - a_corrupted) . d metric / d a of exact activation
patching (``probes.patching``), for every head, MLP and resid_pre position from one clean forward pass and one
corrupted forward and backward pass. ``correlation`` reports how well it agrees with exact patching.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import einops
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.inputs import check_batches, mean_result, model_device, run_metadata
from probes.metrics import Answers, Metric, at_query, attribution_metric

SITES: dict[str, tuple[str, ...]] = {
    "head": ("layer", "head"),
    "head_pos": ("layer", "head", "pos"),
    "mlp": ("layer",),
    "mlp_pos": ("layer", "pos"),
    "resid_pre": ("layer", "pos"),
}
DIRECTIONS = ("denoise", "noise")


def _site_names(model: Model) -> dict[str, list[str]]:
    """The hooks attribution patching reads, by kind: every layer's z, mlp_out (none without MLPs) and resid_pre."""
    layers = range(model.cfg.n_layers)
    return {
        "z": [get_act_name("z", l) for l in layers],
        "mlp_out": [] if model.cfg.attn_only else [get_act_name("mlp_out", l) for l in layers],
        "resid_pre": [get_act_name("resid_pre", l) for l in layers],
    }


@dataclass(frozen=True)
class AttributionPatching:
    """Attribution patching at every site of ``SITES`` from one pass: each attribute is a Result (``mlp`` and
    ``mlp_pos`` are None for attention-only models)."""

    head: Result  # [layer, head]
    head_pos: Result  # [layer, head, pos]
    resid_pre: Result  # [layer, pos]
    mlp: Result | None  # [layer]
    mlp_pos: Result | None  # [layer, pos]

    def results(self) -> dict[str, Result]:
        """Every Result by site name, flat (for the CLI and JSON)."""
        return {site: r for site in SITES if (r := getattr(self, site)) is not None}


def attribution_patching(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, metric: str | Metric | None = None,
                         direction: str = "denoise") -> AttributionPatching:
    """Attribution patching of every site in ``SITES`` from one source forward and one target forward and backward.

    ``denoise`` (as TransformerLens's get_act_patch_*): the estimate of metric(corrupted run with the clean
    activation patched in) - metric(corrupted run), i.e. (a_clean - a_corrupted) . d metric / d a at the corrupted
    run. ``noise``: corrupted into clean, (a_corrupted - a_clean) . d metric / d a at the clean run.
    Returns one Result per site; ``mlp``/``mlp_pos`` are None for attention-only models."""
    check_batches(model, task, clean, corrupted)
    if corrupted is None:
        raise ValueError("attribution patching needs a corrupted batch")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    device = model_device(model)
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
    meta = run_metadata(task, clean, "attrib", name, direction=direction,
                        metric_clean=metric_clean.mean().item(), metric_corrupted=metric_corrupted.mean().item())
    return AttributionPatching(**{site: mean_result("attribution_patching", per_site[site], SITES[site], model, clean,
                                                    metadata=meta | {"site": site}) if site in per_site else None
                                  for site in SITES})


def attribution_patch(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, site: str = "head",
                      metric: str | Metric | None = None, direction: str = "denoise") -> Result:
    """Attribution patching at one site of ``SITES``: head [layer, head], head_pos [layer, head, pos],
    mlp [layer], mlp_pos [layer, pos], resid_pre [layer, pos]."""
    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    if site.startswith("mlp") and model.cfg.attn_only:
        raise ValueError(f"site {site!r} needs MLPs but the model is attention-only")
    return getattr(attribution_patching(model, task, clean, corrupted, metric, direction), site)


def correlation(a: Result | Tensor, b: Result | Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation of two score tensors of the same shape (e.g. attribution vs exact
    patching), over all cells: {"pearson", "spearman", "n"} (scipy.stats). NaN when either is constant."""
    from scipy.stats import ConstantInputWarning, NearConstantInputWarning, pearsonr, spearmanr

    x = (a.scores if isinstance(a, Result) else a).detach().double().cpu().flatten().numpy()
    y = (b.scores if isinstance(b, Result) else b).detach().double().cpu().flatten().numpy()
    if x.shape != y.shape:
        raise ValueError(f"cannot correlate scores of {x.size} and {y.size} cells; shapes must match")
    if x.size < 2:  # one cell has no spread to correlate
        return {"pearson": float("nan"), "spearman": float("nan"), "n": float(x.size)}
    with warnings.catch_warnings():
        for quiet in (ConstantInputWarning, NearConstantInputWarning):  # a constant input gives NaN, as documented
            warnings.simplefilter("ignore", quiet)
        return {"pearson": float(pearsonr(x, y).statistic), "spearman": float(spearmanr(x, y).statistic),
                "n": float(x.size)}
