"""What notebooks import: ``import interp; m = interp.load("models/<name>"); interp.patch(m, ...)``.

Each function takes a loaded checkpoint (or a path to one), draws its inputs from the checkpoint's own task
with a seed, runs one probe and returns a ``interp.results.Result`` whose metadata names the checkpoint,
the corruption, the metric and the seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .evaluate import EvalResult
from .evaluate import evaluate as evaluate_model
from .spec import ModelSpec
from .tasks import TASKS, TaskBase
from .train import TrainConfig
from .train import train as train_model
from .validation import Interval, Integral, check
from interp.results import Result
from probes.settings import (AlgorithmsSettings, AttributeSettings, CircuitSettings, EvalSettings, GeometrySettings,
                             MlpSettings, PatchSettings, ProbeSettings, SaturationSettings)

CheckpointLike = Checkpoint | str | Path

# What the dashboard shows beside the probes' Results: their option values, tables and figures. Loaded on first
# use (a module __getattr__), so that `import interp.api` stays free of plotly; the app imports probes only here.
VIEWS = {
    "BY": "probes.patching", "SITES": "probes.patching", "PATCH_SITES": "probes.settings",
    "correlation": "probes.attribution_patching", "default_field": "probes.saturation", "figure_pca": "probes.fourier",
    "SUMMARIES": "probes.algorithms", "HEAD_TYPES": "probes.head_types", "metrics_for": "probes.metrics",
    "estimate_figure": "probes.circuits.figures", "faithfulness_figure": "probes.circuits.figures",
    "graph_figure": "probes.circuits.figures", "top_edges": "probes.circuits.figures",
}


def __getattr__(name: str) -> Any:
    if name in VIEWS:
        import importlib

        return getattr(importlib.import_module(VIEWS[name]), name)
    raise AttributeError(f"module 'interp.api' has no attribute {name!r}")


def load(path: str | Path, step: int | None = None) -> Checkpoint:
    """Load a checkpoint folder: ``m.model`` (HookedTransformer or RegressionTransformer), ``m.task``, ``m.spec``;
    with ``step``, the model holds the weight snapshot taken at that training step."""
    return load_checkpoint(path, step)


def as_checkpoint(m: CheckpointLike) -> Checkpoint:
    return m if isinstance(m, Checkpoint) else load_checkpoint(m)


def train(task: str | TaskBase, out: str | Path | None = None, n_examples: int = 11, steps: int = 2000,
          task_args: dict[str, Any] | None = None, progress: bool = True, **model_and_train: Any) -> Checkpoint:
    """Train a model on ``task`` (a name such as "modular" or a task object). Keyword arguments go to
    ``ModelSpec`` (n_layers, d_model, scoring, ...) or ``TrainConfig`` (lr, batch_size, ...) by name."""
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
        task = TASKS[task](**(task_args or {}))
    spec_fields = set(ModelSpec.__dataclass_fields__)
    train_fields = set(TrainConfig.__dataclass_fields__)
    unknown = set(model_and_train) - spec_fields - train_fields
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))}: not a ModelSpec or TrainConfig field")
    if not isinstance(task, TaskBase):
        raise ValueError(f"The 'task' argument of train must be a task name ({', '.join(sorted(TASKS))}) or a task "
                         f"object. Got {task!r} instead.")
    # the training config first: it checks n_examples, which the spec's context length is computed from
    cfg = TrainConfig(steps=steps, n_examples=n_examples, **{k: v for k, v in model_and_train.items() if k in train_fields})
    spec = ModelSpec.for_task(task, n_examples, **{k: v for k, v in model_and_train.items() if k in spec_fields})
    return train_model(task, spec, cfg, out=out, progress=progress)


def evaluate(m: CheckpointLike, settings: EvalSettings | None = None, *, task: TaskBase | None = None,
             progress: bool = False, **fields: Any) -> EvalResult:
    """Error (or accuracy) against the number of in-context examples on every evaluation split of the model's
    task (or of ``task``, e.g. a held-out class), beside the baselines, with ``EvalSettings`` (n sequences, 1280:
    Garg et al.'s count; seed; metric; baselines). Regression error is squared error / d
    (``interp.evaluate.metric_of``; ``metric="error_over_mean_y2"`` gives the earlier metric). The baselines draw
    no random numbers, so the model's curves are the same with or without them."""
    s = EvalSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    batch_size = min(s.n, 256)
    return evaluate_model(ckpt.model, task or ckpt.task, ckpt.train["n_examples"], n_batches=-(-s.n // batch_size),
                          batch_size=batch_size, generator=torch.Generator().manual_seed(s.seed), baselines=s.baselines,
                          metric=s.metric, progress=progress)


# --- probes --------------------------------------------------------------------------------------------
# Each probe's options are the fields of its settings dataclass (``probes.settings``): pass ``settings=`` or the
# fields by name (``interp.patch(m, site="z", by="head")``); the CLI flags and the dashboard use the same names.

# attribution-patching site -> the exact patching sweep it estimates (site, by)
EXACT_FOR_ATTRIB = {"head": ("z", "head"), "head_pos": ("z", "head_pos"), "resid_pre": ("resid_pre", "layer_pos"),
                    "mlp": ("mlp_out", "layer"), "mlp_pos": ("mlp_out", "layer_pos")}


def sample_inputs(ckpt: Checkpoint, n: int, seed: int, corruption: str | None) -> tuple[Any, Any]:
    """``n`` clean sequences from the checkpoint's task and, if asked, their corrupted twins (seeded)."""
    check("sample_inputs", "n", n, [Interval(Integral, 1, None)])
    g = torch.Generator().manual_seed(seed)
    clean = ckpt.task.sample(n, ckpt.train["n_examples"], g)  # type: ignore[attr-defined]
    corrupted = None if corruption is None else ckpt.task.corrupt(clean, corruption, g)  # type: ignore[attr-defined]
    return clean, corrupted


def stamp(result: Any, ckpt: Checkpoint, seed: int, **extra: Any) -> Any:
    """Add what a reader needs to reproduce ``result``: checkpoint, seed, and the given fields."""
    result.metadata |= {"checkpoint": str(ckpt.path) if ckpt.path else None, "seed": seed,
                        **({"step": ckpt.step} if ckpt.step is not None else {}),  # a weight snapshot's step
                        **{k: v for k, v in extra.items() if v is not None}}
    return result


def patch(m: CheckpointLike, settings: PatchSettings | None = None, *, progress: bool = False, **fields: Any) -> Result:
    """Exact activation patching (``probes.patching.patch``) on ``n`` sequences of the checkpoint's task, with
    ``PatchSettings`` (site, layer, by, corruption, metric, direction, n, seed). ``site`` is a patching site
    (resid_pre, resid_mid, attn_out, mlp_out, z, q, k, v, pattern) or a short name: resid, attn, mlp, head (= z).

    scores: normalised effect [layer, pos] / [layer, head, pos] / [layer, head] (0 = corrupted, 1 = clean)."""
    from probes.patching import patch as patch_probe

    s = PatchSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    clean, corrupted = sample_inputs(ckpt, s.n, s.seed, s.corruption)
    result = patch_probe(ckpt.model, ckpt.task, clean, corrupted, s, progress=progress)
    return stamp(result, ckpt, s.seed, corruption=s.corruption)


def attribute(m: CheckpointLike, settings: AttributeSettings | None = None, **fields: Any) -> Result:
    """Head attribution (``probes.attribution.attribute``) with ``AttributeSettings``: method dla | ablate |
    attrib | head_types. For ``attrib``, with ``compare_exact``, the exact patching sweep it approximates is run
    too and its Pearson and Spearman correlation is put in ``metadata["exact_correlation"]``."""
    from probes.attribution import attribute as attribute_probe
    from probes.attribution_patching import correlation

    s = AttributeSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    if s.method == "attrib" and s.corruption is None:
        raise ValueError("method 'attrib' needs a corruption (params, query or shift)")
    clean, corrupted = sample_inputs(ckpt, s.n, s.seed, s.corruption)
    result = attribute_probe(ckpt.model, ckpt.task, clean, corrupted, s)
    if s.method == "attrib" and s.compare_exact:
        from probes.patching import patch as patch_probe

        exact_site, by = EXACT_FOR_ATTRIB[s.site]
        exact = patch_probe(ckpt.model, ckpt.task, clean, corrupted, site=exact_site, by=by, direction=s.direction,
                            metric=result.metadata.get("metric", s.metric))
        result.metadata["exact_correlation"] = correlation(result, exact)
    return stamp(result, ckpt, s.seed, corruption=s.corruption)


def mlp(m: CheckpointLike, settings: MlpSettings | None = None, **fields: Any) -> Any:
    """MLP representations of a modular model at ``layer`` over the (x, y) grid (``probes.mlp.mlp_analysis``), with
    ``MlpSettings``: an ``MLPAnalysis`` whose attributes are Results (frequencies of W_E, PCA, circularity,
    per-neuron frequencies, restricted / excluded loss)."""
    from probes.mlp import mlp_analysis

    s = MlpSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    analysis = mlp_analysis(ckpt.model, ckpt.task, s, generator=torch.Generator().manual_seed(s.seed))  # type: ignore[arg-type]
    for r in analysis.results().values():
        stamp(r, ckpt, s.seed)
    return analysis


def algorithms(m: CheckpointLike, settings: AlgorithmsSettings | None = None, **fields: Any) -> Result:
    """He et al.'s algorithm map (``probes.algorithms.algorithm_map``) with ``AlgorithmsSettings``: per shot count
    and (x, y) query, is the model right, and do ratio matching and modular regression predict it."""
    from probes.algorithms import algorithm_map

    s = AlgorithmsSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    result = algorithm_map(ckpt.model, ckpt.task, s, generator=torch.Generator().manual_seed(s.seed))  # type: ignore[arg-type]
    return stamp(result, ckpt, s.seed)


def geometry(m: CheckpointLike, settings: GeometrySettings | None = None, **fields: Any) -> Result:
    """Circle-of-circles and even/odd scores of one head's output over the (x, y) grid (``probes.geometry``),
    with ``GeometrySettings`` (layer, head, seed)."""
    from probes.geometry import head_geometry

    s = GeometrySettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    result = head_geometry(ckpt.model, ckpt.task, s, generator=torch.Generator().manual_seed(s.seed))  # type: ignore[arg-type]
    return stamp(result, ckpt, s.seed)


def saturation(m: CheckpointLike, settings: SaturationSettings | None = None, *, progress: bool = False,
               **fields: Any) -> Result:
    """Prediction, attention entropy / max weight, score range, LN scale and residual norm as the coefficient (or
    input) scale takes the target out of the training range, and the signed boundary values B+ / B− with the
    fall-back slope beyond the range (``probes.saturation``), with ``SaturationSettings`` (field None: coef
    where the task has it)."""
    from probes.saturation import saturation as saturation_probe

    s = SaturationSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    result = saturation_probe(ckpt.model, ckpt.task, s, generator=torch.Generator().manual_seed(s.seed),
                              n_examples=ckpt.train["n_examples"], progress=progress)
    return stamp(result, ckpt, s.seed)


def compare_saturation(models: dict[str, CheckpointLike] | list[CheckpointLike],
                       settings: SaturationSettings | None = None, *, progress: bool = False, **fields: Any) -> Result:
    """B+ and B− per variant trained on the same task (with / without LN or the final LN, softmax / relu /
    linear scoring, full / attention-only): which removal moves the plateau
    (``probes.saturation.compare_boundaries``; scores [variant, side]), with ``SaturationSettings``."""
    from probes.saturation import compare_boundaries

    s = SaturationSettings.resolve(settings, fields)
    named = models if isinstance(models, dict) else {str(as_checkpoint(m).path or i): m for i, m in enumerate(models)}
    ckpts = {name: as_checkpoint(m) for name, m in named.items()}
    tasks = {c.task for c in ckpts.values()}
    if len(tasks) != 1:
        raise ValueError("compare_saturation needs models trained on the same task; got " + "; ".join(t.describe() for t in tasks))
    first = next(iter(ckpts.values()))
    result = compare_boundaries({k: c.model for k, c in ckpts.items()}, first.task, s,
                                generator=torch.Generator().manual_seed(s.seed),
                                n_examples=min(int(c.train["n_examples"]) for c in ckpts.values()),  # fits every context
                                progress=progress)
    result.metadata |= {"checkpoints": {k: str(c.path) for k, c in ckpts.items()}, "seed": s.seed}
    return result


def probe(m: CheckpointLike, target: str | Any = None, settings: ProbeSettings | None = None, **fields: Any) -> Result:
    """Held-out linear-probe R² or accuracy of a task quantity from a hook's activations, per layer and position,
    with a shuffled-label control in ``extras["control"]`` (``probes.probing.probe``), with ``ProbeSettings``
    (``target`` may also be a callable: batch -> [batch, k] targets)."""
    from probes.probing import probe as probe_fn

    s = ProbeSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    result = probe_fn(ckpt.model, ckpt.task, target, s, generator=torch.Generator().manual_seed(s.seed),
                      n_examples=ckpt.train["n_examples"])
    return stamp(result, ckpt, s.seed)


def circuit(m: CheckpointLike, settings: CircuitSettings | None = None, *, progress: bool = False,
            **fields: Any) -> Any:
    """Edge-level circuits (``probes.circuits.circuit``) on ``n`` sequences of the checkpoint's task, with
    ``CircuitSettings`` (method exact | eap | eap-ig, positions, top, ablation, ...): a ``Circuit`` whose
    ``edges`` Result scores every sender -> receiver edge, ``matrix`` is the same as [sender, receiver],
    ``faithfulness`` the top-k circuits' curve (completeness in its extras) and, for an estimate, ``exact`` the
    exact edge patching beside it (``edges.metadata["exact_correlation"]``)."""
    from probes.circuits import circuit as circuit_probe

    s = CircuitSettings.resolve(settings, fields)
    ckpt = as_checkpoint(m)
    clean, corrupted = sample_inputs(ckpt, s.n, s.seed, s.corruption)
    found = circuit_probe(ckpt.model, ckpt.task, clean, corrupted, s, progress=progress)
    for r in found.results().values():
        stamp(r, ckpt, s.seed, corruption=s.corruption)
    return found
