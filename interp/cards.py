"""The measurements that model cards report, each a function of a checkpoint and a seed.

``scripts/zoo_cards.py`` writes them into ``models/<name>/CARD.md`` and ``card.json``; ``tests/test_zoo.py``
recomputes each card's headline with ``measure`` and checks it against the card.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .checkpoint import Checkpoint
from .api import evaluate, saturation
from .evaluate import EvalResult
from .tasks import PolynomialTask, TaskBase

KX_SLOPES: tuple[float, ...] = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
"""Slopes k of f(x) = k·x for the card's table of predictions; U(-5, 5) training reaches |f| <= 30 = 5·5 + 5."""
BOUNDARY_KEYS: tuple[str, ...] = (
    "field", "range_minus", "range_plus", "boundary_minus", "boundary_plus", "turn_minus", "turn_plus",
    "fallback_minus", "fallback_plus", "saturated", "note")
"""What a card reports of ``interp.saturation``'s metadata (the boundary values, probes/saturation.py)."""


def last_shot(ckpt: Checkpoint, split: str, n: int = 512, seed: int = 0, metric: str | None = None) -> float:
    """The model's metric at the last in-context example on ``split`` of ``ckpt.task.eval_splits()``: squared
    error / d for regression (or ``metric``, see ``interp.evaluate.metric_of``), exact-match accuracy for modular
    arithmetic. It is the last point of ``interp.evaluate(ckpt, n, seed)``'s model curve on that split."""
    return evaluate(ckpt, n=n, seed=seed, baselines=False, metric=metric).curve(split, "model").mean[-1]


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


def boundary(ckpt: Checkpoint, n: int = 512, seed: int = 0) -> dict[str, Any]:
    """The signed boundary values B+ / B− with the training range and the fall-back slopes (``BOUNDARY_KEYS``),
    plus the median curve (bin_target, bin_prediction): ``interp.saturation(ckpt, n=n, seed=seed)`` on its
    default sweep, the numbers ``interp saturation --ckpt <path> --n <n> --seed <seed>`` prints."""
    r = saturation(ckpt, n=n, seed=seed)
    return {k: r.metadata[k] for k in BOUNDARY_KEYS} | {
        "n": n, "seed": seed, "scales": [float(s) for s in r.ticks("scale")],
        "bin_target": r.extras["bin_target"].tolist(), "bin_prediction": r.extras["bin_prediction"].tolist()}


def boundary_rows(b: dict[str, Any]) -> list[dict[str, Any]]:
    """A card's boundary table from ``boundary``: one row per side (R, B, where the prediction turns, fall-back)."""
    return [{"side": side, "training range edge R": b[f"range_{key}"], "B": b[f"boundary_{key}"],
             "turns at target": b[f"turn_{key}"], "fall-back slope beyond R": b[f"fallback_{key}"]}
            for side, key in (("+ (above)", "plus"), ("− (below)", "minus"))]


def kx_sweep(ckpt: Checkpoint, slopes: Sequence[float] = KX_SLOPES, n: int = 256, seed: int = 0) -> dict[str, Any]:
    """Predictions on f(x) = k·x (no intercept) for growing k, with the context drawn as in training.

    Returns per slope the 0.99 quantile of |target| and of |prediction| at the query, and their means where
    the target is positive: a table to look at. The boundary values are ``boundary``'s, not read from it."""
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
    return rows


HEADLINES: dict[str, tuple[str, Callable[[Checkpoint, int, int], float]]] = {
    "id_error_last": ("ID squared error / d at the last shot", lambda c, n, s: last_shot(c, "id", n, s)),
    "boundary_plus": ("boundary value B+ (highest median prediction once the target leaves the training range; "
                      "interp saturation, default sweep)", lambda c, n, s: saturation(c, n=n, seed=s).metadata["boundary_plus"]),
    "ood_acc_last_shot": ("OOD accuracy at the last shot (held-out (a, b), held-out pairs)",
                          lambda c, n, s: last_shot(c, "ood_test" if "ood_test" in c.task.eval_splits() else "ood", n, s)),
    "ood_regression_acc_last": ("OOD accuracy on regression-only queries, last quarter of the shots (held-out (a, b), "
                                "held-out pairs; averaged per task)", lambda c, n, s: ood_regression_last(c, n, s)),
    "query_mse": ("raw squared error at the query, fresh sequences (Cheng et al.'s number)",
                  lambda c, n, s: query_mse(c, n, s)["mse"]),
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


CHENG_N, CHENG_SEED = 30_000, 777  # Cheng et al. evaluate on 30,000 fresh sequences; this seed is no training seed's


def mean_ci(values: Tensor) -> tuple[float, float]:
    """The mean of ``values`` [n] and the half-width of its 95% confidence interval (1.96 standard errors)."""
    return values.mean().item(), 1.96 * (values.std() / math.sqrt(values.numel())).item()


def query_batch(ckpt: Checkpoint, n: int = CHENG_N, seed: int = CHENG_SEED):  # noqa: ANN201 (a tasks.Batch)
    """``n`` fresh sequences of the checkpoint's task at its training number of context points, drawn from ``seed``:
    two checkpoints of the same task get the same sequences."""
    return ckpt.task.sample(n, int(ckpt.train["n_examples"]), torch.Generator().manual_seed(seed))  # type: ignore[attr-defined]


def query_errors(ckpt: Checkpoint, batch) -> Tensor:  # noqa: ANN001 (a tasks.Batch from query_batch)
    """The model's squared error at the query on each sequence of ``batch``: [n], float64."""
    with torch.no_grad():
        pred = ckpt.model.eval()(batch.inputs)[:, -1, 0].double()
    return (pred - batch.targets[:, -1, 0].double()).pow(2)


def query_mse(ckpt: Checkpoint, n: int = CHENG_N, seed: int = CHENG_SEED) -> dict[str, float]:
    """Cheng et al.'s number: the raw squared error at the query, averaged over ``n`` fresh sequences of the
    checkpoint's task (``query_batch``), beside the Bayes-optimal predictor's (the GP posterior mean,
    ``interp.baselines.kernel_regression``) on the same sequences. Each with the half-width of its 95% confidence
    interval over sequences (``*_ci``)."""
    from .baselines import kernel_regression

    batch = query_batch(ckpt, n, seed)
    xs, target = batch.examples, batch.targets[:, -1, 0].double()
    bayes = kernel_regression(xs[:, :-1], batch.inputs[:, :-1, -1:], xs[:, -1], ckpt.task.kernel)[:, 0].double()  # type: ignore[attr-defined]
    out: dict[str, float] = {"n": n, "seed": seed}
    for name, sq in (("mse", query_errors(ckpt, batch)), ("bayes", (bayes - target).pow(2))):
        out[name], out[f"{name}_ci"] = mean_ci(sq)
    return out


def paired_gap(a: Checkpoint, b: Checkpoint, n: int = CHENG_N, seed: int = CHENG_SEED) -> dict[str, float]:
    """How much lower ``a``'s squared error at the query is than ``b``'s, on the same ``n`` fresh sequences (two
    checkpoints of one task): the mean of b's error minus a's per sequence (positive: a is better) and the half-width
    of its 95% confidence interval. Paired, so the noise the two share cancels."""
    if a.task.to_dict() != b.task.to_dict() or a.train["n_examples"] != b.train["n_examples"]:  # type: ignore[attr-defined]
        raise ValueError("paired_gap needs two checkpoints of the same task and number of context points")
    batch = query_batch(a, n, seed)
    diff = query_errors(b, batch) - query_errors(a, batch)
    gap, gap_ci = mean_ci(diff)
    return {"gap": gap, "gap_ci": gap_ci, "n": n, "seed": seed}
