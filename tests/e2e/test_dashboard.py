"""The dashboard in a real browser: `streamlit run app/dashboard.py` on a free loopback port, every page opened in
Debian's Chromium through Playwright. Each page must draw its charts (and the Attention page its circuitsvis
view) without a Streamlit exception box. Screenshots go to tests/e2e/screenshots/ only (gitignored): one per
page, and the Patching page's first screen as patching-view.png, which scripts/dashboard_screenshots.py copies
over the README's docs/dashboard-patching.png when asked to.

Run with `make test-e2e` (installs the `e2e` extra and Chromium when missing), or
`ICL_E2E=1 .venv/bin/python -m pytest tests/e2e`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(__file__).resolve().parent / "screenshots"
VIEW_SHOT = SHOTS / "patching-view.png"  # the README's picture, refreshed by scripts/dashboard_screenshots.py
CHROMIUM = os.environ.get("ICL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
# page file under app/views -> (nav label, what must appear on it for a modular model): charts, or the circuitsvis view
PAGES = {
    "0_Home.py": ("Home", 0),
    "1_Zoo.py": ("Zoo", 0),
    "2_Training.py": ("Training", 1),
    "3_ICL_curves.py": ("ICL curves", 1),
    "4_Attention.py": ("Attention", 1),
    "5_Patching.py": ("Patching", 2),
    "6_Heads.py": ("Heads", 4),
    "7_MLP_and_algorithms.py": ("MLP and algorithms", 4),
    "8_Saturation.py": ("Saturation", 0),
    "9_Circuit.py": ("Circuit", 2),
}
REGRESSION_PAGES = {"3_ICL_curves.py": 2, "8_Saturation.py": 2, "9_Circuit.py": 2}

sys.path.insert(0, str(REPO / "app"))
from zoo import read_zoo  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """`streamlit run app/dashboard.py` headless on a free loopback port; yields its URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).parent / "streamlit"), "run", str(REPO / "app" / "dashboard.py"),
           "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    SHOTS.mkdir(exist_ok=True)
    log = open(SHOTS / "server.log", "w")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not come up on {url} (exit code {proc.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.set_default_timeout(120_000)
        yield pg
        browser.close()


def settle(pg) -> None:
    """Wait until the script run is over and no spinner is left."""
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=180_000)
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stSpinner\"]')", timeout=180_000)
    pg.wait_for_timeout(800)  # plotly draws after the run
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=180_000)


def no_exception(pg, where: str) -> None:
    boxes = pg.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: exception box: {boxes.first.inner_text()[:500]}"


def go_to(pg, label: str) -> None:
    """Follow the sidebar link to a page (the session, and so the chosen model, carries over)."""
    link = pg.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first
    link.click()
    settle(pg)


def choose_model(pg, name: str) -> None:
    box = pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    box.click()
    pg.keyboard.type(name)  # the list renders a dozen options at a time: filter it
    pg.get_by_role("option", name=name, exact=True).click()
    settle(pg)


def pick(kind: str, regression: bool = False) -> str | None:
    """A zoo model of a task kind: a modular one with an MLP and 2+ blocks if there is one, else any of that kind."""
    entries = [e for e in read_zoo(REPO / "models") if e.error is None]
    if regression:
        found = [e for e in entries if e.task not in ("modular",)]
    else:
        # one with MLPs and at least 2 blocks (the models with circuits worth a screenshot) first
        found = sorted((e for e in entries if e.task == kind),
                       key=lambda e: (bool(e.spec.get("attn_only")), (e.spec.get("n_layers") or 0) < 2, e.name))
    return found[0].name if found else None


def model_shape(name: str) -> tuple[int, int]:
    """(layers, positions) of a modular zoo model, from its config.json: k examples are 3k - 1 tokens."""
    import json

    config = json.loads((REPO / "models" / name / "config.json").read_text())
    return config["model"]["n_layers"], 3 * config["train"]["n_examples"] - 1


def test_every_page_in_chromium(page, server) -> None:
    pg = page
    pg.goto(server)
    settle(pg)
    no_exception(pg, "Home")
    model = pick("modular")
    if model is None:
        pytest.skip("the zoo has no modular model")
    choose_model(pg, model)
    for file, (label, min_charts) in PAGES.items():
        if file != "0_Home.py":
            go_to(pg, label)
        no_exception(pg, label)
        charts = pg.locator('[data-testid="stPlotlyChart"]')
        if min_charts:
            charts.first.wait_for(state="visible")
            pg.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', state="attached")
        assert charts.count() >= min_charts, f"{label}: {charts.count()} charts, expected {min_charts}"
        if file == "4_Attention.py":
            frame = pg.frame_locator('[data-testid="stCustomComponentV1"], [data-testid="stIFrame"]').first
            # circuitsvis renders its React view inside the iframe: one head's pattern (L0H0) on a canvas
            frame.locator("canvas").first.wait_for(state="visible", timeout=60_000)
        if file == "5_Patching.py":
            pg.screenshot(path=str(VIEW_SHOT), full_page=False)  # the README's view: the strongest cell's spread
            # click a heatmap cell: the per-example distribution follows the clicked component
            # (default view: resid_pre, layer x position; click the first position of the last layer)
            n_layers, n_pos = model_shape(model)
            heat = charts.first.locator(".heatmaplayer image").first
            box = heat.bounding_box()
            pg.mouse.move(box["x"] + box["width"] * 0.5 / n_pos, box["y"] + box["height"] * (1 - 0.5 / n_layers))
            pg.mouse.click(box["x"] + box["width"] * 0.5 / n_pos, box["y"] + box["height"] * (1 - 0.5 / n_layers))
            settle(pg)
            no_exception(pg, label + " after a click")
            titles = [t for t in pg.locator(".gtitle").all_text_contents() if t and "per-example" in t]
            assert titles == [f"layer L{n_layers - 1} · pos x0: per-example normalised effect"], titles
            assert pg.locator('[data-testid="stDownloadButton"]').count() == 2
        name = file.removesuffix(".py").lower()
        pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_regression_pages_in_chromium(page, server) -> None:
    pg = page
    model = pick("", regression=True)
    if model is None:
        pytest.skip("the zoo has no regression model")
    pg.goto(server)
    settle(pg)
    choose_model(pg, model)
    for file, n in REGRESSION_PAGES.items():
        label = PAGES[file][0]
        go_to(pg, label)
        no_exception(pg, label)
        charts = pg.locator('[data-testid="stPlotlyChart"]')
        charts.first.wait_for(state="visible")
        assert charts.count() >= n, f"{label}: {charts.count()} charts for {model}"
        pg.screenshot(path=str(SHOTS / f"{file.removesuffix('.py').lower()}-{model}.png"), full_page=True)


def test_bad_path_in_chromium(page, server) -> None:
    pg = page
    pg.goto(server)
    settle(pg)
    go_to(pg, "Zoo")
    box = pg.get_by_label("Open a checkpoint folder")
    box.fill("/nonexistent/checkpoint")
    box.press("Enter")
    settle(pg)
    no_exception(pg, "Zoo with a bad path")
    assert pg.locator('[data-testid="stAlertContentError"], [data-testid="stAlert"]').filter(
        has_text="no checkpoint folder").count() >= 1
    pg.screenshot(path=str(SHOTS / "zoo-bad-path.png"), full_page=True)
