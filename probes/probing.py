"""Linear probes: is a quantity of the task linearly readable from a hook's activations, and where?

A probe is a ridge regression (real-valued targets) or a logistic regression (class targets, one classifier per
component) from ``cache[hook]`` at one position to a per-sequence quantity: the weight vector w, the
least-squares estimate, polynomial coefficients, the task vector (a, b), a·x mod p, ... Named quantities live
in ``TARGETS`` per task; any callable ``batch -> [batch, ...]`` works too. Sequences are split into train and
test sets, features are standardised on the train set, and the held-out R² (mean over target components) or
accuracy is reported per hook and position. The control refits on shuffled training labels: it measures what a
probe of this capacity gets from nothing, and must sit at chance (R² ≤ ~0, accuracy ≈ 1/classes).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import einops
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from interp.baselines import kernel_regression, poly_least_squares
from interp.spec import Model
from interp.tasks import Batch, TaskBase, examples_that_fit
from interp.results import Result

TargetKind = Literal["regression", "classification"]
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))
"""Ridge penalties tried (by efficient leave-one-out on the train set) per target component."""


@dataclass(frozen=True)
class Target:
    """A named probe target: ``fn(task, batch) -> [batch, ...]`` (float for regression, long for classes)."""

    fn: Callable[[TaskBase, Batch], Tensor]
    kind: TargetKind
    doc: str


# --- target functions ------------------------------------------------------------------------------------


def _context(batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """Regression context before the query, float64: xs [batch, k-1, d_x], ys [batch, k-1, d_y], query x [batch, d_x]."""
    xs = batch.examples.double()  # type: ignore[union-attr]
    ys = einops.rearrange(batch.targets[batch.loss_mask].double(), "(b k) d -> b k d", b=xs.shape[0])
    return xs[:, :-1], ys[:, :-1], xs[:, -1]


def _w_ls(task: TaskBase, batch: Batch) -> Tensor:
    xs, ys, _ = _context(batch)
    return (torch.linalg.pinv(xs) @ ys)[..., 0].float()  # minimum-norm least squares, [batch, d_x]


def _ls_pred(task: TaskBase, batch: Batch) -> Tensor:
    xs, ys, xq = _context(batch)
    return einops.einsum(xq, torch.linalg.pinv(xs) @ ys, "b d, b d o -> b o").float()


def _poly_ls_pred(task: TaskBase, batch: Batch) -> Tensor:
    xs, ys, xq = _context(batch)
    return poly_least_squares(xs, ys, xq, degree=batch.params["degree"], kind=task.basis).float()  # type: ignore[attr-defined]


def _gp_mean(task: TaskBase, batch: Batch) -> Tensor:
    xs, ys, xq = _context(batch)
    return kernel_regression(xs, ys, xq, kernel=task.kernel).float()  # type: ignore[attr-defined]


def _y_query(task: TaskBase, batch: Batch) -> Tensor:
    return batch.targets[:, batch.query_pos]


def _x_query(task: TaskBase, batch: Batch) -> Tensor:
    return batch.examples[:, -1]  # type: ignore[index]


def _param(name: str) -> Callable[[TaskBase, Batch], Tensor]:
    return lambda task, batch: batch.params[name]


QUERY = {
    "y_query": Target(_y_query, "regression", "the target at the query"),
    "x_query": Target(_x_query, "regression", "the query input x"),
}
MODULAR = {
    "a": Target(_param("a"), "classification", "task parameter a"),
    "b": Target(_param("b"), "classification", "task parameter b"),
    "task_vector": Target(lambda t, b: torch.stack([b.params["a"], b.params["b"]], -1), "classification",
                          "the task vector (a, b), one classifier per component"),
    "z_query": Target(lambda t, b: b.targets[:, b.query_pos], "classification", "the answer z at the query"),
    "x_query": Target(lambda t, b: b.examples[:, -1, 0], "classification", "the query's x token"),  # type: ignore[index]
    "y_query": Target(lambda t, b: b.examples[:, -1, 1], "classification", "the query's y token"),  # type: ignore[index]
    "ax": Target(lambda t, b: b.params["a"] * b.examples[:, -1, 0] % t.p, "classification", "a·x mod p at the query"),  # type: ignore[index, attr-defined]
    "by": Target(lambda t, b: b.params["b"] * b.examples[:, -1, 1] % t.p, "classification", "b·y mod p at the query"),  # type: ignore[index, attr-defined]
}
TARGETS: dict[str, dict[str, Target]] = {
    "linear": {
        "w": Target(_param("w"), "regression", "the weight vector w"),
        "w_ls": Target(_w_ls, "regression", "least-squares estimate of w from the examples before the query"),
        "ls_pred": Target(_ls_pred, "regression", "least-squares prediction at the query"),
        **QUERY,
    },
    "polynomial": {
        "coefs": Target(_param("coefs"), "regression", "the polynomial coefficients"),
        "degree": Target(_param("degree"), "classification", "the polynomial degree"),
        "ls_pred": Target(_poly_ls_pred, "regression", "least squares at the true degree, predicted at the query"),
        **QUERY,
    },
    "kernel": {"gp_mean": Target(_gp_mean, "regression", "GP posterior mean at the query"), **QUERY},
    "complex-zeros": {"root": Target(_y_query, "regression", "the root nearest the query point"),
                      "x_query": QUERY["x_query"]},
    "modular": MODULAR,
}
"""Named probe targets per task name: users may add their own, or pass a callable."""


# --- arguments -----------------------------------------------------------------------------------------


def _resolve_target(task: TaskBase, target: str | Callable[[Batch], Tensor], kind: TargetKind | None
                    ) -> tuple[str, Callable[[Batch], Tensor], TargetKind | None]:
    if callable(target):
        return getattr(target, "__name__", "custom"), target, kind
    known = TARGETS.get(task.name, {})
    if target not in known:
        raise ValueError(f"target {target!r} is not defined for task {task.name!r}; choose from "
                         f"{', '.join(known) or 'none'} or pass a callable batch -> [batch, ...]")
    spec = known[target]
    return target, lambda batch: spec.fn(task, batch), kind or spec.kind


def _hooks(model: Model, hook: str | Sequence[str] | None) -> tuple[str, list[str], list[str]]:
    """(axis name, hook names, tick labels): all resid_post layers by default."""
    if hook is None:
        hooks = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
        return "layer", hooks, [str(l) for l in range(model.cfg.n_layers)]
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


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-12] = 1.0
    return (train - mean) / std, (test - mean) / std


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Held-out R² (around the test mean, as sklearn), averaged over components that vary on the test set."""
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    keep = ss_tot > 1e-12 * max(1.0, float(ss_tot.max(initial=0.0)))
    if not keep.any():
        return float("nan")
    ss_res = ((y_true - y_pred.reshape(y_true.shape)) ** 2).sum(0)
    return float(np.mean(1 - ss_res[keep] / ss_tot[keep]))


def _fit(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, kind: TargetKind) -> tuple[float, float]:
    """(held-out score, train score) of one probe: R² for regression, accuracy (mean over components) for classes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, RidgeCV

    x_tr, x_te = _standardise(x_tr, x_te)
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


def probe(
    model: Model,
    task: TaskBase,
    target: str | Callable[[Batch], Tensor],
    hook: str | Sequence[str] | None = None,
    positions: int | str | Sequence[int | str] | None = None,
    n: int = 512,
    generator: torch.Generator | None = None,
    n_examples: int | None = None,
    test_fraction: float = 0.25,
    kind: TargetKind | None = None,
) -> Result:
    """Held-out linear-probe score of ``target`` from ``hook`` activations: Result over ("layer", "pos").

    target: a name in ``TARGETS[task.name]`` or a callable batch -> [batch, ...] (float: ridge, R²; integer:
    logistic per component, accuracy; ``kind`` overrides). hook: None (every blocks.{l}.hook_resid_post, axis
    "layer") or one or more hook names (axis "hook"). positions: None (all), ints, labels ("y0") or "query".
    scores [layer|hook, pos]: held-out R² or accuracy. Extras: control [same] (shuffled training labels),
    train [same] (train-set score). Metadata: metric, chance, n_train, n_test, target, hooks, positions."""
    if kind not in (None, "regression", "classification"):
        raise ValueError(f"kind must be 'regression', 'classification' or None, got {kind!r}")
    if n < 8:
        raise ValueError(f"n must be at least 8, got {n}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
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
    }
    return Result(kind="probe", scores=scores, axes=(axis, "pos"),
                  labels={axis: ticks, "pos": [batch.pos_labels[p] if batch.pos_labels else str(p) for p in pos]},
                  extras={"control": control, "train": train}, metadata=metadata)
