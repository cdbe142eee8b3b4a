"""Saturation (regression models): the prediction against the target with the training range [R−, R+] marked,
the signed boundary values B+ / B− and the fall-back slope beyond the range (probes.saturation's one definition,
the numbers `interp saturation` prints and the cards report), attention entropy and maximum weight and layer-norm
scale against scale; the same for zoo variants trained on the same task (with / without LN or the final LN,
softmax / relu / linear scoring, …) side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from common import (
    boundary_text, current, fingerprint, is_regression, load, mark_training, probe, saturated_text, setting,
    without_webgl, zoo_entries)
from interp.api import SaturationSettings


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
            fig.add_trace(go.Scatter(x=scales, y=values[:, j].tolist(), name=f"{name} {layer}", mode="lines+markers"),
                          row=row, col=1)
    for j, site in enumerate(sites):
        fig.add_trace(go.Scatter(x=scales, y=r.extras["ln_scale"][:, j].tolist(), name=site, mode="lines"), row=3, col=1)
    if not sites:
        fig.add_annotation(text="no layer norm", xref="x3 domain", yref="y3 domain", x=0.5, y=0.5, showarrow=False)
    mark_training(fig, scales, [(1, 1), (2, 1), (3, 1)])
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


page = current()
ckpt, n, seed = page.ckpt, page.n, page.seed
if not is_regression(ckpt):
    st.info(f"Saturation is about real-valued predictions leaving the training range; {ckpt.task.name} is a "
            "classification task.")
    st.stop()
from interp.api import default_field

fields = ["input"] + (["coef"] if ckpt.task.coef_field is not None else [])
with st.sidebar:
    st.header("Saturation")
    field = setting(SaturationSettings, "field", "scale_field", options=fields, default=default_field(ckpt.task),
                    widget=st.radio, horizontal=True)
# the probe's own sweep (0.25x to 16x: kernel tasks cannot sample a GP much beyond)
settings = SaturationSettings(field=field, n=max(8, n), seed=seed)
r = probe("saturation", ckpt, f"Sweeping the {field} scale…", settings)
if r is not None:
    m = r.metadata
    cols = st.columns(5)
    cols[0].metric("training range [R−, R+]", f"[{m['range_minus']:.3g}, {m['range_plus']:.3g}]")
    cols[1].metric("B+", boundary_text(m["boundary_plus"]))
    cols[2].metric("B−", boundary_text(m["boundary_minus"]))
    cols[3].metric("fall-back slope + / −", f"{boundary_text(m['fallback_plus'], '.2g')} / {boundary_text(m['fallback_minus'], '.2g')}")
    cols[4].metric("saturated", saturated_text(m["saturated"]))
    if m["note"]:
        st.info(m["note"])
    scales = [float(x) for x in r.ticks("scale")]
    st.caption(f"B± = the highest / lowest median prediction over groups of targets; the fall-back slope is the "
               f"least-squares slope of prediction on target beyond R± ({m['field']} sweep ×{scales[0]:g}–{scales[-1]:g}; "
               f"definition in probes/saturation.py). The same numbers: `interp saturation --ckpt {ckpt.path} "
               f"--field {settings.field} --n {settings.n} --seed {settings.seed}`.")
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
        cmp = probe("compare_saturation", ckpt, "Comparing variants…", settings,
                    models={k: [p, fingerprint(p)] for k, p in models.items()})
        if cmp is not None:
            st.plotly_chart(cmp.figure(), key="saturation_compare")
            meta = cmp.metadata
            names = cmp.ticks("variant")
            bound = meta["ln_final_bound"]
            table = pd.DataFrame({
                "variant": names, "B+": cmp.scores[:, 0].tolist(), "B−": cmp.scores[:, 1].tolist(),
                "fall-back +": cmp.extras["fallback"][:, 0].tolist(), "fall-back −": cmp.extras["fallback"][:, 1].tolist(),
                "saturated": [saturated_text(meta["saturated"][v]) for v in names],
                "moves plateau": [meta["moves_plateau"][v] for v in names],
                "final-LN bound": ["none" if bound[v] is None else ", ".join(f"[{lo:.3g}, {hi:.3g}]" for lo, hi in bound[v])
                                   for v in names],
                "architecture": [str(meta["architecture"][v]) for v in names],
            })
            st.dataframe(table, hide_index=True)
        cols = st.columns(len(models))
        for col, (vname, vpath) in zip(cols, models.items()):
            with col:
                vck = load(vpath)
                if vck is None:
                    continue
                vr = probe("saturation", vck, f"Sweeping {vname}…", settings)
                if vr is not None:
                    st.plotly_chart(mechanism_figure(vr, vname), key=f"mechanism_{vname}")
