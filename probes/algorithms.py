"""Algorithm maps (He et al. 2024, Fig. 5): which in-context algorithm explains the model's answers.

For k shots and a fixed context, every query (x, y) of the p × p grid is marked three ways:

- **correct**: the model's arg-max at the query is z = a·x + b·y mod p;
- **ratio matching**: (x, y) = c·(x_i, y_i) mod p for one earlier example i and some c ∈ Z_p, answered c·z_i;
- **modular regression**: (x, y) is a linear combination mod p of the earlier examples, answered with the
  same combination of their z_i. For p prime these are exactly the queries the context determines.

Every ratio-matching query is also a regression query (one example, one coefficient). The shares report
how many of the model's correct answers each algorithm explains, per k.
"""
from __future__ import annotations

from typing import Any, Sequence

import einops
import numpy as np
import torch
from torch import Tensor

from interp.results import Result
from interp.tasks import ModularTask
from probes.grid import (
    Context,
    check_modular,
    check_token_model,
    grid_answers,
    max_context,
    query_grid,
    resolve_context,
    run_grid,
)
from probes.settings import AlgorithmsSettings

SUMMARIES = ("accuracy", "ratio_share", "regression_share", "ratio_coverage", "regression_coverage",
             "ratio_accuracy", "regression_accuracy", "other_accuracy")


def _grid_result(kind: str, covered: Tensor, answer: Tensor, p: int, context: Context, extras: dict[str, Tensor]) -> Result:
    ticks = [str(r) for r in range(p)]
    return Result(kind, covered.float(), ("x", "y"), labels={"x": ticks, "y": ticks},
                  extras={"answer": answer, **extras},
                  metadata={"p": p, "context": context.to_dict(), "n_covered": int(covered.sum()), "title": kind.replace("_", " ")})


def ratio_matching(context: Context, p: int) -> Result:
    """Queries that are a multiple of one earlier example: scores [x, y] 1.0 where (x, y) = c·(x_i, y_i) mod p
    for some example i and c ∈ Z_p (c = 0 included, so the origin counts once there is an example).
    extras: answer [x, y] long, c·z_i (-1 elsewhere); source [x, y] long, the first such i (-1 elsewhere)."""
    covered = torch.zeros(p, p, dtype=torch.bool)
    answer = torch.full((p, p), -1, dtype=torch.long)
    source = torch.full((p, p), -1, dtype=torch.long)
    c = torch.arange(p)
    z = context.answers(p)
    # walk the examples backwards so that the first matching example is the one left in ``source``
    for i in reversed(range(context.n_examples)):
        xi, yi = context.examples[i].tolist()
        qx, qy = c * xi % p, c * yi % p
        covered[qx, qy] = True
        answer[qx, qy] = c * z[i] % p  # repeated cells (c·v = c'·v) get the same answer: z is linear
        source[qx, qy] = i
    return _grid_result("ratio_matching", covered, answer, p, context, {"source": source})


def modular_regression(context: Context, p: int) -> Result:
    """Queries in the span mod p of the earlier examples: scores [x, y] 1.0 where (x, y) = Σ c_i·(x_i, y_i) mod p
    for some c ∈ Z_p^n (the origin always counts). extras: answer [x, y] long, Σ c_i·z_i (-1 elsewhere).

    The span grows one example at a time: reach ← ∪_c (reach + c·(x_i, y_i)), a shift of the p × p grid.
    This needs no division, so it is exact for any p (the Z_p-module span)."""
    reach = torch.zeros(p, p, dtype=torch.bool)
    reach[0, 0] = True
    answer = torch.full((p, p), -1, dtype=torch.long)
    answer[0, 0] = 0
    z = context.answers(p)
    for i in range(context.n_examples):
        xi, yi = context.examples[i].tolist()
        new_reach, new_answer = reach.clone(), answer.clone()
        for c in range(1, p):
            shifted = torch.roll(reach, shifts=(c * xi % p, c * yi % p), dims=(0, 1))
            moved = (torch.roll(answer, shifts=(c * xi % p, c * yi % p), dims=(0, 1)) + c * z[i]) % p
            new_answer = torch.where(shifted & ~new_reach, moved, new_answer)
            new_reach |= shifted
        reach, answer = new_reach, new_answer
    return _grid_result("modular_regression", reach, answer, p, context, {})


def _share(part: Tensor, whole: Tensor) -> float:
    """|part| / |whole| for bool masks, NaN when ``whole`` is empty (a share of nothing is undefined)."""
    n = int(whole.sum())
    return float((part & whole).sum()) / n if n else float("nan")


def compare_algorithms(predictions: Tensor, context: Context, p: int, shots: Sequence[int]) -> Result:
    """Maps for given answers: predictions [shots, x, y] long, made with the first ``shots[s]`` examples of
    ``context`` -> Result with axes ("shots", "x", "y"): scores 1.0 where correct; extras ratio, regression
    [shots, x, y] (1.0 where that algorithm predicts the query), prediction [shots, x, y], answer [x, y], and per
    shot count [shots]: accuracy; ratio_share, regression_share (share of the correct answers inside each
    algorithm's set); ratio_coverage, regression_coverage (share of the grid in each set); ratio_accuracy,
    regression_accuracy, other_accuracy (accuracy inside each set and outside the regression set)."""
    shots = [int(k) for k in shots]
    if predictions.shape != (len(shots), p, p):
        raise ValueError(f"predictions must be [{len(shots)}, {p}, {p}] (shots, x, y), got {tuple(predictions.shape)}")
    if shots and (min(shots) < 0 or max(shots) > context.n_examples):
        raise ValueError(f"shots must be in [0, {context.n_examples}] (the context's examples), got {shots}")
    answer = grid_answers(p, context)
    correct = predictions == answer
    ratio = torch.stack([ratio_matching(context.prefix(k), p).scores.bool() for k in shots])
    regression = torch.stack([modular_regression(context.prefix(k), p).scores.bool() for k in shots])
    summary: dict[str, list[float]] = {name: [] for name in SUMMARIES}
    everything = torch.ones(p, p, dtype=torch.bool)
    for s in range(len(shots)):
        ok, rat, reg = correct[s], ratio[s], regression[s]
        summary["accuracy"].append(_share(ok, everything))
        summary["ratio_share"].append(_share(rat, ok))
        summary["regression_share"].append(_share(reg, ok))
        summary["ratio_coverage"].append(_share(rat, everything))
        summary["regression_coverage"].append(_share(reg, everything))
        summary["ratio_accuracy"].append(_share(ok, rat))
        summary["regression_accuracy"].append(_share(ok, reg))
        summary["other_accuracy"].append(_share(ok, ~reg))
    ticks = [str(r) for r in range(p)]
    return Result("algorithm_map", correct.float(), ("shots", "x", "y"),
                  labels={"shots": [str(k) for k in shots], "x": ticks, "y": ticks},
                  extras={"ratio": ratio.float(), "regression": regression.float(), "prediction": predictions.long(),
                          "answer": answer} | {name: torch.tensor(v) for name, v in summary.items()},
                  metadata={"p": p, "shots": shots, "context": context.to_dict(),
                            "value_name": "correct", "title": "algorithm map: correct at the query",
                            "print_extras": ["accuracy", "ratio_share", "regression_share"]})


def algorithm_map(model: Any, task: ModularTask, settings: AlgorithmsSettings | None = None, *,
                  context: Context | None = None, generator: torch.Generator | None = None, **fields: Any) -> Result:
    """The model's answers over the p² queries after the first k examples of one fixed context, for each k in
    ``settings.shots`` (default 1, 2, half and all of what the model reads), marked against ratio matching and
    modular regression: see ``compare_algorithms``. The context defaults to ``settings.n_context`` (None:
    max(shots)) examples sampled from ``generator``; ``AlgorithmsSettings`` or its fields by name."""
    s = AlgorithmsSettings.resolve(settings, fields)
    task = check_modular(task)
    check_token_model(model, task)
    p, most = task.p, max_context(model)
    if most < 1:
        raise ValueError(f"model n_ctx={model.cfg.n_ctx} holds no example before the query")
    shots = s.shots
    if shots is None:
        shots = sorted({k for k in (1, 2, most // 2, most) if 1 <= k <= most})
    shots = list(shots)
    if not shots or any(not isinstance(k, (int, np.integer)) or not 0 <= k <= most for k in shots):
        raise ValueError(f"shots must be a non-empty list of ints in [0, {most}] for this model, got {shots}")
    shots = [int(k) for k in shots]
    context = context if context is not None else s.n_context
    ctx = resolve_context(task, context, most, generator, n_min=max(shots)) if context is not None else \
        resolve_context(task, max(shots), most, generator)
    predictions = []
    for k in shots:
        batch = query_grid(task, ctx.prefix(k))
        logits, _ = run_grid(model, batch.inputs, batch.query_pos, batch_size=s.batch_size)
        predictions.append(einops.rearrange(logits.argmax(-1), "(x y) -> x y", x=p))
    result = compare_algorithms(torch.stack(predictions), ctx, p, shots)
    result.metadata["n_ctx"] = model.cfg.n_ctx
    return result


def figure_map(result: Result):
    """He et al. Fig. 5: one panel per shot count, each query coloured by correct / wrong × ratio-matching or not."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shots = result.ticks("shots")
    category = result.scores * 2 + result.extras["ratio"]  # 0 wrong, 1 wrong but ratio, 2 correct, 3 correct by ratio
    names = ["wrong", "wrong, ratio-predictable", "correct, not ratio", "correct, ratio"]
    colors = ["#d9d9d9", "#fdae61", "#2c7bb6", "#1a9641"]
    scale = [[v, colors[int(i)]] for i in range(4) for v in (i / 4, (i + 1) / 4)]
    share = result.extras["ratio_share"]
    fig = make_subplots(rows=1, cols=len(shots), subplot_titles=[
        f"k={k}: acc {float(result.extras['accuracy'][i]):.0%}, ratio {float(share[i]):.0%}" for i, k in enumerate(shots)])
    for i in range(len(shots)):
        fig.add_trace(go.Heatmap(z=category[i].tolist(), x=result.ticks("y"), y=result.ticks("x"), zmin=0, zmax=4,
                                 colorscale=scale, showscale=i == 0,
                                 colorbar={"tickvals": [0.5, 1.5, 2.5, 3.5], "ticktext": names}),
                      row=1, col=i + 1)
        fig.update_xaxes(title_text="y", row=1, col=i + 1)
    fig.update_yaxes(title_text="x", row=1, col=1)
    fig.update_layout(title=result.metadata.get("title", "algorithm map"))
    return fig
