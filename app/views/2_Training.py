"""Training: loss and ID/OOD curves from metrics.jsonl; for a sweep, the phase diagram and OOD accuracy
against depth and against steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from common import current, load_sweeps
from zoo import read_metrics, read_sweep, sweep_rows, zoo_dir

# interp.sweep.PHASES from the bottom up (not_learned stays uncoloured); ratio_matching_only: OOD queries
# answered only by copying or ratio matching
PHASES = ["id_memorization", "ratio_matching_only", "id_generalization", "ood_memorization", "ood_generalization"]
PHASE_COLORS = ["#d9d9d9", "#fee08b", "#fdae61", "#abd9e9", "#1a9641"]


def metric_groups(records: list[dict]) -> dict[str, list[str]]:
    """Numeric keys of the log grouped for plotting: losses, accuracies, errors, the rest (lr, ...)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k, v in r.items() if k != "step" and k not in keys
                 and isinstance(v, (int, float)) and not isinstance(v, bool)]
    groups: dict[str, list[str]] = {"loss": [], "accuracy": [], "error": [], "other": []}
    for k in keys:
        group = "loss" if "loss" in k else "accuracy" if "acc" in k else "error" if "error" in k else "other"
        groups[group].append(k)
    return {g: ks for g, ks in groups.items() if ks}


def curves_figure(records: list[dict], title: str) -> go.Figure:
    groups = metric_groups(records)
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=list(groups))
    steps = [r.get("step", i) for i, r in enumerate(records)]
    for col, (group, keys) in enumerate(groups.items(), start=1):
        for k in keys:
            xs = [s for s, r in zip(steps, records) if isinstance(r.get(k), (int, float))]
            ys = [r[k] for r in records if isinstance(r.get(k), (int, float))]
            fig.add_trace(go.Scatter(x=xs, y=ys, name=k, mode="lines+markers", legendgroup=group), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
        if group in ("loss", "error"):
            fig.update_yaxes(type="log", row=1, col=col)
        if group == "error":  # interp.train's ``error``: squared error / d over the loss positions
            from interp.evaluate import ERROR, METRIC_LABELS

            fig.update_yaxes(title_text=METRIC_LABELS[ERROR], row=1, col=col)
    fig.update_layout(title=title, height=420)
    return fig


def phase_figure(frame: pd.DataFrame) -> go.Figure:
    """One figure of n_id × α heatmaps (seeds pooled): the majority phase, the mean OOD accuracy, and where the
    summary has it the mean OOD regression-only accuracy in the last quarter of the shots. (One figure, not three:
    each plotly chart costs the browser about 0.1 s on every visit.)"""
    def majority(s: pd.Series):
        s = s.dropna()
        return s.mode().iloc[0] if len(s) else None

    grouped = frame.groupby(["n_id", "alpha"], dropna=False)
    phase = grouped["phase"].agg(majority).unstack("alpha")
    grids = {"OOD accuracy (mean over seeds)": grouped["ood_acc"].mean().unstack("alpha")}
    if "ood_regression_last" in frame and frame["ood_regression_last"].notna().any():
        grids["OOD regression-only accuracy, last quarter of the shots"] = (
            grouped["ood_regression_last"].mean().unstack("alpha"))
    x = [str(a) for a in phase.columns]
    y = [str(n) for n in phase.index]
    codes = phase.map(lambda p: PHASES.index(p) if p in PHASES else None)
    n = len(PHASES)
    scale = [[v, PHASE_COLORS[i]] for i in range(n) for v in (i / n, (i + 1) / n)]
    fig = make_subplots(rows=1, cols=1 + len(grids), subplot_titles=["phase (majority over seeds)", *grids],
                        horizontal_spacing=0.08)
    fig.add_trace(go.Heatmap(z=codes.values.tolist(), x=x, y=y, zmin=0, zmax=n, colorscale=scale, showscale=False,
                             text=phase.values.tolist(), texttemplate="%{text}", name="phase"), row=1, col=1)
    for col, (title, grid) in enumerate(grids.items(), start=2):
        fig.add_trace(go.Heatmap(z=grid.values.tolist(), x=[str(a) for a in grid.columns],
                                 y=[str(n) for n in grid.index], coloraxis="coloraxis", texttemplate="%{z:.2f}",
                                 name=title), row=1, col=col)
    fig.update_layout(title="phase diagram: phase, OOD accuracy" + (", OOD regression-only" if len(grids) > 1 else ""),
                      coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": 1}, height=420)
    fig.update_xaxes(type="category", title_text="α (pair fraction)")
    fig.update_yaxes(type="category", title_text="n_id (pre-training tasks)", col=1)
    fig.update_yaxes(type="category")
    return fig


def ood_figure(done: pd.DataFrame, cells: list[dict]) -> go.Figure | None:
    """OOD accuracy against depth (per n_id, α, where the sweep varies depth) and against steps (per cell), side
    by side in one figure; None when there is neither."""
    by_depth = (done.groupby(["depth", "n_id", "alpha"], dropna=False)["ood_acc"].mean().reset_index()
                if done["depth"].notna().any() else None)
    curves = []
    for cell in cells:
        curve = (cell or {}).get("curve") or {}
        key = next((k for k in ("ood_test_acc", "ood_acc", *sorted(curve)) if k in curve and k.startswith("ood_")), None)
        if key and curve.get("step"):
            curves.append((cell.get("name", "?"), curve["step"], curve[key]))
    if by_depth is None and not curves:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["OOD accuracy against depth", "OOD accuracy against steps"])
    if by_depth is not None:
        for (n_id, alpha), g in by_depth.groupby(["n_id", "alpha"], dropna=False):
            fig.add_trace(go.Scatter(x=g["depth"], y=g["ood_acc"], mode="lines+markers", name=f"n_id={n_id}, α={alpha}"),
                          row=1, col=1)
    for name, steps, values in curves:
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=name, showlegend=len(curves) <= 12), row=1, col=2)
    fig.update_xaxes(title_text="layers", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_yaxes(title_text="OOD accuracy")
    fig.update_layout(title="OOD accuracy against depth and against steps", height=420)
    return fig


def show_sweep(path: str) -> None:
    try:
        sweep = read_sweep(path)
    except ValueError as e:
        st.error(str(e))
        return
    rows = sweep_rows(sweep)
    name = sweep.get("name") or Path(path).parent.name
    st.subheader(f"Sweep: {name}")
    if sweep.get("config"):
        st.caption(f"config `{sweep['config']}` · axes: " + ", ".join(
            f"{k} = {v}" for k, v in (sweep.get("axes") or {}).items()))
    if not rows:
        st.info("This sweep has no cells yet.")
        return
    frame = pd.DataFrame(rows)
    done = frame[(frame["status"] == "done") | frame["phase"].notna() | frame["ood_acc"].notna()]
    st.caption(f"{len(frame)} cells, {len(done)} with results")
    if done.empty:
        st.info("No cell has finished yet.")
    elif done["n_id"].isna().all() or done["alpha"].isna().all():
        st.info("The phase diagram needs the axes task.n_tasks and task.pair_fraction; this sweep varies "
                + ", ".join(sweep.get("axes") or {}) + ".")
    else:
        depths = sorted(int(d) for d in done["depth"].dropna().unique())
        sub = done
        if len(depths) > 1:
            depth = st.select_slider("depth (layers) for the phase diagram", options=depths, value=depths[-1])
            sub = done[done["depth"] == depth]
        st.plotly_chart(phase_figure(sub), key="phase_diagram")
        if sweep.get("phase_rule"):
            st.caption("Phase rule: " + sweep["phase_rule"])
        fig = ood_figure(done, sweep.get("cells") or [])
        if fig is not None:
            st.plotly_chart(fig, key="ood_curves")
    with st.expander("cells"):
        st.dataframe(frame, hide_index=True)


path = current().path
if path:
    from interp.checkpoint import read_config
    from interp.errors import CheckpointError

    folder = Path(path)
    try:
        read_config(folder)  # the same checks as loading, without building the model
        ok = True
    except CheckpointError as e:
        st.error(f"Cannot read this checkpoint: {e}")
        ok = False
    if ok:
        records = read_metrics(folder / "metrics.jsonl")
        if not records:
            st.info(f"`{folder.name}` has no training metrics (metrics.jsonl is missing or empty).")
        else:
            st.plotly_chart(curves_figure(records, f"{folder.name}: training curves"), key="training_curves")
            with st.expander("metrics.jsonl"):
                st.dataframe(pd.DataFrame(records), hide_index=True)
else:
    st.info("Pick a model in the sidebar to see its training curves.")

sweeps = load_sweeps(str(zoo_dir()))
if sweeps:
    st.divider()
    chosen = st.sidebar.selectbox("Sweep", sweeps, format_func=lambda s: Path(s).parent.name) if len(sweeps) > 1 else sweeps[0]
    show_sweep(chosen)
