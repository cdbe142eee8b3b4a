"""Linear probes: is a quantity of the task linearly readable from a hook's activations, and where?

A probe is a ridge regression (real-valued targets) or a logistic regression (class targets, one classifier per
component) from ``cache[hook]`` at one position to a per-sequence quantity: the weight vector w, the
least-squares estimate, polynomial coefficients, the task vector (a, b), a·x mod p, ... Named quantities live
on the task class (``task.probe_targets``); any callable ``batch -> [batch, ...]`` works too. Sequences are split
into train and test sets, features are standardised on the train set, and the held-out R² (mean over target
components) or accuracy is reported per hook and position. The control refits on shuffled training labels: it
measures what a probe of this capacity gets from nothing, and must sit at chance (R² ≤ ~0, accuracy ≈ 1/classes).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import einops
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from interp.spec import Model
from interp.tasks import Batch, TaskBase, examples_that_fit
from interp.tasks.targets import TargetKind
from interp.results import Result, tick_labels
from probes.settings import ProbeSettings

RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))
"""Ridge penalties tried (by efficient leave-one-out on the train set) per target component."""


# --- arguments -----------------------------------------------------------------------------------------


def _resolve_target(task: TaskBase, target: str | Callable[[Batch], Tensor], kind: TargetKind | None
                    ) -> tuple[str, Callable[[Batch], Tensor], TargetKind | None]:
    if callable(target):
        return getattr(target, "__name__", "custom"), target, kind
    known = task.probe_targets
    if target not in known:
        raise ValueError(f"target {target!r} is not defined for task {task.name!r}; choose from "
                         f"{', '.join(known) or 'none'} or pass a callable batch -> [batch, ...]")
    spec = known[target]
    return target, lambda batch: spec.fn(task, batch), kind or spec.kind


def _hooks(model: Model, hook: str | Sequence[str] | None) -> tuple[str, list[str], list[str]]:
    """(axis name, hook names, tick labels): all resid_post layers by default."""
    if hook is None:
        hooks = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
        return "layer", hooks, tick_labels("layer", model.cfg.n_layers)
    hooks = [hook] if isinstance(hook, str) else list(hook)
    bad = [h for h in hooks if h not in model.hook_dict]
    if not hooks or bad:
        raise ValueError(f"hook must name hooks of this model (e.g. hook_embed, blocks.0.hook_resid_post), got {bad or hooks!r}")
    return "hook", hooks, hooks


def _positions(positions: int | str | Sequence[int | str] | None, batch: Batch) -> list[int]:
    """Indices for ``positions``: ints (negative from the end), position labels ("x3", "y0") or "query"."""
    n_pos = batch.inputs.shape[1]
    if positions is None:
        return list(range(n_pos))
    items = [positions] if isinstance(positions, (int, str)) else list(positions)
    out = []
    for p in items:
        if isinstance(p, str) and p == "query":
            out.append(batch.query_pos)
        elif isinstance(p, str) and p in batch.pos_labels:
            out.append(batch.pos_labels.index(p))
        elif isinstance(p, int) and -n_pos <= p < n_pos:
            out.append(p % n_pos)
        else:
            raise ValueError(f"positions must be ints in [-{n_pos}, {n_pos}), 'query' or labels like "
                             f"{', '.join(batch.pos_labels[:4])}; got {p!r}")
    if not out:
        raise ValueError("positions must not be empty")
    return out


# --- activations and fits ---------------------------------------------------------------------------------


@torch.no_grad()
def _activations(model: Model, batch: Batch, hooks: list[str], positions: list[int], chunk: int = 256) -> dict[str, Tensor]:
    """{hook: [batch, n_positions, features]} float64 on the CPU. Attention patterns and scores, [b, h, q, k], are
    read by query position with the heads' rows side by side; masked scores become 0."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    try:
        for start in range(0, batch.inputs.shape[0], chunk):
            _, cache = model.run_with_cache(batch.inputs[start : start + chunk].to(device), names_filter=lambda n: n in parts)
            for h in hooks:
                act = cache[h]
                if h.endswith(("hook_pattern", "hook_attn_scores")):
                    act = einops.rearrange(act, "b h q k -> b q (h k)")
                    act = torch.where(torch.isfinite(act), act, torch.zeros_like(act))
                elif act.dim() < 2 or act.shape[1] != batch.inputs.shape[1]:
                    raise ValueError(f"hook {h!r} has no position axis: activations of shape {tuple(act.shape)}")
                else:
                    act = act.reshape(*act.shape[:2], -1)
                parts[h].append(act[:, positions].double().cpu())
    finally:
        model.train(was_training)
    return {h: torch.cat(p) for h, p in parts.items()}


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Held-out R² (scikit-learn's, around the test mean), averaged over components that vary on the test set."""
    from sklearn.metrics import r2_score

    spread = y_true.var(0) * len(y_true)  # the total sum of squares per component
    keep = spread > 1e-12 * max(1.0, float(spread.max(initial=0.0)))
    if not keep.any():
        return float("nan")
    return float(r2_score(y_true[:, keep], y_pred.reshape(y_true.shape)[:, keep]))


def _fit(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, kind: TargetKind) -> tuple[float, float]:
    """(held-out score, train score) of one probe: R² for regression, accuracy (mean over components) for classes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    if kind == "regression":
        ridge = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit(x_tr, y_tr)
        return _r2(y_te, ridge.predict(x_te)), _r2(y_tr, ridge.predict(x_tr))
    test, train = [], []
    for j in range(y_tr.shape[1]):
        if len(np.unique(y_tr[:, j])) < 2:  # one class seen: the only sensible probe predicts it
            test.append(float(np.mean(y_te[:, j] == y_tr[0, j])))
            train.append(1.0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(max_iter=300).fit(x_tr, y_tr[:, j])
        test.append(float(np.mean(clf.predict(x_te) == y_te[:, j])))
        train.append(float(np.mean(clf.predict(x_tr) == y_tr[:, j])))
    return float(np.mean(test)), float(np.mean(train))


# --- front end -----------------------------------------------------------------------------------------


def probe(model: Model, task: TaskBase, target: str | Callable[[Batch], Tensor] | None = None,
          settings: ProbeSettings | None = None, *, generator: torch.Generator | None = None,
          n_examples: int | None = None, **fields: Any) -> Result:
    """Held-out linear-probe score of ``target`` from ``hook`` activations: Result over ("layer", "pos").

    target: a name in ``task.probe_targets`` or a callable batch -> [batch, ...] (float: ridge, R²; integer:
    logistic per component, accuracy; ``kind`` overrides). hook: None (every blocks.{l}.hook_resid_post, axis
    "layer") or one or more hook names (axis "hook"). positions: None (all), ints, labels ("y0") or "query".
    scores [layer|hook, pos]: held-out R² or accuracy. Extras: control [same] (shuffled training labels),
    train [same] (train-set score). Metadata: metric, chance, n_train, n_test, target, hooks, positions.
    ``ProbeSettings`` (target, hook, positions, n, test_fraction, kind) or its fields by name; a callable target
    stays an argument."""
    if target is not None and not callable(target):
        fields = {**fields, "target": target}
    s = ProbeSettings.resolve(settings, fields)
    target = target if callable(target) else s.target
    if target is None:
        raise ValueError("The 'target' argument of probe is required (e.g. 'w', 'coefs', 'a').")
    hook, n, test_fraction, kind = s.hook, s.n, s.test_fraction, s.kind
    positions = list(s.positions) if isinstance(s.positions, tuple) else s.positions
    name, fn, kind = _resolve_target(task, target, kind)
    axis, hooks, ticks = _hooks(model, hook)
    n_examples = examples_that_fit(task, model.cfg.n_ctx, n_examples)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    batch = task.sample(n, n_examples, generator)  # type: ignore[attr-defined]
    pos = _positions(positions, batch)

    y = fn(batch)
    if not isinstance(y, Tensor) or y.dim() < 1 or y.shape[0] != n:
        raise ValueError(f"target must give a tensor [batch={n}, ...], got {getattr(y, 'shape', type(y).__name__)}")
    kind = kind or ("regression" if y.is_floating_point() else "classification")
    y = y.reshape(n, -1).detach().cpu()
    y_np = y.double().numpy() if kind == "regression" else y.long().numpy()
    varies = np.array([len(np.unique(y_np[:, j])) > 1 for j in range(y_np.shape[1])])
    if not varies.any():
        raise ValueError(f"target {name!r} is constant on this task: nothing to probe")
    y_np = y_np[:, varies]

    n_test = max(2, round(test_fraction * n))
    order = torch.randperm(n, generator=generator).numpy()
    test_idx, train_idx = order[:n_test], order[n_test:]
    shuffled = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
    acts = _activations(model, batch, hooks, pos)

    shape = (len(hooks), len(pos))
    scores, control, train = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    # Many small fits: one BLAS thread each is far faster than a contended pool.
    with threadpool_limits(limits=1):
        for i, h in enumerate(hooks):
            for j in range(len(pos)):
                x = acts[h][:, j].numpy()
                scores[i, j], train[i, j] = _fit(x[train_idx], y_np[train_idx], x[test_idx], y_np[test_idx], kind)
                control[i, j] = _fit(x[train_idx], y_np[shuffled], x[test_idx], y_np[test_idx], kind)[0]

    if kind == "classification":
        chance = float(np.mean([1 / len(np.unique(y_np[:, j])) for j in range(y_np.shape[1])]))
        majority = float(np.mean([np.bincount(y_np[test_idx, j] - y_np[:, j].min()).max() / n_test for j in range(y_np.shape[1])]))
    else:
        chance, majority = 0.0, None
    metric = "r2" if kind == "regression" else "accuracy"
    metadata = {
        "title": f"probe {name} ({metric}): {task.describe()}",
        "value_name": f"held-out {metric}",
        "target": name,
        "target_kind": kind,
        "target_components": int(y_np.shape[1]),
        "metric": metric,
        "chance": chance,
        "majority": majority,
        "control": "refit on shuffled training labels, scored on the true test labels",
        "hooks": hooks,
        "positions": pos,
        "n_train": int(len(train_idx)),
        "n_test": int(n_test),
        "n_examples": n_examples,
        "task": task.to_dict(),  # type: ignore[attr-defined]
        "print_extras": ["control"],  # the CLI prints the shuffled-label control under the scores
    }
    return Result(kind="probe", scores=scores, axes=(axis, "pos"),
                  labels={axis: ticks, "pos": [batch.pos_labels[p] if batch.pos_labels else str(p) for p in pos]},
                  extras={"control": control, "train": train}, metadata=metadata)
