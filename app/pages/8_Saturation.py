"""Saturation (regression models): attention entropy and maximum weight, layer-norm scale and the prediction
against input scale, training range marked; the same for zoo variants trained on the same task (with / without
LN, softmax / relu scoring, …) side by side, with the plateau B of each."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (  # noqa: E402
    describe, fingerprint, is_regression, load, persistent, probe, settings, sidebar, without_webgl, zoo_entries)  # noqa: E402

SCALES = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]  # kernel tasks cannot sample a GP much beyond 16x


def mechanism_figure(r, title: str) -> go.Figure:
    """Attention entropy, maximum weight (mean over heads, per layer) and LN scale at the query against scale."""
    meta = r.metadata
    scales = [float(s) for s in r.ticks("scale")]
    layers = meta["extra_labels"]["layer"]
    sites = meta["extra_labels"].get("site", [])
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("attention entropy", "max attention weight", "LN scale"))
    for row, name in ((1, "entropy"), (2, "max_weight")):
        values = r.extras[name].mean(-1)  # [scale, layer]
        for j, layer in enumerate(layers):
            fig.add_trace(go.Scatter(x=scales, y=values[:, j].tolist(), name=f"{name} L{layer}", mode="lines+markers"),
                          row=row, col=1)
    for j, site in enumerate(sites):
        fig.add_trace(go.Scatter(x=scales, y=r.extras["ln_scale"][:, j].tolist(), name=site, mode="lines"), row=3, col=1)
    if not sites:
        fig.add_annotation(text="no layer norm", xref="x3 domain", yref="y3 domain", x=0.5, y=0.5, showarrow=False)
    for row in (1, 2, 3):
        fig.add_vrect(x0=scales[0], x1=1.0, fillcolor="green", opacity=0.12, line_width=0, row=row, col=1,
                      exclude_empty_subplots=False)
        fig.update_xaxes(type="log", row=row, col=1)
    fig.update_xaxes(title_text=f"{meta['field']} × scale", row=3, col=1)
    fig.update_layout(title=title, height=700, showlegend=False)
    return fig


def same_task(ckpt) -> dict[str, str]:
    """Zoo models trained on exactly this task (same task fields): name -> path."""
    mine = ckpt.task.to_dict()
    out = {}
    for e in zoo_entries():
        if e.error:
            continue
        try:
            task = json.loads((e.path / "config.json").read_text()).get("task")
        except (OSError, ValueError):
            continue
        if task == mine:
            out[e.name] = str(e.path)
    return out


path = sidebar("Saturation")
ckpt = load(path)
if ckpt is not None:
    st.markdown(describe(ckpt))
    n, seed = settings()
    if not is_regression(ckpt):
        st.info(f"Saturation is about real-valued predictions leaving the training range; {ckpt.task.name} is a "
                "classification task.")
        st.stop()
    from probes.saturation import COEF_FIELDS

    fields = ["input"] + (["coef"] if ckpt.task.name in COEF_FIELDS else [])
    with st.sidebar:
        st.header("Saturation")
        field = persistent(st.radio, "scale", "scale_field", "input", options=fields, horizontal=True)
    n_sat = max(8, n)
    r = probe("saturation", ckpt, "Sweeping the input scale…", scales=SCALES, field=field, n=n_sat, seed=seed)
    if r is not None:
        m = r.metadata
        b = m.get("boundary")
        cols = st.columns(4)
        cols[0].metric("training range R", f"{m['train_range']:.3g}")
        cols[1].metric("plateau B", "—" if b is None or not math.isfinite(b) else f"{b:.3g}")
        cols[2].metric("B / R", f"{m.get('boundary_over_range', float('nan')):.3g}")
        cols[3].metric("saturated", {True: "yes", False: "no"}.get(m.get("saturated"), "—"))
        st.plotly_chart(without_webgl(r.figure()), key="saturation")
        st.plotly_chart(mechanism_figure(r, "mechanism at the query: entropy, max weight, LN scale"), key="mechanism")

    st.subheader("Variants on the same task")
    variants = same_task(ckpt)
    name = Path(str(ckpt.path)).name
    variants.setdefault(name, str(ckpt.path))
    others = [v for v in variants if v != name]
    if not others:
        st.info("No other zoo model is trained on this exact task, so there is nothing to compare with. Train a "
                "variant (e.g. `--norm none` or `--scoring relu`) on the same task to see which removal moves the plateau.")
    else:
        with st.sidebar:
            chosen = st.multiselect("compare with", others, default=others[:3], key="sat_compare")
        if chosen:
            models = {name: str(ckpt.path), **{v: variants[v] for v in chosen}}
            cmp = probe("compare_saturation", ckpt, "Comparing variants…", scales=SCALES,
                        models={k: [p, fingerprint(p)] for k, p in models.items()},
                        field=field, n=n_sat, seed=seed)
            if cmp is not None:
                st.plotly_chart(cmp.figure(), key="saturation_compare")
                meta = cmp.metadata
                table = pd.DataFrame({
                    "variant": cmp.ticks("variant"), "B": cmp.scores.tolist(),
                    "B / B(reference)": cmp.extras["shift"].tolist(),
                    "saturated": [meta["saturated"].get(v) for v in cmp.ticks("variant")],
                    "moves plateau": [meta["moves_plateau"].get(v) for v in cmp.ticks("variant")],
                    "architecture": [str(meta["architecture"].get(v)) for v in cmp.ticks("variant")],
                })
                st.dataframe(table, hide_index=True)
            cols = st.columns(len(models))
            for col, (vname, vpath) in zip(cols, models.items()):
                from common import load as load_variant

                with col:
                    vck = load_variant(vpath)
                    if vck is None:
                        continue
                    vr = probe("saturation", vck, f"Sweeping {vname}…", scales=SCALES, field=field, n=n_sat, seed=seed)
                    if vr is not None:
                        st.plotly_chart(mechanism_figure(vr, vname), key=f"mechanism_{vname}")
