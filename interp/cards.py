"""The measurements that model cards report, each a function of a checkpoint and a seed.

``scripts/zoo_cards.py`` writes them into ``models/<name>/CARD.md`` and ``card.json``; ``tests/test_zoo.py``
recomputes each card's headline with ``measure`` and checks it against the card.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .checkpoint import Checkpoint
from .api import evaluate
from .evaluate import EvalResult
from .tasks import PolynomialTask, TaskBase

KX_SLOPES: tuple[float, ...] = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
"""Slopes k of f(x) = k·x for the boundary-value sweep; U(-5, 5) training reaches |f| <= 30 = 5·5 + 5."""


def last_shot(ckpt: Checkpoint, split: str, n: int = 512, seed: int = 0) -> float:
    """The model's metric at the last in-context example on ``split`` of ``ckpt.task.eval_splits()``: the
    normalised squared error for regression, exact-match accuracy for modular arithmetic. It is the last point
    of ``interp.evaluate(ckpt, n, seed)``'s model curve on that split."""
    return evaluate(ckpt, n=n, seed=seed, baselines=False).curve(split, "model").mean[-1]


def ood_regression_last(ckpt: Checkpoint, n: int = 512, seed: int = 0) -> float:
    """The model's accuracy on regression-only queries (``interp.query_kinds``) of OOD tasks × held-out pairs in
    the last-shot region, averaged per task (a, b) then over tasks: the number that separates modular regression
    from copying and ratio matching. NaN when the set holds no such query."""
    return evaluate(ckpt, n=n, seed=seed, baselines=False).kind_curve("ood_test", "regression").last


def kind_rows(result: EvalResult, method: str = "model") -> list[dict[str, Any]]:
    """A modular card's table from ``interp.evaluate``: per split and group of queries (every query, copyable,
    ratio-matchable, regression-only) the accuracy over all shots and in the last-shot region, averaged per task
    then over tasks, with the region's number of queries (NaN accuracy: none)."""
    return [{"split": c.split, "queries": c.kind, "all shots": c.overall,
             f"shots {c.last_shots[0]}-{c.last_shots[-1]}": c.last, "n there": c.n_last}
            for c in result.by_kind if c.method == method]


def kx_sweep(ckpt: Checkpoint, slopes: Sequence[float] = KX_SLOPES, n: int = 256, seed: int = 0) -> dict[str, Any]:
    """Predictions on f(x) = k·x (no intercept) for growing k, with the context drawn as in training.

    Returns per slope the 0.99 quantile of |target| and of |prediction| at the query, and their means where
    the target is positive. The boundary value B is the largest |prediction| quantile over the slopes: a model
    that extrapolates follows |target| (B grows with the largest slope), a saturated one plateaus at B."""
    task = ckpt.task
    if not isinstance(task, PolynomialTask) or task.max_degree < 1:
        raise ValueError(f"kx_sweep needs a polynomial task of degree >= 1, got {task.describe()}")
    g = torch.Generator().manual_seed(seed)
    examples = task.sample_examples(n, int(ckpt.train["n_examples"]), g)
    rows: dict[str, list[float]] = {"k": [], "target_q99": [], "pred_q99": [], "target_pos_mean": [], "pred_pos_mean": []}
    for k in slopes:
        coefs = torch.zeros(n, task.max_degree + 1)
        coefs[:, 1] = k
        batch = task.assemble(examples, {"coefs": coefs, "degree": torch.ones(n, dtype=torch.long)})
        with torch.no_grad():
            pred = ckpt.model.eval()(batch.inputs)[:, batch.query_pos, 0]
        target = batch.targets[:, batch.query_pos, 0]
        pos = target > 0
        rows["k"].append(float(k))
        rows["target_q99"].append(torch.quantile(target.abs(), 0.99).item())
        rows["pred_q99"].append(torch.quantile(pred.abs(), 0.99).item())
        rows["target_pos_mean"].append(target[pos].mean().item())
        rows["pred_pos_mean"].append(pred[pos].mean().item())
    return rows | {"boundary": max(rows["pred_q99"])}


HEADLINES: dict[str, tuple[str, Callable[[Checkpoint, int, int], float]]] = {
    "id_error_last": ("ID error at the last shot (squared error / zero predictor's)", lambda c, n, s: last_shot(c, "id", n, s)),
    "kx_boundary": ("boundary value B (largest 0.99 quantile of the prediction magnitude on f(x) = k·x, k ≤ 20)",
                    lambda c, n, s: kx_sweep(c, n=n, seed=s)["boundary"]),
    "ood_acc_last_shot": ("OOD accuracy at the last shot (held-out (a, b), held-out pairs)",
                          lambda c, n, s: last_shot(c, "ood_test" if "ood_test" in c.task.eval_splits() else "ood", n, s)),
    "ood_regression_acc_last": ("OOD accuracy on regression-only queries, last quarter of the shots (held-out (a, b), "
                                "held-out pairs; averaged per task)", lambda c, n, s: ood_regression_last(c, n, s)),
}


def measure(ckpt: Checkpoint, headline: str, n: int = 512, seed: int = 0) -> float:
    """The card headline ``headline`` (a key of HEADLINES) of ``ckpt`` on ``n`` sequences from ``seed``."""
    if headline not in HEADLINES:
        raise ValueError(f"unknown headline {headline!r}; known: {', '.join(HEADLINES)}")
    return HEADLINES[headline][1](ckpt, n, seed)


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """A card's table: one markdown line per row (header and rule first), floats to 3 significant digits."""
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *("| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows)]
