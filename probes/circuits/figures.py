"""Plotly figures of a circuit (``interp.results.FIGURES`` draws edge Results and faithfulness curves with them; the
dashboard's Circuit page shows all three).

The graph: one node per sender and receiver with the .q / .k / .v of a head's inputs dropped, in rows by stage
along the residual stream (``graph.Node.stage``: the embedding at the bottom, each layer's heads, then its MLP,
the read-out on top); a line per edge of the top-k circuit (the cells faithfulness keeps, ``ranked_cells``), its
width proportional to the edge's |effect| = |score - base score| and its colour the effect's sign. A q / k / v
edge ends left / centre / right below its head, and an edge that skips rows bends, so that edges which share
their nodes' column stay apart.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from interp.results import Result

from .circuit_runs import ranked_cells
from .graph import HEAD_INPUTS, Node

POSITIVE, NEGATIVE = "#2166ac", "#b2182b"  # effect towards the source run / away from it
INPUT_OFFSET = {"q": -0.15, "k": 0.0, "v": 0.15}  # where a head's q, k, v input lines end, left to right
NAME = re.compile(r"L(?P<layer>\d+)(?:H(?P<head>\d+)|\.mlp)")


def node(name: str, n_layers: int) -> Node:
    """The graph node a sender name or a receiver name without its input suffix stands for ("embed", "L0H1",
    "L0.mlp", "readout")."""
    if name == "embed":
        return Node(name, "embed", -1)
    if name == "readout":
        return Node(name, "readout", n_layers)
    m = NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"not a node of the circuit graph: {name!r}")
    head = m["head"]
    return Node(name, "head" if head is not None else "mlp", int(m["layer"]), None if head is None else int(head))


def split_receiver(name: str) -> tuple[str, str | None]:
    """("L1H0", "k") for "L1H0.k"; (name, None) for an MLP input or the read-out."""
    base, _, suffix = name.rpartition(".")
    return (base, suffix) if suffix in HEAD_INPUTS else (name, None)


def positions(senders: list[str], receivers: list[str]) -> dict[str, tuple[float, float]]:
    """(x, y) of every node: y the rank of its stage (rows with no node are skipped), x the head index centred
    on 0; the MLPs to the right of the heads, the embedding and the read-out at 0."""
    names = list(dict.fromkeys([*senders, *(split_receiver(r)[0] for r in receivers)]))
    n_layers = 1 + max((int(m["layer"]) for n in names if (m := NAME.fullmatch(n))), default=-1)
    nodes = [node(n, n_layers) for n in names]
    n_heads = 1 + max((n.head for n in nodes if n.head is not None), default=-1)
    rows = {stage: y for y, stage in enumerate(sorted({n.stage for n in nodes}))}
    centre = (n_heads - 1) / 2
    return {n.name: (n.head - centre if n.kind == "head" else (n_heads + 1) / 2 if n.kind == "mlp" else 0.0,
                     float(rows[n.stage])) for n in nodes}


def as_edges(result: Result) -> Result:
    """An edge Result as it is ([edge] or [edge, pos]); a [sender, receiver] matrix (``as_matrix``) back as [edge]."""
    if result.axes[0] == "edge":
        return result
    senders, receivers = result.metadata["senders"], result.metadata["receivers"]
    values = torch.tensor([result.scores[senders.index(s), receivers.index(r)].item()
                           for s, r in result.metadata["edges"]])
    return Result(result.kind, values, ("edge",), {"edge": [f"{s} -> {r}" for s, r in result.metadata["edges"]]},
                  metadata=result.metadata)


def top_edges(result: Result, k: int) -> list[dict[str, Any]]:
    """The k cells with the largest effect, largest first (the circuit faithfulness keeps): one dict per cell with
    "cell" (its flat index), "edge" (its label), "sender", "receiver", "pos" (None unless positions "each"),
    "score" and "effect"."""
    result = as_edges(result)
    base = 0.0 if result.metadata.get("direction", "denoise") == "denoise" else 1.0
    edges, flat = result.metadata["edges"], result.scores.flatten().tolist()
    pos = result.ticks("pos") if "pos" in result.axes else None
    out = []
    for i in ranked_cells(result)[:k].tolist():
        e, p = (i // len(pos), pos[i % len(pos)]) if pos else (i, None)
        sender, receiver = edges[e]
        score = flat[i]
        out.append({"cell": i, "edge": f"{sender} -> {receiver}" + (f" @ {p}" if p else ""), "sender": sender,
                    "receiver": receiver, "pos": p, "score": score,
                    "effect": 0.0 if math.isnan(score) else score - base})
    return out


def default_k(result: Result) -> int:
    from probes.settings import CircuitSettings

    return result.metadata.get("top", CircuitSettings().top)


def graph_figure(result: Result, k: int | None = None):
    """The circuit of the top ``k`` cells of an edge Result (default: ``top``) as a graph: nodes by layer, a line
    per edge, width ∝ |score - base score|, blue where the effect is positive and red where negative."""
    import plotly.graph_objects as go

    k = default_k(result) if k is None else k
    senders, receivers = result.metadata["senders"], result.metadata["receivers"]
    xy = positions(senders, receivers)
    cells = top_edges(result, k)
    biggest = max((abs(c["effect"]) for c in cells), default=0.0) or 1.0
    fig = go.Figure()
    for c in cells:
        (x0, y0), (target, kind) = xy[c["sender"]], split_receiver(c["receiver"])
        x1, y1 = xy[target]
        if kind is not None:  # enter the head from below, q / k / v side by side
            x1, y1 = x1 + INPUT_OFFSET[kind], y1 - 0.12
        # a quadratic Bezier bending sideways by how many rows the edge skips
        bend = 0.25 * max(0.0, abs(y1 - y0) - 1)
        xm, ym = (x0 + x1) / 2 + bend, (y0 + y1) / 2
        ts = [i / 8 for i in range(9)]
        fig.add_trace(go.Scatter(
            x=[(1 - t) ** 2 * x0 + 2 * t * (1 - t) * xm + t ** 2 * x1 for t in ts],
            y=[(1 - t) ** 2 * y0 + 2 * t * (1 - t) * ym + t ** 2 * y1 for t in ts], mode="lines", name=c["edge"],
            showlegend=False, line={"width": 1 + 7 * abs(c["effect"]) / biggest,
                                    "color": POSITIVE if c["effect"] >= 0 else NEGATIVE},
            hovertemplate=f"{c['edge']}<br>score {c['score']:.4g}<extra></extra>"))
    names = list(xy)
    fig.add_trace(go.Scatter(
        x=[xy[n][0] for n in names], y=[xy[n][1] for n in names], mode="markers+text", text=[f"  {n}" for n in names], hovertext=names,
        textposition="middle right", name="nodes", showlegend=False, hoverinfo="text",
        marker={"size": 16, "color": "white", "line": {"width": 2, "color": "#444"}}))
    xs, ys = [x for x, _ in xy.values()], [y for _, y in xy.values()]
    fig.update_layout(title=f"circuit graph: top {len(cells)} edges ({result.metadata.get('method', '')})",
                      height=max(380, 110 * (1 + max(ys))), hovermode="closest", plot_bgcolor="white")
    fig.update_xaxes(visible=False, range=[min(xs) - 0.6, max(xs) + 1.2])  # room for the labels on the right
    fig.update_yaxes(visible=False, range=[-0.6, max(ys) + 0.6])
    fig.add_annotation(text="edges run upwards; blue: positive effect, red: negative; width ∝ |score − base score|", showarrow=False,
                       xref="paper", yref="paper", x=0, y=1.0, xanchor="left", font={"size": 11})
    return fig


def faithfulness_figure(result: Result, k: int | None = None):
    """Faithfulness and completeness of the top-k circuits against k, with ``k`` (default: ``top``) marked."""
    import plotly.graph_objects as go

    k = default_k(result) if k is None else k
    ks = [int(t) for t in result.ticks("k")]
    fig = go.Figure()
    for name, values in (("faithfulness", result.scores), ("completeness", result.extras.get("completeness"))):
        if values is not None:
            fig.add_trace(go.Scatter(x=ks, y=values.tolist(), mode="lines+markers", name=name))
    fig.add_vline(x=k, line_dash="dot", line_color="grey", annotation_text=f"k = {k}")
    fig.update_layout(title=f"faithfulness of the top-k circuit ({result.metadata.get('ablation', '')} ablation)",
                      xaxis_title="k (edges in the circuit)", yaxis_title=result.metadata.get("scale", "faithfulness"),
                      height=380, legend={"orientation": "h", "y": -0.2})
    return fig


def estimate_figure(estimate: Result, exact: Result):
    """An estimate (EAP, EAP-IG) against exact edge patching, one point per cell, with y = x."""
    import plotly.graph_objects as go

    est, ex = as_edges(estimate), as_edges(exact)
    labels = est.ticks("edge") if est.axes == ("edge",) else [
        f"{e} @ {p}" for e in est.ticks("edge") for p in est.ticks("pos")]
    xs, ys = ex.scores.flatten().tolist(), est.scores.flatten().tolist()
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", text=labels, marker={"size": 7},
                               hovertemplate="%{text}<br>exact %{x:.4g}<br>estimate %{y:.4g}<extra></extra>"))
    finite = [v for v in xs + ys if not math.isnan(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dot", "color": "grey"},
                                 name="y = x", hoverinfo="skip"))
    fig.update_layout(title=f"{estimate.metadata.get('method', 'estimate')} estimate against exact edge patching",
                      xaxis_title="exact edge patching", yaxis_title="estimate", showlegend=False, height=420)
    return fig
