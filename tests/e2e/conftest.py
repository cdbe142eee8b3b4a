"""The real-browser tests run only when asked: `make test-e2e` (ICL_E2E=1). A plain `pytest` skips this folder
without importing Playwright, which only the `e2e` extra installs."""

import os

if os.environ.get("ICL_E2E") != "1":
    collect_ignore_glob = ["test_*.py"]
