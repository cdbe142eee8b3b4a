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

CheckpointLike = Checkpoint | str | Path


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


def evaluate(m: CheckpointLike, n: int = 1280, seed: int = 0, task: TaskBase | None = None,
             baselines: bool = True, metric: str | None = None) -> EvalResult:
    """Error (or accuracy) against the number of in-context examples on every evaluation split of the model's
    task (or of ``task``, e.g. a held-out class), beside the baselines, on ``n`` sequences (1280: Garg et al.'s
    count). Regression error is squared error / d (``interp.evaluate.metric_of``; ``metric="error_over_mean_y2"``
    gives the earlier metric). The baselines draw no random numbers, so the model's curves are the same with or
    without them."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    ckpt = as_checkpoint(m)
    batch_size = min(n, 256)
    return evaluate_model(ckpt.model, task or ckpt.task, ckpt.train["n_examples"], n_batches=-(-n // batch_size),
                          batch_size=batch_size, generator=torch.Generator().manual_seed(seed), baselines=baselines,
                          metric=metric)


# --- probes --------------------------------------------------------------------------------------------

# short site names (the CLI's and the issue's) -> probes.patching site names
SITE_ALIASES = {"resid": "resid_pre", "attn": "attn_out", "mlp": "mlp_out", "head": "z"}
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


def patch(m: CheckpointLike, site: str = "resid_pre", layer: int | None = None, by: str | None = None,
          corruption: str = "params", metric: str | Any = None, direction: str = "denoise", n: int = 64,
          seed: int = 0, progress: bool = False) -> Result:
    """Exact activation patching (``probes.patching.patch``) on ``n`` sequences of the checkpoint's task.
    ``site`` is a patching site (resid_pre, resid_mid, attn_out, mlp_out, z, q, k, v, pattern) or a short
    name: resid, attn, mlp, head (= z, each head's output).

    scores: normalised effect [layer, pos] / [layer, head, pos] / [layer, head] (0 = corrupted, 1 = clean)."""
    from probes.patching import SITES
    from probes.patching import patch as patch_probe

    check("patch", "n", n, [Interval(Integral, 2, None)])  # one sequence has no spread: the sem would be NaN
    site = SITE_ALIASES.get(site, site)
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose from {', '.join([*SITE_ALIASES, *SITES])}")
    ckpt = as_checkpoint(m)
    clean, corrupted = sample_inputs(ckpt, n, seed, corruption)
    result = patch_probe(ckpt.model, ckpt.task, clean, corrupted, site=site, layer=layer, by=by,
                         direction=direction, metric=metric, corruption=corruption, progress=progress)
    return stamp(result, ckpt, seed, corruption=corruption)


def attribute(m: CheckpointLike, method: str = "dla", corruption: str | None = "params", metric: str | Any = None,
              ablation: str = "mean", site: str = "head", direction: str = "denoise", n: int = 64, seed: int = 0,
              compare_exact: bool = True) -> Result:
    """Head attribution (``probes.attribution.attribute``): method dla | ablate | attrib | head_types.

    For ``attrib``, with ``compare_exact``, the exact patching sweep it approximates is run too and its
    Pearson and Spearman correlation is put in ``metadata["exact_correlation"]``."""
    from probes.attribution import attribute as attribute_probe
    from probes.attribution import correlation

    check("attribute", "n", n, [Interval(Integral, 2, None)])
    ckpt = as_checkpoint(m)
    if method == "attrib" and corruption is None:
        raise ValueError("method 'attrib' needs a corruption (params, query or shift)")
    clean, corrupted = sample_inputs(ckpt, n, seed, corruption)
    result = attribute_probe(ckpt.model, ckpt.task, clean, corrupted, method=method, metric=metric,
                             ablation=ablation, site=site, direction=direction)
    if method == "attrib" and compare_exact:
        from probes.patching import patch as patch_probe

        exact_site, by = EXACT_FOR_ATTRIB[site]
        exact = patch_probe(ckpt.model, ckpt.task, clean, corrupted, site=exact_site, by=by, direction=direction,
                            metric=result.metadata.get("metric", metric))
        result.metadata["exact_correlation"] = correlation(result, exact)
    return stamp(result, ckpt, seed, corruption=corruption)


def mlp(m: CheckpointLike, layer: int = 0, n_context: int | None = None, seed: int = 0) -> dict[str, Result]:
    """MLP representations of a modular model at ``layer`` over the (x, y) grid (``probes.mlp.mlp_analysis``):
    Fourier spectrum of W_E, PCA, circularity, per-neuron frequencies, restricted / excluded loss, by name."""
    from probes.mlp import mlp_analysis

    ckpt = as_checkpoint(m)
    analysis = mlp_analysis(ckpt.model, ckpt.task, layer, context=n_context, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return {name: stamp(r, ckpt, seed) for name, r in analysis.results().items()}


def algorithms(m: CheckpointLike, shots: list[int] | None = None, seed: int = 0) -> Result:
    """He et al.'s algorithm map (``probes.algorithms.algorithm_map``): per shot count and (x, y) query, is the
    model right, and do ratio matching and modular regression predict it."""
    from probes.algorithms import algorithm_map

    ckpt = as_checkpoint(m)
    result = algorithm_map(ckpt.model, ckpt.task, shots=shots, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return stamp(result, ckpt, seed)


def geometry(m: CheckpointLike, layer: int = 0, head: int = 0, seed: int = 0) -> Result:
    """Circle-of-circles and even/odd scores of one head's output over the (x, y) grid (``probes.geometry``)."""
    from probes.geometry import head_geometry

    ckpt = as_checkpoint(m)
    result = head_geometry(ckpt.model, ckpt.task, layer, head, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return stamp(result, ckpt, seed)


def saturation(m: CheckpointLike, scales: list[float] | None = None, field: str | None = None, n: int = 256,
               seed: int = 0) -> Result:
    """Prediction, attention entropy / max weight, score range, LN scale and residual norm as the coefficient (or
    input) scale takes the target out of the training range, and the signed boundary values B+ / B− with the
    fall-back slope beyond the range (``probes.saturation``; field None: coef where the task has it)."""
    from probes.saturation import saturation as saturation_probe

    ckpt = as_checkpoint(m)
    result = saturation_probe(ckpt.model, ckpt.task, scales=scales, field=field, n=n,
                              generator=torch.Generator().manual_seed(seed), n_examples=ckpt.train["n_examples"])
    return stamp(result, ckpt, seed)


def compare_saturation(models: dict[str, CheckpointLike] | list[CheckpointLike], scales: list[float] | None = None,
                       field: str | None = None, n: int = 256, seed: int = 0) -> Result:
    """B+ and B− per variant trained on the same task (with / without LN or the final LN, softmax / relu /
    linear scoring, full / attention-only): which removal moves the plateau
    (``probes.saturation.compare_boundaries``; scores [variant, side])."""
    from probes.saturation import compare_boundaries

    named = models if isinstance(models, dict) else {str(as_checkpoint(m).path or i): m for i, m in enumerate(models)}
    ckpts = {name: as_checkpoint(m) for name, m in named.items()}
    tasks = {c.task for c in ckpts.values()}
    if len(tasks) != 1:
        raise ValueError("compare_saturation needs models trained on the same task; got " + "; ".join(t.describe() for t in tasks))
    first = next(iter(ckpts.values()))
    result = compare_boundaries({k: c.model for k, c in ckpts.items()}, first.task, scales=scales, field=field, n=n,
                                generator=torch.Generator().manual_seed(seed),
                                n_examples=min(int(c.train["n_examples"]) for c in ckpts.values()))  # fits every context
    result.metadata |= {"checkpoints": {k: str(c.path) for k, c in ckpts.items()}, "seed": seed}
    return result


def probe(m: CheckpointLike, target: str | Any, hook: str | list[str] | None = None,
          positions: int | str | list[int | str] | None = None, n: int = 512, seed: int = 0) -> Result:
    """Held-out linear-probe R² or accuracy of a task quantity from a hook's activations, per layer and position,
    with a shuffled-label control in ``extras["control"]`` (``probes.probing.probe``)."""
    from probes.probing import probe as probe_fn

    ckpt = as_checkpoint(m)
    result = probe_fn(ckpt.model, ckpt.task, target, hook=hook, positions=positions, n=n,
                      generator=torch.Generator().manual_seed(seed), n_examples=ckpt.train["n_examples"])
    return stamp(result, ckpt, seed)
