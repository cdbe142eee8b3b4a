# Over 400 lines on purpose: one engine read top to bottom under the invariants below, which its shortcuts rely on.
"""Exact activation patching, batched: resid / attn / mlp / per-head sites, by layer, position and head.

Denoising runs the corrupted input with one clean activation patched in; noising runs the clean input
with one corrupted activation patched in. Each patched variant is an exact forward pass and gives the
same number as ``transformer_lens.patching.get_act_patch_*`` (to float32 rounding), but many variants
share one forward pass: they are stacked along the batch dimension, ``(variant batch)``, in chunks of at
most ``max_batch`` sequences, and the metric is computed for the whole chunk on the device.

The metric reads one row, the query, of a causal model. Four facts then save work without changing a
number:

1. A patch at row p changes no row before p. So a variant starts at its patched layer, from the base
   run's cached ``resid_pre``, on rows p..query only; the rows before enter as the base run's cached keys
   and values (TransformerLens's own key-value cache, frozen).
2. A row-local site (all but resid_pre, k and v) changes its layer's output only at the patched rows, so
   that layer is computed for those rows alone; the rows after them enter the next layer as the base
   run's cached ``resid_pre``.
3. Rows after the query never reach the metric, and of the last layer only the query row's output does:
   there keys and values are computed for the changed rows only (the base run's elsewhere), the rest of
   the block for the query row alone. A row-local patch of the last layer matters only at the query row.
4. A cell whose patched value equals the base run's bit for bit changes nothing: a variant with no
   other cell gets the base run's metric without a forward pass.

Scores are normalised on one scale for both directions: 0 = the corrupted run, 1 = the clean run, using
batch-mean metrics. An unpatched denoising run scores 0, an unpatched noising run 1.
"""
from __future__ import annotations

import contextlib
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import einops
import torch
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens import TransformerLensKeyValueCacheEntry as KVEntry
from transformer_lens.hook_points import HookPoint

from interp.progress import progress_bar
from interp.results import Result, tick_labels
from interp.spec import Model, check_layer
from interp.tasks import Batch, TaskBase
from probes.metrics import Answers, Metric, callable_metric, resolve_metric
from probes.settings import DIRECTIONS, PatchSettings  # noqa: F401  (DIRECTIONS: re-exported for the circuits)


@dataclass(frozen=True)
class Site:
    """A patchable activation: its hook inside ``blocks.{layer}``, its layout and whether a patch at row p
    changes only row p of its layer's output (so that in the last layer only the query row matters)."""

    hook: str
    layout: str  # "resid": [batch, pos, d_model]; "head": [batch, pos, head, d_head]; "pattern": [batch, head, dest, src]
    row_local: bool


SITES: dict[str, Site] = {
    "resid_pre": Site("hook_resid_pre", "resid", row_local=False),
    "resid_mid": Site("hook_resid_mid", "resid", row_local=True),
    "attn_out": Site("hook_attn_out", "resid", row_local=True),
    "mlp_out": Site("hook_mlp_out", "resid", row_local=True),
    "z": Site("attn.hook_z", "head", row_local=True),
    "q": Site("attn.hook_q", "head", row_local=True),
    "k": Site("attn.hook_k", "head", row_local=False),
    "v": Site("attn.hook_v", "head", row_local=False),
    "pattern": Site("attn.hook_pattern", "pattern", row_local=True),
}
# What one variant patches; the first is the site's default. "layer" and "head" take every position.
BY: dict[str, tuple[str, ...]] = {"resid": ("layer_pos", "layer"), "head": ("head_pos", "head"), "pattern": ("head_pos", "head")}
AXES: dict[str, tuple[str, ...]] = {"layer_pos": ("pos",), "layer": (), "head_pos": ("head", "pos"), "head": ("head",)}
SCALE = "0 = corrupted run, 1 = clean run (batch-mean metric)"


@dataclass
class Plan:
    """The patched variants of a sweep in output order (layer-major).

    layer: [variant] long; mask: [variant, pos] or [variant, pos, head] bool, the cells each variant
    patches once the cells that cannot change the metric are dropped; start: [variant] long, the first
    patched row, -1 when nothing is left (the variant equals the base run)."""

    layer: Tensor
    mask: Tensor
    start: Tensor


@dataclass(frozen=True, eq=False)  # holds caches: compared by identity
class Sweep:
    """What every forward pass of one sweep shares: the model, the patched site, the query row ``q``, the base
    run's activations (stacked per variant), the source run's cache, the answers and the metric."""

    model: Model
    site: Site
    q: int
    base: Stacked
    source_cache: ActivationCache
    answers: Answers
    metric: Metric


# ------------------------------------------------------------------------------------------ public


@torch.no_grad()
def patch(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings: PatchSettings | None = None, *,
          progress: bool = False, **fields: Any) -> Result:
    """Activation patching of ``settings.site`` at ``settings.layer`` (None: every layer), one patched run per cell
    of ``settings.by``; ``PatchSettings`` (or its fields by name: ``patch(..., site="z", by="head")``).

    ``direction`` "denoise": the corrupted run with one clean activation patched in; "noise": the clean run
    with one corrupted activation. ``metric``: a probes.metrics name or callable (default: the task's first).
    ``max_batch``: sequences per forward pass (variants x batch). ``corruption`` is recorded when named here
    (the inputs are given, so the settings' corruption, n and seed describe them only if the caller says so).
    Returns a Result: scores [layer, *cells] normalised (0 = corrupted, 1 = clean), per_example
    [example, layer, *cells] on the same scale, extras["metric"] the raw batch-mean metric.
    Cells: ("pos",) for by="layer_pos", () for "layer", ("head", "pos") for "head_pos", ("head",) for "head"."""
    metric = callable_metric(fields)
    corruption = fields.get("corruption")
    settings = PatchSettings.resolve(settings, fields)
    site, direction, max_batch = settings.site_name, settings.direction, settings.max_batch
    layers, by = check_args(model, clean, corrupted, settings)
    metric_name, metric_fn = resolve_metric(task, metric or settings.metric)
    device = next(model.parameters()).device
    clean, corrupted = clean.to(device), corrupted.to(device)
    answers, q = Answers.of(clean, corrupted), clean.query_pos
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)

    spec = SITES[site]
    base_out, base_cache, source_out, source_cache = cached_runs(model, spec, layers, base.inputs, source.inputs)
    base_metric, source_metric = metric_fn(base_out[:, q], answers), metric_fn(source_out[:, q], answers)  # [batch]

    plan = make_plan(model, spec, by=by, layers=layers, base_cache=base_cache, source_cache=source_cache, q=q)
    values = einops.repeat(base_metric, "b -> v b", v=len(plan.layer)).clone()  # [variant, batch]
    per_chunk = max(1, max_batch // clean.inputs.shape[0])
    groups = list(chunks(plan, per_chunk))
    sweep = Sweep(model, spec, q, Stacked(base_cache), source_cache, answers, metric_fn)
    for l, start, idx in progress_bar(groups, desc=f"patch {site}", enabled=progress):
        values[idx] = run_chunk(sweep, l, start, plan.mask[idx])

    clean_metric, corrupted_metric = (source_metric, base_metric) if direction == "denoise" else (base_metric, source_metric)
    return to_result(
        values.cpu(), base_metric.cpu(), base_score=0.0 if direction == "denoise" else 1.0,
        clean_metric=clean_metric.mean().item(), corrupted_metric=corrupted_metric.mean().item(), layers=layers, by=by,
        n_heads=model.cfg.n_heads, n_pos=clean.inputs.shape[1], pos_labels=clean.pos_labels,
        metadata={"site": site, "by": by, "direction": direction, "metric": metric_name,
                  "n_sequences": clean.inputs.shape[0], "query_pos": q, "task": task.describe(), "scale": SCALE,
                  "value_name": "normalised effect", "n_variants": len(plan.layer),
                  "n_patched_runs": int((plan.start >= 0).sum()), "n_forward_passes": len(groups)}
        | ({"corruption": corruption} if corruption is not None else {}),
    )


def cached_runs(model: Model, site: Site, layers: list[int], base_inputs: Tensor, source_inputs: Tensor):
    """(base output, base cache, source output, source cache). The base run keeps the site and what patched
    runs start from (resid_pre, k, v from the first patched layer on); the source run keeps the site."""
    sites = [hook_name(site, l) for l in layers]
    starts = [f"blocks.{l}.{n}" for l in range(min(layers), model.cfg.n_layers)
              for n in ("hook_resid_pre", "attn.hook_k", "attn.hook_v")]
    base_out, base_cache = model.run_with_cache(base_inputs, names_filter=sorted(set(sites + starts)))
    source_out, source_cache = model.run_with_cache(source_inputs, names_filter=sites)
    return base_out, base_cache, source_out, source_cache


def check_args(model: Model, clean: Batch, corrupted: Batch, settings: PatchSettings) -> tuple[list[int], str]:
    """Validate the settings against the model and the batches; returns (layers, by) with defaults filled in."""
    site, layer = settings.site_name, settings.layer
    if site in ("resid_mid", "mlp_out") and model.cfg.attn_only:
        raise ValueError(f"site {site!r} does not exist in an attention-only model; choose another site")
    check_layer(model, layer)
    allowed = BY[SITES[site].layout]
    by = settings.by or allowed[0]
    if by not in allowed:
        raise ValueError(f"by must be one of {', '.join(allowed)} for site {site!r}, got {by!r}")
    if clean.inputs.shape != corrupted.inputs.shape:
        shapes = tuple(corrupted.inputs.shape), tuple(clean.inputs.shape)
        raise ValueError(f"corrupted inputs {shapes[0]} must have the shape of clean {shapes[1]}")
    check_model(model)
    return (list(range(model.cfg.n_layers)) if layer is None else [int(layer)]), by


def check_model(model: Model) -> None:
    """The shortcuts assume a causal pre-norm transformer whose cached hook_k / hook_v are what its
    key-value cache holds; every ModelSpec model is one (a bidirectional one, mask="context", is patched
    without them). Anything else is refused rather than mis-patched."""
    cfg = model.cfg
    get = lambda name, default=None: getattr(cfg, name, default)  # noqa: E731
    unsupported = {
        "attention_dir": get("attention_dir", "causal") not in ("causal", "bidirectional"),
        "positional_embedding_type": get("positional_embedding_type") not in ("standard", "rotary"),
        "use_split_qkv_input": get("use_split_qkv_input"), "use_attn_in": get("use_attn_in"),
        "use_qk_norm": get("use_qk_norm"), "clip_qkv": get("clip_qkv") is not None,
        "n_key_value_heads": get("n_key_value_heads") is not None, "parallel_attn_mlp": get("parallel_attn_mlp"),
        "use_normalization_before_and_after": get("use_normalization_before_and_after"),
        "output_logits_soft_cap": (get("output_logits_soft_cap") or -1) > 0,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"model config {', '.join(bad)} is not supported by probes.patching (build the model with ModelSpec)")


# ------------------------------------------------------------------------------------------ the plan


def hook_name(site: Site, layer: int) -> str:
    """The full hook name of ``site`` in ``layer``, e.g. blocks.0.attn.hook_z."""
    return f"blocks.{layer}.{site.hook}"


def cell_masks(layout: str, by: str, n_pos: int, n_heads: int) -> Tensor:
    """One mask per variant of a layer, in output order: [variant, pos] (resid) or [variant, pos, head]."""
    pos, head = torch.eye(n_pos, dtype=torch.bool), torch.eye(n_heads, dtype=torch.bool)
    if by == "layer_pos":
        return pos
    if by == "layer":
        return torch.ones(1, n_pos, dtype=torch.bool)
    if by == "head_pos":
        return einops.rearrange(head[:, None, None, :] & pos[None, :, :, None], "h p pos head -> (h p) pos head")
    return einops.repeat(head, "h head -> h pos head", pos=n_pos)


def differs(base: Tensor, source: Tensor, layout: str) -> Tensor:
    """Cells where the patched value is not the base value: [pos] (resid) or [pos, head] (head, pattern)."""
    ne = (base != source).any(0).any(-1)  # resid: [pos]; head: [pos, head]; pattern: [head, dest]
    return einops.rearrange(ne, "head pos -> pos head") if layout == "pattern" else ne


def make_plan(model: Model, site: Site, *, by: str, layers: list[int], base_cache: ActivationCache,
              source_cache: ActivationCache, q: int) -> Plan:
    """All variants of the sweep, with the cells that cannot reach the query's metric dropped."""
    n_pos, last = base_cache[hook_name(site, layers[0])].shape[1 if site.layout != "pattern" else 2], model.cfg.n_layers - 1
    masks, layer_ids = [], []
    for l in layers:
        keep = differs(base_cache[hook_name(site, l)], source_cache[hook_name(site, l)], site.layout)
        if model.cfg.attention_dir == "causal":
            keep[q + 1:] = False  # rows after the query never reach it
        if site.row_local and l == last:
            keep[:q] = False  # in the last layer a row-local patch reaches only its own row
        mask = cell_masks(site.layout, by, n_pos, model.cfg.n_heads).to(keep.device) & keep
        masks.append(mask)
        layer_ids.append(torch.full((len(mask),), l, dtype=torch.long))
    mask = torch.cat(masks)
    rows = mask if mask.dim() == 2 else mask.any(-1)  # [variant, pos]
    start = torch.where(rows.any(-1), rows.int().argmax(-1), -1)  # argmax gives the first patched row
    return Plan(torch.cat(layer_ids), mask, start.cpu())


def chunks(plan: Plan, per_chunk: int) -> Iterator[tuple[int, int, Tensor]]:
    """(layer, start, variant indices) for the forward passes: variants grouped by where they start."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (l, s) in enumerate(zip(plan.layer.tolist(), plan.start.tolist())):
        if s >= 0:
            groups[(l, s)].append(i)
    for (l, s), idx in sorted(groups.items()):
        for i in range(0, len(idx), per_chunk):
            yield l, s, torch.tensor(idx[i : i + per_chunk], device=plan.mask.device)


# ------------------------------------------------------------------------------------------ running


def run_chunk(sweep: Sweep, layer: int, start: int, mask: Tensor) -> Tensor:
    """The metric of ``len(mask)`` patched variants that all start at ``layer`` and row ``start``: [variant, batch]."""
    model, site, q, n = sweep.model, sweep.site, sweep.q, len(mask)
    name = hook_name(site, layer)
    source = sweep.source_cache[name]
    if model.cfg.attention_dir != "causal":  # every row may see every other: whole runs, no shortcuts
        hook = patch_hook(source, mask, site.layout, n)
        out = forward_all_rows(model, sweep.base, name, layer=layer, q=q, n=n, hook=hook)
    else:
        rows = mask if mask.dim() == 2 else mask.any(-1)  # [variant, pos]
        # a row-local patch changes its layer's output only at the patched rows; any other changes every later row
        stop = int(rows.any(0).nonzero().max()) if site.row_local else q
        source = source[:, start : stop + 1] if site.layout != "pattern" else source[:, :, start : stop + 1, : stop + 1]
        hook = patch_hook(source, mask[:, start : stop + 1], site.layout, n)
        out = forward_from(model, sweep.base, name, layer=layer, start=start, stop=stop, q=q, n=n, hook=hook)
    answers = sweep.answers
    repeated = Answers(*(einops.repeat(a, "b ... -> (n b) ...", n=n) for a in (answers.clean, answers.corrupted)))
    return einops.rearrange(sweep.metric(out, repeated), "(n b) -> n b", n=n)


def patch_hook(source: Tensor, mask: Tensor, layout: str, n: int) -> Callable[[Tensor, HookPoint | None], Tensor]:
    """A hook that writes ``source`` [batch, ...] into the cells ``mask`` [variant, pos(, head)] marks, per variant."""
    pattern = {"resid": "v p -> v 1 p 1", "head": "v p h -> v 1 p h 1", "pattern": "v p h -> v 1 h p 1"}[layout]
    where = einops.rearrange(mask, pattern)

    def hook(act: Tensor, hook: HookPoint | None) -> Tensor:
        act = einops.rearrange(act, "(v b) ... -> v b ...", v=n)
        return einops.rearrange(torch.where(where, source[None], act), "v b ... -> (v b) ...")

    return hook


def forward_from(model: Model, base: Stacked, name: str, *, layer: int, start: int, stop: int, q: int, n: int,
                 hook: Callable[[Tensor, HookPoint | None], Tensor]) -> Tensor:
    """The output at the query row ``q`` of ``n`` patched copies of the base run: [n * batch, d_out].

    Enters ``layer`` with the base run's resid_pre rows start..stop, with ``hook`` on hook ``name`` (written
    straight into the input when that is the layer's resid_pre). In every layer the rows before ``start``
    enter as the base run's keys and values, rows after the computed ones as the base run's resid_pre. In
    the last layer keys and values are computed for the changed rows only, the block for the query row alone."""
    last, into_input = model.cfg.n_layers - 1, name.endswith(".hook_resid_pre")
    x = base.rows(f"blocks.{layer}.hook_resid_pre", start, stop + 1, n)
    if into_input:
        x = hook(x, None)
    for l in range(layer, last + 1):
        block, end = model.blocks[l], start + x.shape[1] - 1  # x holds rows start..end
        if l == last and (l > layer or into_input):
            changed = min(end, q - 1) + 1  # rows start..changed-1 bring new keys and values
            k, v = keys_values(block, x[:, : changed - start]) if changed > start else (None, None)
            kv = kv_cache(base, l, n, start, k, v, until=q)
            x = block(x[:, -1:] if end == q else base.rows(f"blocks.{l}.hook_resid_pre", q, q + 1, n), past_kv_cache_entry=kv)
            break
        hooked = l == layer and not into_input
        with model.hooks(fwd_hooks=[(name, hook)]) if hooked else contextlib.nullcontext():
            x = block(x, past_kv_cache_entry=kv_cache(base, l, n, start))
        if end < q and l + 1 < last:  # after a row-local patch the next layer changes every row up to q
            x = torch.cat([x, base.rows(f"blocks.{l + 1}.hook_resid_pre", end + 1, q + 1, n)], dim=1)
    x = x[:, -1:]
    if hasattr(model, "ln_final"):  # absent without normalization, and in a model built with final_norm=False
        x = model.ln_final(x)
    return model.unembed(x)[:, 0]


def forward_all_rows(model: Model, base: Stacked, name: str, *, layer: int, q: int, n: int,
                     hook: Callable[[Tensor, HookPoint | None], Tensor]) -> Tensor:
    """The output at row ``q`` of ``n`` patched copies of the base run, every row computed from ``layer`` on
    (for bidirectional models): [n * batch, d_out]."""
    resid_pre = f"blocks.{layer}.hook_resid_pre"
    x = base.rows(resid_pre, 0, base.cache[resid_pre].shape[1], n)
    if name == resid_pre:
        x = hook(x, None)
    for l in range(layer, model.cfg.n_layers):
        hooked = l == layer and name != resid_pre
        with model.hooks(fwd_hooks=[(name, hook)]) if hooked else contextlib.nullcontext():
            x = model.blocks[l](x)
    x = x[:, q : q + 1]
    if hasattr(model, "ln_final"):  # absent without normalization, and in a model built with final_norm=False
        x = model.ln_final(x)
    return model.unembed(x)[:, 0]


class Stacked:
    """The base run's cached activations, repeated once per variant: ``(variant batch) pos ...``. Each is
    repeated once, for the largest chunk, and every chunk takes a view of it (copying the rows before a
    patch for every chunk again was half the work)."""

    def __init__(self, cache: ActivationCache):
        self.cache, self.full = cache, {}

    def rows(self, name: str, a: int, b: int, n: int) -> Tensor:
        """Rows a..b-1 of activation ``name`` for ``n`` variants: [n * batch, b - a, ...]."""
        batch, full = self.cache[name].shape[0], self.full.get(name)
        if full is None or full.shape[0] < n * batch:
            full = self.full[name] = einops.repeat(self.cache[name], "b p ... -> (n b) p ...", n=n)
        return full[: n * batch, a:b]  # variant-major, so the first n copies are the first n * batch rows


def kv_cache(base: Stacked, layer: int, n: int, start: int, k: Tensor | None = None, v: Tensor | None = None,
             until: int | None = None) -> KVEntry | None:
    """Keys and values of the rows a block does not compute: the base run's before ``start``, then ``k`` and
    ``v`` [n * batch, rows, head, d_head] from ``start`` on, then the base run's up to row ``until`` (exclusive)."""
    middle = start + (0 if k is None else k.shape[1])

    def rows(x: str, new: Tensor | None) -> list[Tensor]:
        name = f"blocks.{layer}.attn.hook_{x}"
        parts = [base.rows(name, 0, start, n), new, base.rows(name, middle, middle if until is None else until, n)]
        return [t for t in parts if t is not None and t.shape[1]]

    keys, values = rows("k", k), rows("v", v)
    if not keys:
        return None
    cat = lambda parts: parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # noqa: E731
    return KVEntry(cat(keys), cat(values), frozen=True)


def keys_values(block, resid: Tensor) -> tuple[Tensor, Tensor]:
    """hook_k and hook_v of ``block`` for ``resid`` [batch, rows, d_model], as its forward computes them."""
    x = block.ln1(resid)
    _, k, v = block.attn.calculate_qkv_matrices(x, x, x)
    return k, v


# ------------------------------------------------------------------------------------------ the result


def to_result(values: Tensor, base_metric: Tensor, *, base_score: float, clean_metric: float, corrupted_metric: float,
              layers: list[int], by: str, n_heads: int, n_pos: int, pos_labels: tuple[str, ...], metadata: dict) -> Result:
    """Scores, per-example scores and raw metrics from ``values`` [variant, batch] laid out as [layer, *cells].

    Per-example scores are paired with each sequence's own unpatched run, ``base_score + (m_i - base_i) / Δ``
    (base_score: 0 denoising, 1 noising), so a patch that changes nothing scores exactly the base with no
    spread; their mean over examples is ``scores``."""
    cells = AXES[by]
    sizes = {a[0]: {"head": n_heads, "pos": n_pos}[a] for a in cells}  # head -> h, pos -> p
    letters = " ".join(sizes)
    per_example = einops.rearrange(values, f"(l {letters}) b -> b l {letters}", l=len(layers), **sizes)
    raw = per_example.mean(0)  # [layer, *cells]
    denom = clean_metric - corrupted_metric
    if denom == 0:
        warnings.warn("clean and corrupted runs have the same mean metric: normalised scores are undefined (nan)")
        denom = float("nan")
    labels = {"layer": tick_labels("layer", layers)}
    if "head" in cells:
        labels["head"] = tick_labels("head", n_heads)
    if "pos" in cells and len(pos_labels) == n_pos:
        labels["pos"] = list(pos_labels)
    return Result(
        kind="patching",
        scores=(raw - corrupted_metric) / denom,
        axes=("layer", *cells),
        labels=labels,
        per_example=base_score + (per_example - base_metric.reshape(-1, *[1] * (per_example.dim() - 1))) / denom,
        extras={"metric": raw},
        metadata=metadata | {"clean_metric": clean_metric, "corrupted_metric": corrupted_metric, "layers": layers},
    )
