"""Patching: exact activation patching (probes.patching via interp.patch) as a layer × position or layer × head
heatmap; clicking a cell (or choosing it below) shows that component's per-example distribution."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from common import corruption_and_metric, current, heatmap, persistent, probe, setting
from interp.results import tick_label
from interp.api import BY, PATCH_SITES, SITES, PatchSettings

SITE_HELP = {
    "resid_pre": "residual stream before the block", "resid_mid": "residual stream between attention and MLP",
    "attn_out": "attention output", "mlp_out": "MLP output", "z": "each head's output (hook_z)",
    "q": "each head's queries", "k": "each head's keys", "v": "each head's values", "pattern": "each head's pattern",
}
BY_HELP = {"layer_pos": "layer × position", "layer": "layer (all positions)", "head_pos": "head × position",
           "head": "layer × head (all positions)"}


def grid(r, layer: int | None):
    """The 2-D view of a patching Result: (z rows, x ticks, y ticks, x title, y title, index of a cell)."""
    axes = r.axes
    if axes == ("layer", "pos"):
        return r.scores.tolist(), r.ticks("pos"), r.ticks("layer"), "pos", "layer", lambda i, j: (i, j)
    if axes == ("layer", "head"):
        return r.scores.tolist(), r.ticks("head"), r.ticks("layer"), "head", "layer", lambda i, j: (i, j)
    if axes == ("layer",):
        return [[v] for v in r.scores.tolist()], ["all positions"], r.ticks("layer"), "", "layer", lambda i, j: (i,)
    # ("layer", "head", "pos"): one layer at a time
    wanted = None if layer is None else tick_label(layer)
    l = r.ticks("layer").index(wanted) if wanted in r.ticks("layer") else 0
    return r.scores[l].tolist(), r.ticks("pos"), r.ticks("head"), "pos", f"head (layer {r.ticks('layer')[l]})", \
        lambda i, j: (l, i, j)


page = current()
ckpt, n, seed = page.ckpt, page.n, page.seed
with st.sidebar:
    st.header("Patching")
    # the sites by their own names (the field's short names resolve to these)
    site = setting(PatchSettings, "site", "patch_site", options=PATCH_SITES,
                   format_func=lambda s: f"{s}: {SITE_HELP.get(s, '')}")
    # what one patch can cover depends on the site's layout; the first is the probe's default
    by = setting(PatchSettings, "by", "patch_by", options=BY[SITES[site].layout],
                 format_func=lambda b: BY_HELP.get(b, b))
    corruption, metric = corruption_and_metric(ckpt, PatchSettings)
    direction = setting(PatchSettings, "direction", "patch_direction", widget=st.radio, horizontal=True)
    layer = None
    if by == "head_pos":
        layer = persistent(st.selectbox, "layer to show", "patch_layer", 0, options=list(range(ckpt.spec.n_layers)))

settings = PatchSettings(site=site, by=by, corruption=corruption, metric=metric, direction=direction, n=n, seed=seed)
r = probe("patch", ckpt, f"Patching {settings.site} over {settings.n} sequences…", settings)
if r is not None:
    meta = r.metadata
    st.caption(f"{meta.get('metric')} · clean {meta.get('clean_metric', float('nan')):.4g} · corrupted "
               f"{meta.get('corrupted_metric', float('nan')):.4g} · {meta.get('scale', '')} · "
               f"{meta.get('n_sequences')} sequences, {meta.get('n_patched_runs')} patched runs")
    z, xs, ys, x_title, y_title, index = grid(r, layer)
    fig = heatmap(z, xs, ys, f"patching {settings.site} ({settings.direction}, {settings.corruption})", x_title, y_title)
    # Plotly heatmaps send no selection events, so an invisible marker sits on every cell to take the click.
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector={"type": "heatmap"})
    fig.add_trace(go.Scatter(
        x=[x for _ in ys for x in xs], y=[y for y in ys for _ in xs], mode="markers", showlegend=False,
        marker={"symbol": "square", "size": 16, "opacity": 0}, customdata=[v for row in z for v in row],
        hovertemplate=f"{y_title}=%{{y}}<br>{x_title}=%{{x}}<br>value=%{{customdata:.4g}}<extra></extra>"))
    fig.update_xaxes(range=[-0.5, len(xs) - 0.5])
    fig.update_yaxes(range=[len(ys) - 0.5, -0.5], autorange=False)
    event = st.plotly_chart(fig, key="patch_heatmap", on_select="rerun", selection_mode="points")

    cells = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    names = [f"{y_title} {ys[i]} · {x_title or 'cell'} {xs[j]}" for i, j in cells]
    # A click on the heatmap picks the cell; the selectbox below is the keyboard (and test) route.
    points = (event.get("selection") or {}).get("points") or [] if event else []
    click = (str(points[0].get("y")), str(points[0].get("x"))) if points else None
    if click and click != st.session_state.get("_patch_click"):
        st.session_state["_patch_click"] = click
        if click[0] in ys and click[1] in xs:
            st.session_state["patch_cell"] = names[cells.index((ys.index(click[0]), xs.index(click[1])))]
    best = max(range(len(cells)), key=lambda c: abs(z[cells[c][0]][cells[c][1]]))
    cell = persistent(st.selectbox, "component (or click a cell)", "patch_cell", names[best], options=names)
    i, j = cells[names.index(cell)]
    idx = index(i, j)
    if r.per_example is not None:
        values = r.per_example[(slice(None), *idx)].tolist()
        left, right = st.columns([2, 1])
        hist = go.Figure(go.Histogram(x=values, nbinsx=30, name="per example"))
        hist.add_vline(x=sum(values) / len(values), line_color="red", annotation_text="mean")
        for ref, label in ((0.0, "corrupted"), (1.0, "clean")):
            hist.add_vline(x=ref, line_dash="dot", line_color="grey", annotation_text=label)
        hist.update_layout(title=f"{cell}: per-example normalised effect", xaxis_title="normalised effect",
                           yaxis_title="sequences", height=350)
        left.plotly_chart(hist, key="patch_distribution")
        sem = r.sem
        right.metric("mean effect", f"{r.scores[idx].item():.3f}",
                     help="0 = corrupted run, 1 = clean run")
        if sem is not None:
            right.metric("s.e.m.", f"{sem[idx].item():.3f}")
        right.metric(f"raw {meta.get('metric')}", f"{r.extras['metric'][idx].item():.4g}")
    stem = f"patch-{Path(str(ckpt.path)).name}-{settings.site}-{settings.by}-{settings.corruption}-{settings.metric}"
    c1, c2 = st.columns(2)
    c1.download_button("Download JSON", r.to_json(), file_name=f"{stem}.json", mime="application/json")
    c2.download_button("Download CSV", r.to_frame().to_csv(index=False), file_name=f"{stem}.csv", mime="text/csv")
