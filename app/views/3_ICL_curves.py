"""In-context curves: error (or accuracy) against the number of in-context examples beside the baselines, and
error against input or coefficient scale with the training range shaded and the saturation plateau marked."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from common import (
    boundary_text, current, is_regression, mark_training, persistent, probe, saturated_text, setting)
from interp.api import EvalSettings, SaturationSettings

SCALES = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]  # the error sweep (interp.evaluate.error_vs_scale)


def curves_figure(ev) -> go.Figure:
    """One panel per split (ID, OOD): the model and every baseline, mean ± 95% CI (1.96 s.e.m.) over sequences."""
    splits = list(dict.fromkeys(c.split for c in ev.curves))
    fig = make_subplots(rows=1, cols=len(splits), subplot_titles=[s.upper() for s in splits], shared_yaxes=True)
    palette = {}
    for c in ev.curves:
        color = palette.setdefault(c.method, f"hsl({(len(palette) * 67) % 360},60%,45%)")
        fig.add_trace(go.Scatter(x=c.shots, y=c.mean, error_y={"type": "data", "array": c.ci95}, name=c.method,
                                 mode="lines+markers", legendgroup=c.method, showlegend=c.split == splits[0],
                                 line={"color": color, "width": 3 if c.method == "model" else 1.5,
                                       "dash": None if c.method == "model" else "dot"}),
                      row=1, col=splits.index(c.split) + 1)
    for col in range(1, len(splits) + 1):
        fig.update_xaxes(title_text="in-context examples", row=1, col=col)
    fig.update_yaxes(title_text=ev.label, row=1, col=1)
    fig.update_layout(title=f"{ev.label} vs number of examples · {ev.n_sequences} sequences, 95% CI", height=430)
    return fig


KIND_COLORS = {"all": "black", "copyable": "#2b83ba", "ratio": "#fdae61", "regression": "#d7191c"}


def kinds_figure(ev) -> go.Figure:
    """Modular tasks: one panel per split (He et al.'s four), the model's accuracy on every query and on copyable,
    ratio-matchable and regression-only ones, averaged per task then over tasks; the hover gives the support."""
    from interp.query_kinds import GROUP_NAMES, GROUPS

    labels = dict(zip(GROUPS, GROUP_NAMES))
    curves = [c for c in ev.by_kind if c.method == "model"]
    splits = list(dict.fromkeys(c.split for c in curves))
    fig = make_subplots(rows=1, cols=len(splits), subplot_titles=[s.upper() for s in splits], shared_yaxes=True)
    for c in curves:
        fig.add_trace(go.Scatter(x=c.shots, y=c.mean, name=labels[c.kind], mode="lines+markers",
                                 legendgroup=c.kind, showlegend=c.split == splits[0],
                                 customdata=list(zip(c.n_queries, c.n_tasks)),
                                 hovertemplate="k=%{x}: %{y:.3f} (%{customdata[0]} queries, %{customdata[1]} tasks)",
                                 line={"color": KIND_COLORS[c.kind], "width": 3 if c.kind == "all" else 1.5}),
                      row=1, col=splits.index(c.split) + 1)
    for col in range(1, len(splits) + 1):
        fig.update_xaxes(title_text="in-context examples", row=1, col=col)
    fig.update_yaxes(title_text="accuracy (per task, then over tasks)", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=f"accuracy by kind of query · {ev.n_sequences} sequences", height=430)
    return fig


def scale_figure(sr, sat) -> go.Figure:
    """Squared error / d at the query against the scale multiplier; scale ≤ 1 (training) shaded, plateau marked."""
    from interp.evaluate import Z95, metric_label

    error = metric_label(sr.metric, sr.error_scale)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{error} at the query", "|prediction| vs |target|"))
    mark_training(fig, sr.scales, [(1, 1)], label=True)
    for method, errs in sr.errors.items():
        fig.add_trace(go.Scatter(x=sr.scales, y=errs, error_y={"type": "data", "array": [Z95 * s for s in sr.sems[method]]}, name=method,
                                 mode="lines+markers", line={"dash": None if method == "model" else "dot"}), row=1, col=1)
    if sat is not None:
        meta = sat.metadata
        scales = [float(s) for s in sat.ticks("scale")]
        mark_training(fig, scales, [(1, 2)], saturation=meta)
        fig.add_trace(go.Scatter(x=scales, y=sat.scores.tolist(), name=meta.get("value_name", "|prediction|"),
                                 mode="lines+markers"), row=1, col=2)
        fig.add_trace(go.Scatter(x=scales, y=sat.extras["target_quantile"].tolist(), name="|target|",
                                 line={"dash": "dot", "color": "black"}), row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(type="log", title_text=f"{sr.field} × scale", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    fig.update_yaxes(title_text=error, row=1, col=1)
    fig.update_layout(title=f"extrapolation over {sr.field} ({sr.n_examples} examples), 95% CI", height=430)
    return fig


page = current()
ckpt, n, seed = page.ckpt, page.n, page.seed
ev = probe("evaluate", ckpt, "Evaluating the model and its baselines…", EvalSettings(n=n, seed=seed))
if ev is not None:
    st.plotly_chart(curves_figure(ev), key="icl_curves")
    with st.expander("table"):
        st.caption(f"{ev.label}; each \"ci95\" column is the half-width of the 95% interval of the mean over sequences")
        st.dataframe(ev.to_table(ci=True), hide_index=True)
    if getattr(ev, "by_kind", None):
        st.subheader("By kind of query")
        st.caption("Copyable: the (x, y) pair appeared earlier; ratio-matchable: a multiple c·(x_j, y_j) mod p of "
                   "an earlier example; regression-only: neither, with at least 2 examples before it, so only "
                   "modular regression answers it. Gaps: no query of that kind at that shot.")
        st.plotly_chart(kinds_figure(ev), key="icl_kinds")
        with st.expander("by-kind table (model and baselines; last = the last quarter of the shots)"):
            st.dataframe(ev.kind_table(methods=sorted({c.method for c in ev.by_kind})), hide_index=True)

st.subheader("Extrapolation")
if not is_regression(ckpt):
    st.info(f"Error against input scale applies to regression tasks; {ckpt.task.name} is a classification task.")
else:
    from interp.api import default_field

    fields = {"input": ckpt.task.scale_field}
    if ckpt.task.coef_field is not None:
        fields["coef"] = ckpt.task.coef_field
    with st.sidebar:
        st.header("Extrapolation")
        which = setting(SaturationSettings, "field", "scale_field", options=fields, default=default_field(ckpt.task),
                        widget=st.radio, format_func=lambda k: f"{k} ({fields[k]})")
        baselines = persistent(st.checkbox, "with baselines", "scale_baselines", False)
    field = fields[which]
    sr = probe("error_vs_scale", ckpt, "Sweeping the scale…", scales=SCALES, field=field,
               n_batches=1, batch_size=max(8, n), baselines=baselines, seed=seed)
    # the Saturation page's own sweep (the probe's default scales): both pages and `interp saturation` give one B±
    sat = probe("saturation", ckpt, "Measuring the plateau…", SaturationSettings(field=which, n=max(8, n), seed=seed))
    if sr is not None:
        st.plotly_chart(scale_figure(sr, sat), key="scale_curves")
        if sat is not None:
            m = sat.metadata
            st.caption(f"training range [R−, R+] = [{m['range_minus']:.3g}, {m['range_plus']:.3g}] (central 99% of y "
                       f"at scale 1) · B+ = {boundary_text(m['boundary_plus'])} · B− = {boundary_text(m['boundary_minus'])} "
                       f"· fall-back slope {boundary_text(m['fallback_plus'], '.2g')} / "
                       f"{boundary_text(m['fallback_minus'], '.2g')} · saturated: {saturated_text(m['saturated'])} "
                       "(the Saturation page has the details)")
