"""Dashboard latency on the shipped zoo: first render of Home, and switching to a page already computed.

    python bench/dashboard.py [--models linear-d5,modular-p7] [--n 64] [--repeats 3]

Goals (issue 7): Home's first render under 5 s; switching to an already-computed page under 1 s.

(a) Home, cold: a fresh Python process imports Streamlit and runs app/Home.py once under
    ``streamlit.testing.v1.AppTest`` (the script run a browser's first visit triggers, zoo read included); timed
    from process start to the end of the run, median of ``--repeats`` processes. The run alone is printed beside it.
(b) Page switch, warm: in one process, every page is run once per zoo model (the first visit: models load,
    probes compute and land in st.cache_resource / st.cache_data), then run again as a new session, which is
    what a browser's page switch is; the second run is timed. Reported: the slowest page over all models, and
    the median.
AppTest runs the script as the server does but sends no websocket messages and draws nothing, so a browser adds
its own rendering time (plotly, and circuitsvis's 1.3 MB bundle on Attention) on top of these numbers.
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
sys.path.insert(0, str(APP))

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
    out = subprocess.run([sys.executable, "-c", _COLD, repr(t0), str(APP / "Home.py")], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "ICL_INTERP_ZOO": str(REPO / "models")})
    if out.returncode != 0:
        raise SystemExit(f"Home failed:\n{out.stderr[-2000:]}")
    total, run = map(float, out.stdout.split()[-2:])
    return total, run


def run_page(script: Path, ckpt: Path, n: int) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(script), default_timeout=600)
    at.session_state["ckpt_path"] = str(ckpt)
    at.session_state["n_sequences"] = n
    t = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t
    if at.exception:
        raise SystemExit(f"{script.name} on {ckpt.name}: {at.exception[0].message}")
    return dt


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated zoo model names (default: every model in models/)")
    ap.add_argument("--n", type=int, default=64, help="sequences per probe (the dashboard's default)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes for Home's cold render")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    entries = [e for e in read_zoo(REPO / "models") if e.error is None]
    if args.models:
        wanted = args.models.split(",")
        entries = [e for e in entries if e.name in wanted]
    if not entries:
        raise SystemExit("no models to measure in models/")
    print(f"machine: {machine()}")
    print(f"zoo: {len(entries)} models ({', '.join(e.name for e in entries)}); {args.n} sequences per probe")

    colds = [home_cold() for _ in range(args.repeats)]
    home_total = statistics.median(c[0] for c in colds)
    home_run = statistics.median(c[1] for c in colds)
    print(f"\nHome, first render (fresh process, median of {args.repeats}): {home_total:.2f} s "
          f"(import Streamlit + script run; the run alone {home_run:.3f} s)")
    print(f"  ratio: {HOME_GOAL_S / home_total:.1f}x  (goal {HOME_GOAL_S:g} s)")

    os.environ["ICL_INTERP_ZOO"] = str(REPO / "models")
    pages = [APP / "Home.py", *sorted((APP / "pages").glob("[0-9]_*.py"))]
    first: dict[tuple[str, str], float] = {}
    again: dict[tuple[str, str], float] = {}
    for e in entries:
        for p in pages:
            first[(e.name, p.stem)] = run_page(p, e.path, args.n)
        for p in pages:
            again[(e.name, p.stem)] = run_page(p, e.path, args.n)
    worst = max(again, key=again.get)
    print(f"\nfirst visit per page (compute + cache): max {max(first.values()):.2f} s "
          f"({'/'.join(max(first, key=first.get))}), median {statistics.median(first.values()):.2f} s")
    print(f"page switch, already computed ({len(again)} page x model runs): max {again[worst]:.3f} s "
          f"({'/'.join(worst)}), median {statistics.median(again.values()):.3f} s")
    print(f"  ratio: {SWITCH_GOAL_S / again[worst]:.1f}x  (goal {SWITCH_GOAL_S:g} s, slowest page)")
    by_page = {p.stem: max(v for (m, q), v in again.items() if q == p.stem) for p in pages}
    print("  slowest switch per page: " + ", ".join(f"{k} {v:.3f}" for k, v in by_page.items()))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
