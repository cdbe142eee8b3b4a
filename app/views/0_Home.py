"""Home: the zoo at a glance and the way into the pages. Imports neither torch nor interp, so it renders in well
under a second."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from common import PAGES, current, load_sweeps, zoo_entries, zoo_table
from zoo import zoo_dir

TRAIN_HINT = "interp train --task linear --out models/linear-tiny"

st.markdown(
    "A mechanistic-interpretability workbench for small transformers trained on "
    "in-context-learning tasks: linear and polynomial regression, kernel regression, "
    "modular arithmetic, complex zeros. Pick a model, then patch, attribute and probe it."
)

root = zoo_dir()
entries = zoo_entries()

if not entries:
    where = "does not exist" if not root.is_dir() else "has no models (sub-folders with config.json)"
    st.info(f"The zoo folder `{root}` {where}. Train one with:\n\n```\n{TRAIN_HINT}\n```")
    st.stop()

cols = st.columns(4)
for i, page in enumerate(PAGES[1:]):
    with cols[i % 4]:
        st.page_link(page.file, label=page.title, help=page.help)

st.subheader(f"Models ({len(entries)})")
zoo_table(entries)

sweeps = load_sweeps(str(root))
if sweeps:
    st.caption("Sweeps (see Training): " + ", ".join(f"`{Path(s).parent.name}`" for s in sweeps))

# The card of the model picked in the sidebar only: thirty cards in collapsed expanders cost the browser about
# half a second on every visit (docs/PERFORMANCE.md, Dashboard); the Zoo page shows any model's card too.
chosen = next((e for e in entries if e.card and current().path and Path(current().path).resolve() == e.path.resolve()),
              next((e for e in entries if e.card), None))
if chosen is not None:
    with st.expander(f"{chosen.name}: model card"):
        st.markdown(chosen.card)
    st.caption("Pick another model in the sidebar for its card here; the Zoo page shows its details.")
