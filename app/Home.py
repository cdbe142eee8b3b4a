"""icl-interp dashboard: home page. The zoo at a glance and the way into the pages.

Run with `streamlit run app/Home.py` (or `make dashboard`). Home imports neither torch nor interp, so it
renders in well under a second; the pages under pages/ load models on demand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run app/Home.py` puts app/ on sys.path; other launchers may not, so make sure.
_APP_DIR = str(Path(__file__).resolve().parent)
if _APP_DIR not in sys.path:
    sys.path.insert(0, _APP_DIR)

from common import load_sweeps, load_zoo, sidebar_model, zoo_table  # noqa: E402
from zoo import zoo_dir  # noqa: E402

TRAIN_HINT = "interp train --task linear --out models/linear-tiny"
PAGES = [
    ("pages/1_Zoo.py", "Zoo", "every checkpoint: task, spec, steps, ID/OOD scores, card"),
    ("pages/2_Training.py", "Training", "loss and ID/OOD curves; the modular sweep's phase diagram"),
    ("pages/3_ICL_curves.py", "In-context curves", "error vs number of examples beside the baselines; extrapolation"),
    ("pages/4_Attention.py", "Attention", "attention patterns by token role; head-type scores"),
    ("pages/5_Patching.py", "Patching", "activation patching heatmaps, per-example spread, JSON/CSV"),
    ("pages/6_Heads.py", "Heads", "direct attribution, ablation, attribution patching vs exact"),
    ("pages/7_MLP_and_algorithms.py", "MLP and algorithms", "Fourier, PCA circles, neuron clusters, algorithm maps"),
    ("pages/8_Saturation.py", "Saturation", "entropy, max weight, LN scale and prediction vs input scale"),
]

st.set_page_config(page_title="icl-interp", layout="wide")
st.title("icl-interp")
st.markdown(
    "A mechanistic-interpretability workbench for small transformers trained on "
    "in-context-learning tasks: linear and polynomial regression, kernel regression, "
    "modular arithmetic, complex zeros. Pick a model, then patch, attribute and probe it."
)

root = zoo_dir()
with st.sidebar:
    st.caption(f"Zoo folder: `{root}`")
    if st.button("Reload zoo"):
        load_zoo.clear()
        load_sweeps.clear()

entries = load_zoo(str(root))

if not entries:
    where = "does not exist" if not root.is_dir() else "has no models (sub-folders with config.json)"
    st.info(f"The zoo folder `{root}` {where}. Train one with:\n\n```\n{TRAIN_HINT}\n```")
    with st.sidebar:
        sidebar_model(entries)
    st.stop()

with st.sidebar:
    st.header("Model")
    sidebar_model(entries)

cols = st.columns(4)
for i, (page, label, help_) in enumerate(p for p in PAGES if (Path(_APP_DIR) / p[0]).is_file()):
    with cols[i % 4]:
        st.page_link(page, label=label, help=help_)

st.subheader(f"Models ({len(entries)})")
zoo_table(entries)

sweeps = load_sweeps(str(root))
if sweeps:
    st.caption("Sweeps (see Training): " + ", ".join(f"`{Path(s).parent.name}`" for s in sweeps))

for e in entries:
    if e.card:
        with st.expander(f"{e.name}: model card"):
            st.markdown(e.card)
