"""Zoo: every checkpoint in models/ with its task, spec, steps, ID/OOD scores and card; open any folder."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from common import SELECTED, current, describe, load, zoo_entries, zoo_table
from zoo import score_keys

path = current().path
entries = zoo_entries()
if entries:
    st.subheader(f"Models in the zoo ({len(entries)})")
    zoo_table(entries)
else:
    st.info("The zoo folder has no models yet (sub-folders with config.json). Train one with "
            "`interp train --task linear --out models/linear-tiny`, or type a checkpoint path below.")


def open_typed() -> None:
    st.session_state[SELECTED] = st.session_state["_zoo_open"].strip() or None


st.text_input("Open a checkpoint folder", key="_zoo_open", on_change=open_typed,
              placeholder="e.g. models/linear-d5 or /tmp/my-run")

st.subheader("Selected checkpoint")
ckpt = load(path)
if ckpt is not None:
    st.markdown(describe(ckpt))
    last = ckpt.metrics[-1] if ckpt.metrics else {}
    scores = score_keys(last)
    if scores:
        cols = st.columns(min(len(scores), 6))
        for i, k in enumerate(scores):
            cols[i % len(cols)].metric(k, f"{last[k]:.4g}")
    train = ckpt.train
    steps = train.get("steps_done", train.get("steps"))
    st.caption(f"trained {steps} steps · {train.get('n_examples')} examples per sequence · "
               f"git {str(ckpt.git_commit or '?')[:10]} · `{ckpt.path}`")
    left, right = st.columns(2)
    with left:
        st.markdown("**Task**")
        st.json(ckpt.task.to_dict(), expanded=True)
        st.markdown("**Model spec**")
        st.json(ckpt.spec.to_dict(), expanded=False)
    with right:
        st.markdown("**Training**")
        st.json(train, expanded=False)
        card = Path(str(ckpt.path)) / "CARD.md"
        if card.is_file():
            st.markdown("**Card**")
            st.markdown(card.read_text(encoding="utf-8", errors="replace"))
