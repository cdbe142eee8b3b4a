"""Dashboard latency on the shipped zoo: first render of Home, and switching to a page already computed.

    python bench/dashboard.py [--models linear-d5,modular-p7-d2] [--n 64] [--repeats 3] [--rounds 2] [--no-apptest]

Goals (issue 7, issue 15): Home's first render under 5 s; switching to an already-computed page under 1 s in
Chromium.

Every run goes through the entry script, app/dashboard.py: st.navigation and the page frame (sidebar, checkpoint,
description) run, then the page, as they do for a browser.
(a) Home, cold: a fresh Python process imports Streamlit and runs app/dashboard.py once (Home, the default page)
    under ``streamlit.testing.v1.AppTest`` (the script run a browser's first visit triggers, zoo read included);
    timed from process start to the end of the run, median of ``--repeats`` processes. The run alone is printed
    beside it.
(b) Page switch, warm, AppTest: in one process, every page is run once per zoo model (the first visit: models load,
    probes compute and land in st.cache_resource / st.cache_data), then run again as a new session, which is
    what a browser's page switch is; the second run is timed. Reported: the slowest page over all models, and
    the median. AppTest runs the script as the server does but sends no websocket messages and draws nothing.
(c) With Chromium at /usr/bin/chromium and Playwright installed (the `e2e` extra), the same in a real browser:
    `streamlit run app/dashboard.py` is started, Home is opened (timed from the request to the end of the script
    run with the zoo table drawn, server already up), the first model of ``--models`` (else of the zoo) is chosen,
    every page is visited once through the sidebar, then ``--rounds`` more times: each later visit is timed from
    the click to the end of the run with the page's heading, every plotly chart drawn and (Attention) the
    circuitsvis view (one head's pattern, the default) drawn on its canvas in its iframe. Reported: the slowest visit per page over the rounds.
Ratios are goal / measured: above 1 means the goal is met.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app"
ENTRY = APP / "dashboard.py"
sys.path.insert(0, str(APP))

from common import PAGES  # noqa: E402
from zoo import read_zoo  # noqa: E402

HOME_GOAL_S = 5.0
SWITCH_GOAL_S = 1.0

_COLD = """
import time, sys
t0 = float(sys.argv[1])
from streamlit.testing.v1 import AppTest
t1 = time.time()
at = AppTest.from_file(sys.argv[2], default_timeout=60).run()
t2 = time.time()
assert not at.exception, [e.message for e in at.exception]
print(f"{t2 - t0:.4f} {t2 - t1:.4f}")
"""


def home_cold() -> tuple[float, float]:
    """(process start to end of Home's first run, the run alone) in a fresh interpreter, seconds."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", _COLD, repr(t0), str(ENTRY)], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "ICL_INTERP_ZOO": str(REPO / "models")})
    if out.returncode != 0:
        raise SystemExit(f"Home failed:\n{out.stderr[-2000:]}")
    total, run = map(float, out.stdout.split()[-2:])
    return total, run


def run_page(page: str, ckpt: Path, n: int) -> float:
    """Seconds of one script run of ``page`` (a file under app/, as in common.PAGES) in a new AppTest session."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ENTRY), default_timeout=600)
    at.session_state["ckpt_path"] = str(ckpt)
    at.session_state["n_sequences"] = n
    at.switch_page(page)
    t = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t
    if at.exception:
        raise SystemExit(f"{page} on {ckpt.name}: {at.exception[0].message}")
    return dt


# the page is drawn: its heading, the run over, no spinner, and every plotly chart with its SVG
_DRAWN = """(title) => {
    const h = document.querySelector('[data-testid="stMain"] h1');
    const app = document.querySelector('[data-testid="stApp"]');
    const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
    return !!h && h.innerText.trim().startsWith(title) && app.dataset.testScriptState === 'notRunning'
        && !document.querySelector('[data-testid="stSpinner"]') && charts.every(c => c.querySelector('.main-svg'));
}"""


def browser_times(model: str, rounds: int) -> tuple[float, dict[str, float]] | None:
    """(Home's first render, {page: slowest warm switch over ``rounds``}) in Chromium, seconds; None without
    Chromium or Playwright."""
    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium.exists():
        return None
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "streamlit"), "run", str(ENTRY),
                             "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ICL_INTERP_ZOO": str(REPO / "models")})
    try:
        for _ in range(180):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run"])
            pg = browser.new_page(viewport={"width": 1500, "height": 1000})
            pg.set_default_timeout(300_000)
            t = time.perf_counter()
            pg.goto(url)
            pg.wait_for_selector('[data-testid="stDataFrame"]')
            pg.wait_for_function(_DRAWN, arg=PAGES[0].title)
            home = time.perf_counter() - t
            box = pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
            box.click()
            pg.keyboard.type(model)  # the list renders a dozen options at a time: filter it
            pg.get_by_role("option", name=model, exact=True).click()
            pg.wait_for_function(_DRAWN, arg=PAGES[0].title)
            switch: dict[str, float] = {}
            for visit in range(1 + rounds):
                for page in PAGES:
                    t = time.perf_counter()
                    pg.locator('[data-testid="stSidebarNav"] a').filter(has_text=page.label).first.click()
                    pg.wait_for_function(_DRAWN, arg=page.title)
                    if page.file.endswith("_Attention.py"):  # circuitsvis renders its React view in the iframe
                        frame = pg.frame_locator('[data-testid="stCustomComponentV1"], [data-testid="stIFrame"]').first
                        frame.locator("canvas").first.wait_for(state="visible")  # the default view: L0H0
                    if visit:
                        switch[page.label] = max(switch.get(page.label, 0.0), time.perf_counter() - t)
            browser.close()
        return home, switch
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated zoo model names (default: every model in models/)")
    ap.add_argument("--n", type=int, default=64, help="sequences per probe (the dashboard's default)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes for Home's cold render")
    ap.add_argument("--rounds", type=int, default=2, help="warm visits of every page in the browser")
    ap.add_argument("--no-apptest", action="store_true", help="skip (a) and (b): the browser only")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    entries = [e for e in read_zoo(REPO / "models") if e.error is None]
    if args.models:
        by_name = {e.name: e for e in entries}
        entries = [by_name[w] for w in args.models.split(",") if w in by_name]  # in the order asked
    if not entries:
        raise SystemExit("no models to measure in models/")
    print(f"machine: {machine()}")
    print(f"zoo: {len(entries)} models ({', '.join(e.name for e in entries)}); {args.n} sequences per probe")

    if not args.no_apptest:
        apptest(entries, args)
    got = browser_times(entries[0].name, args.rounds)
    if got is None:
        print("\nbrowser: skipped (no /usr/bin/chromium or no Playwright; `make test-e2e` installs both)")
    else:
        home, switch = got
        worst = max(switch, key=switch.get)
        print(f"\nbrowser (Chromium), Home first render, server up: {home:.2f} s  ratio: {HOME_GOAL_S / home:.1f}x")
        print(f"browser page switch, already computed ({entries[0].name}, via the sidebar, slowest of {args.rounds} "
              f"rounds): max {switch[worst]:.3f} s ({worst}), median {statistics.median(switch.values()):.3f} s  "
              f"ratio: {SWITCH_GOAL_S / switch[worst]:.1f}x")
        print("  per page: " + ", ".join(f"{k} {v:.2f}" for k, v in switch.items()))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


def apptest(entries: list, args: argparse.Namespace) -> None:
    """(a) and (b): Home cold in fresh processes, then every page per model, first visit and warm."""
    colds = [home_cold() for _ in range(args.repeats)]
    home_total = statistics.median(c[0] for c in colds)
    home_run = statistics.median(c[1] for c in colds)
    print(f"\nHome, first render (fresh process, median of {args.repeats}): {home_total:.2f} s "
          f"(import Streamlit + script run; the run alone {home_run:.3f} s)")
    print(f"  ratio: {HOME_GOAL_S / home_total:.1f}x  (goal {HOME_GOAL_S:g} s)")

    os.environ["ICL_INTERP_ZOO"] = str(REPO / "models")
    first: dict[tuple[str, str], float] = {}
    again: dict[tuple[str, str], float] = {}
    for e in entries:
        for p in PAGES:
            first[(e.name, p.label)] = run_page(p.file, e.path, args.n)
        for p in PAGES:
            again[(e.name, p.label)] = run_page(p.file, e.path, args.n)
    worst = max(again, key=again.get)
    print(f"\nfirst visit per page (compute + cache): max {max(first.values()):.2f} s "
          f"({'/'.join(max(first, key=first.get))}), median {statistics.median(first.values()):.2f} s")
    print(f"page switch, already computed ({len(again)} page x model runs): max {again[worst]:.3f} s "
          f"({'/'.join(worst)}), median {statistics.median(again.values()):.3f} s")
    print(f"  ratio: {SWITCH_GOAL_S / again[worst]:.1f}x  (goal {SWITCH_GOAL_S:g} s, slowest page)")
    by_page = {p.label: max(v for (m, q), v in again.items() if q == p.label) for p in PAGES}
    print("  slowest switch per page: " + ", ".join(f"{k} {v:.3f}" for k, v in by_page.items()))


if __name__ == "__main__":
    main()
