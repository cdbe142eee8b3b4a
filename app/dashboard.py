"""icl-interp dashboard: the navigation and the one page frame every page runs in.

Run with `streamlit run app/dashboard.py` (or `make dashboard`, `interp dashboard`). Each script run builds the
navigation from ``common.PAGES``, runs ``common.frame`` for the selected page (sidebar, and the checkpoint with
its one-line description for the pages that need one), then runs that page from pages/. Widgets drawn here keep
their state across pages. Home imports neither torch nor interp, so it renders in well under a second; the other
pages load models on demand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts app/ on sys.path, other launchers (AppTest) may not; the repo root serves `interp` and
# `probes` when the package is not installed.
_APP = Path(__file__).resolve().parent
if str(_APP) not in sys.path:
    sys.path.insert(0, str(_APP))
if str(_APP.parent) not in sys.path:
    sys.path.append(str(_APP.parent))

from common import PAGES, frame  # noqa: E402

pages = [st.Page(p.file, title=p.label, url_path=p.url, default=i == 0) for i, p in enumerate(PAGES)]
selected = st.navigation(pages)
frame(next(info for info, page in zip(PAGES, pages) if page is selected))
selected.run()
