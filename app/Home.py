"""icl-interp dashboard: home page. Lists the models in the zoo folder.

Run with `streamlit run app/Home.py`. The full dashboard (pages/) comes later.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

# `streamlit run app/Home.py` puts app/ on sys.path; other launchers may not, so make sure.
_APP_DIR = str(Path(__file__).resolve().parent)
if _APP_DIR not in sys.path:
    sys.path.insert(0, _APP_DIR)

from zoo import ModelEntry, read_zoo, zoo_dir, zoo_rows  # noqa: E402

TRAIN_HINT = "interp train --task linear --out models/linear-tiny"


@st.cache_data(ttl=30, show_spinner=False)
def load_zoo(root: str) -> list[ModelEntry]:
    """Cached read of the zoo folder; the ttl lets freshly trained models show up on their own."""
    return read_zoo(root)


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

entries = load_zoo(str(root))

if not entries:
    where = "does not exist" if not root.is_dir() else "has no models (sub-folders with config.json)"
    st.info(f"The zoo folder `{root}` {where}. Train one with:\n\n```\n{TRAIN_HINT}\n```")
    st.stop()

st.subheader(f"Models ({len(entries)})")
table = pd.DataFrame(zoo_rows(entries))
# Drop metric columns no model has, so the table shows only what was logged.
empty = [c for c in table.columns if c.startswith("last ") and table[c].isna().all()]
st.dataframe(table.drop(columns=empty), hide_index=True)

for e in entries:
    if e.error:
        st.warning(f"**{e.name}**: {e.error}")

for e in entries:
    if e.card:
        with st.expander(f"{e.name}: model card"):
            st.markdown(e.card)
