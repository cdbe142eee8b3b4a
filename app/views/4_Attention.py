"""Attention: the patterns of one sampled sequence through circuitsvis (tokens labelled by role), one head at a
time (``attention_pattern``) or every head of a layer (``attention_heads``, which takes the browser about three
times as long to draw: docs/PERFORMANCE.md), and the head-type scores (previous token, same role, own x / y, …)
as a layer × head heatmap."""

from __future__ import annotations

import streamlit as st

from common import ckpt_key, current, embed_html, heatmap, persistent, probe, run_probe
from interp.results import tick_label
from interp.api import AttributeSettings


ALL_HEADS = "all heads"


@st.cache_data(max_entries=64, show_spinner=False)
def attention_html(path: str, fp: str, layer: int, head: int | None, example: int, seed: int) -> tuple[str, list[str]]:
    """circuitsvis's view of one head's pattern (``attention_pattern``), or of every head of ``layer`` with
    ``head`` None (``attention_heads``), as self-contained HTML (``local_src`` inlines the JavaScript; ``str()``
    would load it from a CDN, and the dashboard must work offline)."""
    import json

    import numpy as np
    from circuitsvis.attention import attention_heads, attention_pattern

    data = run_probe("attention", path, fp, json.dumps({"example": example, "seed": seed}, sort_keys=True))
    pattern = np.asarray(data["patterns"][layer])  # [head, dest, src]
    if head is not None:
        return attention_pattern(tokens=data["tokens"], attention=pattern[head]).local_src, data["tokens"]
    html = attention_heads(attention=pattern, tokens=data["tokens"],
                           attention_head_names=[tick_label(layer, h) for h in range(pattern.shape[0])])
    return html.local_src, data["tokens"]


page = current()
ckpt, n, seed = page.ckpt, page.n, page.seed
with st.sidebar:
    st.header("Attention")
    layer = persistent(st.selectbox, "layer", "attn_layer", 0, options=list(range(ckpt.spec.n_layers)))
    head = persistent(st.selectbox, "head", "attn_head", 0, options=[*range(ckpt.spec.n_heads), ALL_HEADS],
                      format_func=lambda h: h if h == ALL_HEADS else tick_label(head=h),
                      help="one head's pattern, or every head of the layer side by side (slower to draw)")
    example = persistent(st.number_input, "example (sequence index)", "attn_example", 0, min_value=0, max_value=63, step=1)
with st.spinner("Rendering attention patterns…"):
    one = None if head == ALL_HEADS else int(head)
    html, tokens = attention_html(*ckpt_key(ckpt), int(layer), one, int(example), seed)
st.caption((f"**{tick_label(int(layer), one)}**, destination (query) rows × source (key) columns; " if one is not None
            else "") + "tokens by role: " + " ".join(f"`{t}`" for t in tokens))
embed_html(html, height=max(650, 18 * len(tokens) + 250))

st.subheader("Head types")
r = probe("attribute", ckpt, "Scoring head types…",
          AttributeSettings(method="head_types", corruption=None, n=n, seed=seed))  # no corrupted run
if r is not None:
    types = r.ticks("type")
    kind = persistent(st.selectbox, "head type", "head_type", types[0], options=types)
    from interp.api import HEAD_TYPES

    st.caption(f"share of each head's attention on **{kind}**: {HEAD_TYPES.get(kind, '')}")
    t = types.index(kind)
    fig = heatmap(r.scores[:, :, t].tolist(), r.ticks("head"), r.ticks("layer"), f"head type: {kind}",
                  "head", "layer", zmid=None, colorscale="Viridis")
    fig.update_traces(zmin=0, zmax=1)
    st.plotly_chart(fig, key="head_types")
    with st.expander("all head types"):
        st.dataframe(r.to_frame().pivot_table(index=["layer", "head"], columns="type", values="value"))
