"""Refresh the README's dashboard picture, docs/dashboard-patching.png, on purpose.

    python scripts/dashboard_screenshots.py

Runs the real-browser test (tests/e2e, Debian's Chromium through Playwright: `make test-e2e` installs both), which
writes its screenshots under tests/e2e/screenshots/ only, then copies the Patching page's first screen
(patching-view.png: a modular zoo model, the strongest cell's per-example spread) over the docs picture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOT = REPO / "tests" / "e2e" / "screenshots" / "patching-view.png"
DOCS = REPO / "docs" / "dashboard-patching.png"


def main() -> int:
    test = "tests/e2e/test_dashboard.py::test_every_page_in_chromium"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=REPO,
                          env={**os.environ, "ICL_E2E": "1", "OMP_NUM_THREADS": "1"})
    if done.returncode != 0 or not SHOT.is_file():
        print(f"dashboard_screenshots: the browser test failed or took no picture ({SHOT}); "
              f"{DOCS.relative_to(REPO)} is unchanged", file=sys.stderr)
        return 1
    tmp = DOCS.with_name(DOCS.name + ".tmp")  # whole or not at all
    shutil.copyfile(SHOT, tmp)
    os.replace(tmp, DOCS)
    print(f"wrote {DOCS.relative_to(REPO)} from {SHOT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
