"""Heads: direct attribution, ablation and attribution patching side by side (layer × head), and attribution
patching against exact activation patching of each head's output."""

from __future__ import annotations

import dataclasses

import plotly.graph_objects as go
import streamlit as st

from common import corruption_and_metric, current, heatmap, probe, setting
from interp.api import EXACT_FOR_ATTRIB, AttributeSettings, PatchSettings
from interp.results import tick_label

page = current()
ckpt, n, seed = page.ckpt, page.n, page.seed

with st.sidebar:
    st.header("Heads")
    corruption, metric = corruption_and_metric(ckpt, AttributeSettings)  # metric: ablation and attribution patching
    ablation = setting(AttributeSettings, "ablation", "ablation")

base = AttributeSettings(corruption=corruption, n=n, seed=seed)
dla = probe("attribute", ckpt, "Direct attribution…", dataclasses.replace(base, method="dla"))  # the task's metric
ablate = dataclasses.replace(base, method="ablate", ablation=ablation, metric=metric)
abl = probe("attribute", ckpt, "Ablating heads…", ablate)
attrib = dataclasses.replace(base, method="attrib", metric=metric, compare_exact=False)
att = probe("attribute", ckpt, "Attribution patching…", attrib)
cols = st.columns(3)
for col, (name, r) in zip(cols, (("direct attribution", dla), (f"{ablation} ablation", abl),
                                 ("attribution patching", att))):
    if r is None:
        continue
    fig = heatmap(r.scores.tolist(), r.ticks("head"), r.ticks("layer"), name, "head", "layer")
    col.plotly_chart(fig, key=f"heads_{name.split()[0]}")
    col.caption(f"metric: {r.metadata.get('metric')}")

if att is not None:
    site, by = EXACT_FOR_ATTRIB[attrib.site]  # the exact patching sweep that attribution patching estimates
    exact = probe("patch", ckpt, "Exact patching of every head…",
                  PatchSettings(site=site, by=by, corruption=corruption, metric=att.metadata.get("metric", metric),
                                direction=attrib.direction, n=n, seed=seed))
    if exact is not None:
        from interp.api import correlation

        st.subheader("Attribution patching against exact patching")
        corr = correlation(att, exact)
        labels = [tick_label(l, h) for l in range(att.scores.shape[0]) for h in range(att.scores.shape[1])]
        xs, ys = exact.extras["metric"].flatten().tolist(), att.scores.flatten().tolist()
        # exact patching's raw metric minus the corrupted run's: the quantity attribution patching estimates
        base = exact.metadata.get("corrupted_metric", 0.0)
        xs = [x - base for x in xs]
        fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers+text", text=labels, textposition="top center",
                                   marker={"size": 9}))
        lo, hi = min(xs + ys), max(xs + ys)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dot", "color": "grey"},
                                 name="y = x"))
        fig.update_layout(title=f"per head: Pearson {corr.get('pearson', float('nan')):.3f}, "
                                f"Spearman {corr.get('spearman', float('nan')):.3f}",
                          xaxis_title=f"exact patching: Δ {exact.metadata.get('metric')}",
                          yaxis_title="attribution patching estimate", showlegend=False, height=450)
        st.plotly_chart(fig, key="attrib_vs_exact")
