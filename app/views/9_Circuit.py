"""Circuit: edge-level circuits (probes.circuits via interp.circuit): the graph of the top-k edges, the faithfulness
and completeness of the top-k circuits against k, and for EAP / EAP-IG the estimate against exact edge patching."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from common import corruption_and_metric, current, probe, setting
from interp.api import CircuitSettings, estimate_figure, faithfulness_figure, graph_figure, top_edges

FRAME_FIELDS = ("n", "seed")  # the frame's sidebar sets these for every page
SHARED_FIELDS = ("corruption", "metric")  # corruption_and_metric: shared with the patching and heads pages

page = current()
ckpt = page.ckpt
with st.sidebar:
    st.header("Circuit")
    args: dict = {"n": page.n, "seed": page.seed}
    for f in dataclasses.fields(CircuitSettings):
        if f.name in FRAME_FIELDS or (f.name == "ig_steps" and args.get("method") != "eap-ig"):
            continue
        if f.name == "corruption":
            args["corruption"], args["metric"] = corruption_and_metric(ckpt, CircuitSettings)
        elif f.name not in SHARED_FIELDS:
            args[f.name] = setting(CircuitSettings, f.name, f"circuit_{f.name}")

found = probe("circuit", ckpt, f"{args['method']} edge scores and faithfulness over {page.n} sequences…",
              CircuitSettings(**args))
if found is not None:
    edges, curve = found.edges, found.faithfulness
    meta = edges.metadata
    n_cells = edges.scores.numel()
    top = min(args["top"], n_cells)
    # the slider starts at `top`, and again whenever `top` or the number of cells changes
    if "circuit_k" not in st.session_state or st.session_state.get("_circuit_k_top") != (top, n_cells):
        st.session_state["_circuit_k_top"] = (top, n_cells)
        st.session_state["circuit_k"] = top
    st.caption(f"{meta.get('metric')} · clean {meta.get('clean_metric', float('nan')):.4g} · corrupted "
               f"{meta.get('corrupted_metric', float('nan')):.4g} · {meta.get('scale', '')} · "
               f"{meta.get('n_sequences')} sequences · {len(meta['edges'])} edges"
               + (f" × {len(edges.ticks('pos'))} positions" if "pos" in edges.axes else ""))
    k = st.slider("k: the top edges shown", 0, n_cells, key="circuit_k",
                  help="the circuit of the k edges with the largest |score − base score| (faithfulness keeps the same)")
    left, right = st.columns([3, 2])
    left.plotly_chart(graph_figure(edges, k), key="circuit_graph")
    right.plotly_chart(faithfulness_figure(curve, k), key="circuit_faithfulness")
    if str(k) in curve.ticks("k"):
        i = curve.ticks("k").index(str(k))
        right.caption(f"top {k}: faithfulness {curve.scores[i].item():.3f}, completeness "
                      f"{curve.extras['completeness'][i].item():.3f}")
    rows = top_edges(edges, k)
    if found.exact is not None:
        corr = meta.get("exact_correlation", {})
        top_k = next((key.removeprefix("top").removesuffix("_recovered") for key in corr if key.endswith("_recovered")),
                     None)
        st.subheader("Estimate against exact edge patching")
        st.plotly_chart(estimate_figure(edges, found.exact), key="circuit_estimate")
        st.caption(f"Pearson {corr.get('pearson', float('nan')):.3f} · Spearman {corr.get('spearman', float('nan')):.3f}"
                   f" over {int(corr.get('n', 0))} cells"
                   + (f" · the estimate's top {top_k} hold {corr[f'top{top_k}_recovered']:.0%} of the exact top {top_k}"
                      if top_k else ""))
        exact = found.exact.scores.flatten().tolist()
        for row in rows:
            row["exact"] = exact[row["cell"]]
    if rows:
        table = pd.DataFrame(rows).drop(columns=["edge", "cell"] + ([] if "pos" in edges.axes else ["pos"]))
        table.insert(0, "rank", range(1, len(rows) + 1))
        st.dataframe(table, hide_index=True)
