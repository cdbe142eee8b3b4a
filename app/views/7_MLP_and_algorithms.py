"""MLP and algorithms (modular models): PCA of MLP activations and of head features over the (x, y) grid (circle
of circles), the Fourier spectrum and its key frequencies, circularity scores, neuron clusters, and the algorithm
map: per shot count, which queries the model gets right and what ratio matching and modular regression explain."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from common import current, has_mlp, heatmap, persistent, probe, setting
from interp.api import AlgorithmsSettings, GeometrySettings, MlpSettings

page = current()
ckpt, seed = page.ckpt, page.seed
if ckpt.task.name != "modular":
    st.info(f"MLP Fourier analysis, head geometry and algorithm maps are defined over the (x, y) grid of modular "
            f"arithmetic; this model's task is {ckpt.task.name}.")
    st.stop()
from interp.results import tick_label
from interp.api import figure_pca

with st.sidebar:
    st.header("Representations")
    # one layer for the MLP and the head geometry
    layer = setting(MlpSettings, "layer", "mlp_layer", options=range(ckpt.spec.n_layers))
    color = persistent(st.radio, "colour points by", "mlp_color", "x", options=["x", "y", "z"], horizontal=True)
    head = setting(GeometrySettings, "head", "geo_head", options=range(ckpt.spec.n_heads))

st.subheader(f"MLP of layer {layer}")
if not has_mlp(ckpt):
    st.info("This model is attention-only: it has no MLP to analyse. Head geometry and algorithm maps are below.")
else:
    res = probe("mlp", ckpt, "Fourier and PCA analysis over the (x, y) grid…", MlpSettings(layer=layer, seed=seed))
    if res is not None:
        freqs = res.frequencies
        key = freqs.metadata.get("key_frequencies", [])
        left, right = st.columns(2)
        left.plotly_chart(freqs.figure(title="Fourier spectrum of W_E (norm per frequency)"), key="fourier")
        left.caption(f"key frequencies: {', '.join(map(str, key)) or 'none'}")
        pca_name = right.radio("PCA of", ["mlp_post", "resid_post", "W_E"], horizontal=True, key="pca_of")
        pca = getattr(res.pca, pca_name)
        c = color if pca.extras["projection"].dim() == 3 else "x"
        right.plotly_chart(figure_pca(pca, color=c), key="pca")
        circ = res.circularity
        left, right = st.columns(2)
        left.plotly_chart(heatmap(circ.scores.tolist(), circ.ticks("residue"), circ.ticks("activation"),
                                  "circularity of the class means", "residue", "activation", zmid=None,
                                  colorscale="Viridis"), key="circularity")
        best = circ.metadata.get("best_frequency", {})
        if best:
            left.caption("best frequency: " + ", ".join(f"{k}: {v}" for k, v in best.items()))
        neurons = res.neurons
        sizes = neurons.extras["cluster_size"].tolist()
        fig = go.Figure(go.Bar(x=[str(k) for k in range(1, len(sizes) + 1)], y=sizes))
        fig.update_layout(title=f"neuron clusters by top frequency (fraction ≥ {neurons.metadata.get('min_fraction')})",
                          xaxis_title="frequency k", yaxis_title="neurons")
        right.plotly_chart(fig, key="clusters")
        n_neurons = neurons.scores.shape[0]
        n_clustered = int((neurons.extras["cluster"] >= 0).sum())
        right.caption(f"{n_clustered} of {n_neurons} neurons are in a frequency cluster")
        clusters = neurons.metadata.get("clusters") or {}
        if clusters:
            right.dataframe(pd.DataFrame({"frequency": list(clusters), "neurons": [len(v) for v in clusters.values()],
                                          "members": [", ".join(map(str, v[:24])) + (" …" if len(v) > 24 else "")
                                                      for v in clusters.values()]}), hide_index=True)
        loss = res.loss
        st.dataframe(loss.to_frame(), hide_index=True)

st.subheader(f"Head features: {tick_label(layer, head)}")
geo = probe("geometry", ckpt, "Head geometry over the (x, y) grid…",
            GeometrySettings(layer=layer, head=head, seed=seed))
if geo is not None:
    left, right = st.columns([2, 1])
    left.plotly_chart(figure_pca(geo, color=color), key="head_pca")
    right.dataframe(geo.to_frame(), hide_index=True)

st.subheader("Algorithm map")
alg = probe("algorithms", ckpt, "Algorithm maps…", AlgorithmsSettings(seed=seed))
if alg is not None:
    st.plotly_chart(alg.figure(), key="algorithm_map")
    from interp.api import SUMMARIES

    table = pd.DataFrame({"shots": alg.metadata["shots"],
                          **{k: alg.extras[k].tolist() for k in SUMMARIES if k in alg.extras}})
    st.dataframe(table, hide_index=True)
    st.caption("ratio_share / regression_share: share of the model's correct answers that ratio matching / "
               "modular regression explain; coverage: share of the grid each algorithm can answer.")
