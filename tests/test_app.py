"""The dashboard: the zoo reader, and every page run under Streamlit's AppTest through the entry script
(app/dashboard.py: the navigation and the page frame), as a browser's visit runs it.

Pages run on tiny checkpoints trained here (one per task family, plus an attention-only and a no-LN variant) and
on every checkpoint in models/ at test time. Content checks compare what a page draws with the API's own numbers.

Over 400 lines on purpose: one tiny zoo is trained once for every page's tests (a module-scoped fixture).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1] / "app"
ENTRY = APP_DIR / "dashboard.py"
VIEWS = APP_DIR / "views"
sys.path.insert(0, str(APP_DIR))

from zoo import DEFAULT_ZOO, read_metrics, read_sweeps, read_zoo, score_keys, sweep_rows, zoo_rows  # noqa: E402


def shown_as(value, spec: str = ".3g") -> str:
    """How the Saturation page writes a boundary number: "—" where it could not be read (NaN)."""
    return "—" if value != value else format(value, spec)

CONFIG = {
    "format_version": 1,
    "task": {"name": "linear", "d": 4},
    "model": {"n_layers": 2, "n_heads": 2, "d_model": 32, "attn_only": True,
              "normalization": "LN", "scoring": "softmax"},
    "train": {"steps": 500},
}
HOME = "0_Home.py"
PAGES = sorted(p.name for p in VIEWS.glob("[1-9]_*.py"))  # every page but Home
N = 16  # sequences per probe in the tests
TIMEOUT = 120


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """A zoo with one good model, one corrupt config, and one folder that is not a model."""
    good = tmp_path / "linear-tiny"
    good.mkdir()
    (good / "config.json").write_text(json.dumps(CONFIG))
    (good / "metrics.jsonl").write_text(
        json.dumps({"step": 100, "train_loss": 0.5, "id_error": 0.4}) + "\n"
        + json.dumps({"step": 500, "train_loss": 0.1, "id_error": 0.05, "ood_error": 0.3}) + "\n"
        + '{"step": 6'  # a half-written line from a run still going
    )
    (good / "CARD.md").write_text("# linear-tiny\n\nA two-layer attention-only model.\n")
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    return tmp_path


def test_read_zoo(zoo: Path) -> None:
    entries = read_zoo(zoo)
    assert [e.name for e in entries] == ["broken", "linear-tiny"]
    broken, good = entries
    assert broken.error is not None and "config.json" in broken.error
    assert good.error is None
    assert good.task == "linear"
    assert good.spec == CONFIG["model"]
    assert good.steps == 500
    assert good.last_metrics == {"step": 500, "train_loss": 0.1, "id_error": 0.05, "ood_error": 0.3}
    assert good.card is not None and "attention-only" in good.card

    rows = {r["model"]: r for r in zoo_rows(entries)}
    assert rows["linear-tiny"]["n_layers"] == 2
    assert rows["linear-tiny"]["last ood_error"] == 0.3
    assert rows["linear-tiny"]["status"] == "ok"
    assert rows["broken"]["status"].startswith("⚠")
    assert [r["step"] for r in read_metrics(zoo / "linear-tiny" / "metrics.jsonl")] == [100, 500]


def test_zoo_rows_show_new_score_keys() -> None:
    """Scores a newer training loop logs (id_train_acc, ...) get columns without a code change; losses do not."""
    from zoo import ModelEntry

    last = {"step": 9, "lr": 0.1, "train_loss": 1.0, "id_train_acc": 1.0, "ood_test_acc": 0.4, "ood_loss": 2.0}
    assert score_keys(last) == ["id_train_acc", "ood_test_acc"]
    row = zoo_rows([ModelEntry(name="m", path=Path("m"), last_metrics=last)])[0]
    assert row["last id_train_acc"] == 1.0 and row["last ood_test_acc"] == 0.4
    assert "last ood_loss" not in row


def test_read_zoo_missing_or_empty(tmp_path: Path) -> None:
    assert read_zoo(tmp_path / "nope") == []
    assert read_zoo(tmp_path) == []


def test_read_zoo_env_var(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_INTERP_ZOO", str(zoo))
    assert [e.name for e in read_zoo()] == ["broken", "linear-tiny"]


def test_navigation_lists_every_view() -> None:
    """common.PAGES is the navigation: every file under app/views is in it once, with its file's page name as URL
    path (what a bookmark of the old pages/ folder and AppTest.switch_page before a first run both use)."""
    from streamlit.source_util import page_icon_and_name  # how Streamlit names a page after its file

    from common import PAGES as TABLE

    assert sorted(Path(p.file).name for p in TABLE) == sorted([HOME, *PAGES])
    assert [p.url for p in TABLE] == [page_icon_and_name(VIEWS / Path(p.file).name)[1] for p in TABLE]
    assert TABLE[0].file == f"views/{HOME}" and TABLE[0].needs == "nothing"


def _run_home():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT).run()


def test_home_page_lists_models(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_INTERP_ZOO", str(zoo))
    at = _run_home()
    assert not at.exception
    assert at.title[0].value == "icl-interp"
    table = at.dataframe[0].value
    assert "linear-tiny" in set(table["model"])
    assert any("broken" in w.value for w in at.warning)
    assert any("linear-tiny" in ex.label for ex in at.expander)


def test_home_page_empty_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_INTERP_ZOO", str(tmp_path / "empty"))
    at = _run_home()
    assert not at.exception
    assert any("interp train --task linear" in i.value for i in at.info)


# --- tiny checkpoints, one per task family --------------------------------------------------------------

SWEEP = {
    "name": "phase-tiny", "config": "configs/modular_phase.yaml",
    "axes": {"task.n_tasks": [4, 8], "task.pair_fraction": [0.6, 1.0], "model.n_layers": [1, 2], "train.seed": [0]},
    "cells": [
        {"name": f"n_tasks={n},pair_fraction={a},n_layers={d},seed=0",
         "params": {"task.n_tasks": n, "task.pair_fraction": a, "model.n_layers": d, "train.seed": 0},
         "status": "done", "phase": phase, "ood_acc_last_shot": acc,
         "final": {"id_train_acc": 1.0, "id_test_acc": 0.9, "ood_train_acc": acc, "ood_test_acc": acc},
         "kinds": {"ood_test_acc_regression_last": acc / 2, "ood_test_n_regression_last": 40},
         "curve": {"step": [0, 10, 20], "ood_test_acc": [0.1, acc / 2, acc]}}
        for (n, a, d, phase, acc) in [
            (4, 0.6, 1, "id_memorization", 0.1), (4, 1.0, 1, "id_generalization", 0.2),
            (8, 0.6, 1, "ood_memorization", 0.3), (8, 1.0, 1, "ood_generalization", 0.8),
            (8, 1.0, 2, "ood_generalization", 0.9)]
    ] + [{"name": "still running", "params": {"task.n_tasks": 4}, "status": "running"}],  # keys missing: tolerated
}


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models of every task kind (a few training steps each), a no-LN twin, a broken folder and a sweep."""
    import interp

    root = tmp_path_factory.mktemp("zoo")
    small = {"steps": 12, "n_layers": 1, "n_heads": 2, "d_model": 16, "batch_size": 16, "eval_every": 6,
             "eval_size": 32, "warmup_steps": 2, "progress": False}
    interp.train("modular", out=root / "mod", n_examples=5, task_args={"p": 5, "n_tasks": 8}, act_fn="relu",
                 **{**small, "n_layers": 2})
    interp.train("modular", out=root / "mod-attnonly", n_examples=4, task_args={"p": 5, "n_tasks": 8}, attn_only=True,
                 **small)
    interp.train("linear", out=root / "lin", n_examples=6, task_args={"d_x": 2}, **small)
    interp.train("linear", out=root / "lin-noln", n_examples=6, task_args={"d_x": 2}, normalization="none", **small)
    interp.train("polynomial", out=root / "poly", n_examples=6, **small)
    interp.train("kernel", out=root / "kern", n_examples=6, attn_only=True, **small)
    interp.train("kernel", out=root / "cheng", n_examples=6, task_args={"d_x": 3, "layout": "paired"}, layer="cheng2024",
                 attn_only=True, normalization="none", positional="none", mask="context", scoring="exp,linear",
                 **{**small, "n_layers": 2, "d_model": 4, "lr": 0.1, "layer_clip": 1e-8, "resample_every": 2,
                    "checkpoint_every": 6})
    interp.train("complex-zeros", out=root / "cz", n_examples=6, **small)
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    (root / "phase-tiny").mkdir()
    (root / "phase-tiny" / "sweep.json").write_text(json.dumps(SWEEP))
    return root


def run_page(page: str, ckpt: str | Path | None, zoo_root: Path | None = None, n: int = N, **state):
    """Run one page (file name under app/views) in the frame, with the checkpoint chosen and small probes."""
    import os

    from streamlit.testing.v1 import AppTest

    if zoo_root is not None:
        os.environ["ICL_INTERP_ZOO"] = str(zoo_root)
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    at.session_state["ckpt_path"] = None if ckpt is None else str(ckpt)
    at.session_state["n_sequences"] = n
    for k, v in state.items():
        at.session_state[k] = v
    # the url paths are the file names' (common.PAGES), so a page is found before the first run
    return at.switch_page(f"views/{page}").run()


@pytest.fixture
def use_zoo(monkeypatch: pytest.MonkeyPatch):
    def use(root: Path) -> Path:
        monkeypatch.setenv("ICL_INTERP_ZOO", str(root))
        return root
    return use


def decode(value):
    """Plotly's JSON with its base64 typed arrays ({"dtype", "bdata", "shape"}) turned back into lists."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if "shape" in value:
                arr = arr.reshape([int(n) for n in str(value["shape"]).split(",")])
            return arr.tolist()
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def charts(at) -> list[dict]:
    """The plotly figures a page drew, as dicts (data, layout)."""
    return [decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart")]


def chart(at, title_part: str) -> dict:
    found = [f for f in charts(at) if title_part in json.dumps(f.get("layout", {}).get("title", ""))]
    assert found, f"no chart titled like {title_part!r}: {[f.get('layout', {}).get('title') for f in charts(at)]}"
    return found[0]


def clean(at) -> None:
    """No exception box and no error message on the page."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def close(a, b, tol: float = 1e-5) -> bool:
    import math

    flat_a = [x for row in a for x in (row if isinstance(row, list) else [row])]
    flat_b = [x for row in b for x in (row if isinstance(row, list) else [row])]
    return len(flat_a) == len(flat_b) and all(
        (x is None and (y is None or math.isnan(y))) or (y is None and x is None) or
        (x is not None and y is not None and abs(x - y) <= tol * (1 + abs(y))) for x, y in zip(flat_a, flat_b))


# every task kind; the attention-only and no-LN twins run their pages in the MLP and Saturation tests below
TINY = ["mod", "lin", "poly", "kern", "cheng", "cz"]


@pytest.mark.parametrize("name", TINY)
def test_every_page_on_tiny_models(tiny_zoo: Path, use_zoo, name: str) -> None:
    use_zoo(tiny_zoo)
    for page in [HOME, *PAGES]:
        at = run_page(page, tiny_zoo / name)
        clean(at)


def test_bad_path_shows_a_message_on_every_page(tiny_zoo: Path, use_zoo, tmp_path: Path) -> None:
    use_zoo(tiny_zoo)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps({"format_version": 99}))
    cases = [(page, tmp_path / "missing") for page in PAGES]
    cases += [("1_Zoo.py", corrupt), ("2_Training.py", corrupt), ("5_Patching.py", tiny_zoo / "broken")]
    for page, bad in cases:
        at = run_page(page, bad)
        assert not at.exception, (page, [e.message for e in at.exception])
        assert at.error, f"{page} shows no error for {bad}"
        assert all("Traceback" not in e.value for e in at.error)


def test_zoo_page(tiny_zoo: Path, use_zoo) -> None:
    use_zoo(tiny_zoo)
    at = run_page("1_Zoo.py", tiny_zoo / "mod")
    clean(at)
    table = at.dataframe[0].value
    assert {"mod", "lin", "cz"} <= set(table["model"])
    assert any("broken" in w.value for w in at.warning)
    assert any("modular" in m.value and "p=5" in m.value for m in at.markdown)
    assert {m.label for m in at.metric} >= {"id_acc", "ood_acc"}
    # typing a path on the page opens it
    at.text_input(key="_zoo_open").input(str(tiny_zoo / "lin")).run()
    clean(at)
    assert at.session_state["ckpt_path"] == str(tiny_zoo / "lin")
    assert {m.label for m in at.metric} >= {"id_error", "ood_error"}


def test_model_choice_carries_over(tiny_zoo: Path, use_zoo) -> None:
    """The sidebar's model is session state: chosen on one page, it is the model of the next."""
    use_zoo(tiny_zoo)
    at = run_page(HOME, None)
    at.switch_page("views/1_Zoo.py").run()
    at.sidebar.selectbox(key="_w_model").select("poly").run()
    assert at.session_state["ckpt_path"] == str(tiny_zoo / "poly")
    at.switch_page("views/3_ICL_curves.py").run()
    clean(at)
    assert at.sidebar.selectbox(key="_w_model").value == "poly"
    assert any("polynomial" in m.value for m in at.markdown)


def test_training_page_curves_and_sweep(tiny_zoo: Path, use_zoo) -> None:
    use_zoo(tiny_zoo)
    at = run_page("2_Training.py", tiny_zoo / "mod")
    clean(at)
    fig = chart(at, "training curves")
    names = {t["name"] for t in fig["data"]}
    logged = {k for r in read_metrics(tiny_zoo / "mod" / "metrics.jsonl") for k in r if k != "step"}
    assert names == logged  # every numeric key, none invented
    # the sweep: phase diagram at the deepest depth pooled over seeds, OOD vs depth and vs steps
    phase = chart(at, "phase diagram")
    assert phase["data"][0]["text"] == [["ood_generalization"]]  # depth 2 has one cell: n_id 8, α 1.0
    at.select_slider[0].set_value(1).run()
    phase = chart(at, "phase diagram")  # one figure: phase, OOD accuracy, OOD regression-only accuracy
    assert [t["name"] for t in phase["data"]] == ["phase", "OOD accuracy (mean over seeds)",
                                                 "OOD regression-only accuracy, last quarter of the shots"]
    assert phase["data"][0]["text"] == [["id_memorization", "id_generalization"], ["ood_memorization", "ood_generalization"]]
    assert phase["data"][1]["z"] == [[0.1, 0.2], [0.3, 0.8]]
    assert phase["data"][2]["z"] == [[0.05, 0.1], [0.15, 0.4]]  # the checkpoints' kinds
    ood = chart(at, "against depth and against steps")  # one figure: depth on the left, steps on the right
    depth = [t for t in ood["data"] if t.get("xaxis", "x") == "x"]
    assert any(t["name"] == "n_id=8, α=1.0" and t["y"] == [0.8, 0.9] for t in depth)
    assert len([t for t in ood["data"] if t.get("xaxis") == "x2"]) == 5
    assert len(charts(at)) == 3  # the training curves, the phase diagram, the OOD curves
    assert len(sweep_rows(SWEEP)) == 6 and read_sweeps(tiny_zoo) == [tiny_zoo / "phase-tiny" / "sweep.json"]


def test_icl_curves_page_matches_evaluate(tiny_zoo: Path, use_zoo) -> None:
    import interp

    use_zoo(tiny_zoo)
    at = run_page("3_ICL_curves.py", tiny_zoo / "lin")
    clean(at)
    ev = interp.evaluate(interp.load(tiny_zoo / "lin"), n=N, seed=0)
    fig = chart(at, "vs number of examples")
    drawn = {(t["name"], t.get("xaxis", "x")): t["y"] for t in fig["data"]}
    assert close(drawn[("model", "x")], ev.curve("id", "model").mean)
    assert fig["layout"]["yaxis"]["title"]["text"] == ev.label == "squared error / d (d = 2)"  # the metric, by name
    bars = next(t for t in fig["data"] if (t["name"], t.get("xaxis", "x")) == ("model", "x"))["error_y"]["array"]
    assert close(bars, ev.curve("id", "model").ci95)
    assert close(drawn[("least_squares", "x2")], ev.curve("ood", "least_squares").mean)
    scale = chart(at, "extrapolation")
    assert {"model", "zero"} <= {t["name"] for t in scale["data"]}
    assert any(s.get("type") == "rect" for s in scale["layout"].get("shapes", []))  # training range shaded
    sat = interp.saturation(interp.load(tiny_zoo / "lin"), n=N, seed=0)  # the page sweeps as the probe does by default
    md = sat.metadata
    marked = sorted(a["text"] for a in scale["layout"].get("annotations", []) if "B" in (a.get("text") or "").split(" = ")[0])
    assert marked == sorted(f"{name} = {abs(md[k]):.3g}" for name, k in (("B+", "boundary_plus"), ("|B−|", "boundary_minus"))
                            if md[k] == md[k] and md[k] != 0)
    at = run_page("3_ICL_curves.py", tiny_zoo / "mod")
    clean(at)
    assert any("classification" in i.value for i in at.info)
    # modular: the model's accuracy by kind of query, per split, as interp.evaluate computes it (gaps: no query)
    ev = interp.evaluate(interp.load(tiny_zoo / "mod"), n=N, seed=0)
    kinds = chart(at, "by kind of query")
    drawn = {(t["name"], t.get("xaxis", "x")): t["y"] for t in kinds["data"]}
    assert len(drawn) == 2 * 4  # ID and OOD (no pairs held out) x every query and the three kinds
    assert close(drawn[("regression-only", "x2")], ev.kind_curve("ood", "regression").mean)
    assert close(drawn[("all queries", "x")], ev.kind_curve("id", "all").mean)


def test_attention_page_is_offline_circuitsvis(tiny_zoo: Path, use_zoo) -> None:
    import interp

    use_zoo(tiny_zoo)
    at = run_page("4_Attention.py", tiny_zoo / "mod")
    clean(at)
    frames = [e for e in at.get("iframe")] + [e for e in at.get("html")]
    html = "".join(getattr(e.proto, "srcdoc", "") or getattr(e.proto, "body", "") for e in frames)
    assert "CircuitsVis" in html and "unpkg.com" not in html and "cdn.jsdelivr" not in html
    assert "query" in html and "x0=" in html  # tokens labelled by role
    assert "CircuitsVis.AttentionPattern" in html and "CircuitsVis.AttentionHeads" not in html  # L0H0 by default
    at.selectbox(key="_w_attn_head").set_value("all heads").run()
    clean(at)
    every = "".join(getattr(e.proto, "srcdoc", "") or getattr(e.proto, "body", "") for e in [*at.get("iframe"), *at.get("html")])
    assert "CircuitsVis.AttentionHeads" in every and '"L0H1"' in every  # every head of layer 0, named
    ht = interp.attribute(interp.load(tiny_zoo / "mod"), method="head_types", corruption=None, n=N, seed=0)
    fig = chart(at, "head type")
    assert close(fig["data"][0]["z"], ht.scores[:, :, 0].tolist())


@pytest.mark.parametrize("name, site, by", [("mod", "resid_pre", "layer_pos"), ("lin", "z", "head")])
def test_patching_heatmap_equals_interp_patch(tiny_zoo: Path, use_zoo, name: str, site: str, by: str) -> None:
    import interp

    use_zoo(tiny_zoo)
    metric = "prob" if name == "mod" else "squared_error_over_d"
    at = run_page("5_Patching.py", tiny_zoo / name, patch_site=site, patch_by=by, metric=metric)
    clean(at)
    r = interp.patch(interp.load(tiny_zoo / name), site=site, by=by, corruption="params", metric=metric, n=N, seed=0)
    fig = chart(at, f"patching {site}")
    assert close(fig["data"][0]["z"], r.scores.tolist())
    # the cell picker (the click fallback) shows that component's per-example spread
    picker = at.selectbox(key="_w_patch_cell")
    last = picker.options[-1]
    picker.select(last).run()
    clean(at)
    hist = chart(at, "per-example")
    idx = (len(r.scores) - 1, r.scores.shape[1] - 1)
    assert close(hist["data"][0]["x"], r.per_example[:, idx[0], idx[1]].tolist())
    downloads = at.get("download_button")
    assert len(downloads) == 2


def test_patching_click_selects_the_cell(tiny_zoo: Path, use_zoo) -> None:
    """A plotly selection event on the heatmap picks the cell (what a click in the browser sends)."""
    use_zoo(tiny_zoo)
    at = run_page("5_Patching.py", tiny_zoo / "lin", patch_site="resid_pre", patch_by="layer_pos")
    clean(at)
    event = {"selection": {"points": [{"x": "x1", "y": "L0", "curve_number": 0}], "point_indices": [], "box": [], "lasso": []}}
    chart_el = at.get("plotly_chart")[0]
    states = at._tree.get_widget_states()  # AppTest has no plotly API: send what the frontend would
    state = states.widgets.add()
    state.id = chart_el.proto.id
    state.string_value = json.dumps(event)
    at._run(widget_state=states)
    clean(at)
    assert at.session_state["patch_cell"] == "layer L0 · pos x1"


def test_heads_page_matches_attribute(tiny_zoo: Path, use_zoo) -> None:
    import interp

    use_zoo(tiny_zoo)
    at = run_page("6_Heads.py", tiny_zoo / "mod")
    clean(at)
    m = interp.load(tiny_zoo / "mod")
    dla = interp.attribute(m, method="dla", corruption="params", n=N, seed=0)
    assert close(chart(at, "direct attribution")["data"][0]["z"], dla.scores.tolist())
    att = interp.attribute(m, method="attrib", metric="logit_diff", n=N, seed=0, compare_exact=False)
    assert close(chart(at, "attribution patching")["data"][0]["z"], att.scores.tolist())
    scatter = chart(at, "Pearson")
    assert close(scatter["data"][0]["y"], att.scores.flatten().tolist())


def test_mlp_page(tiny_zoo: Path, use_zoo) -> None:
    import interp

    use_zoo(tiny_zoo)
    at = run_page("7_MLP_and_algorithms.py", tiny_zoo / "mod")
    clean(at)
    res = interp.mlp(interp.load(tiny_zoo / "mod"), layer=0, seed=0)
    key = res.frequencies.metadata["key_frequencies"]
    assert any(c.value.startswith("key frequencies") and all(str(k) in c.value for k in key) for c in at.caption)
    assert close(chart(at, "circularity")["data"][0]["z"], res.circularity.scores.tolist())
    alg = interp.algorithms(interp.load(tiny_zoo / "mod"), seed=0)
    table = at.dataframe[-1].value
    assert list(table["shots"]) == alg.metadata["shots"]
    assert close(list(table["accuracy"]), alg.extras["accuracy"].tolist())
    at = run_page("7_MLP_and_algorithms.py", tiny_zoo / "mod-attnonly")
    clean(at)
    assert any("attention-only" in i.value for i in at.info)
    assert chart(at, "algorithm map")
    at = run_page("7_MLP_and_algorithms.py", tiny_zoo / "lin")
    clean(at)
    assert any("modular" in i.value for i in at.info)


def test_saturation_page_compares_variants(tiny_zoo: Path, use_zoo) -> None:
    import interp

    use_zoo(tiny_zoo)
    at = run_page("8_Saturation.py", tiny_zoo / "lin")
    clean(at)
    sat = interp.saturation(interp.load(tiny_zoo / "lin"), n=N, seed=0)
    shown = {m.label: m.value for m in at.metric}
    assert shown["B+"] == shown_as(sat.metadata["boundary_plus"])
    assert shown["B−"] == shown_as(sat.metadata["boundary_minus"])
    cmp = chart(at, "boundary per variant")
    assert {"lin", "lin-noln"} <= {t["name"].split(" (")[0] for t in cmp["data"]}
    # the comparison ran the reference on the very sequences of its own sweep: the same B± in the table
    table = at.dataframe[0].value.set_index("variant")
    assert table.loc["lin", "B+"] == sat.metadata["boundary_plus"] and table.loc["lin", "B−"] == sat.metadata["boundary_minus"]
    assert table.loc["lin-noln", "final-LN bound"] == "none"
    assert chart(at, "lin-noln")  # the variant's own mechanism panel, beside the reference's
    at = run_page("8_Saturation.py", tiny_zoo / "mod")
    clean(at)
    assert any("classification" in i.value for i in at.info)


@pytest.mark.parametrize("name, method", [("mod", "exact"), ("lin", "eap")])
def test_circuit_page_matches_interp_circuit(tiny_zoo: Path, use_zoo, name: str, method: str) -> None:
    """The faithfulness curve is interp.circuit's for the page's settings (CircuitSettings' defaults, the frame's n
    and seed); the graph draws one line per edge of the slider's top-k circuit, the very circuit faithfulness
    keeps; for an estimate, the scatter against exact and its correlation caption."""
    import interp
    from probes.settings import CircuitSettings

    use_zoo(tiny_zoo)
    at = run_page("9_Circuit.py", tiny_zoo / name, circuit_method=method)
    clean(at)
    c = interp.circuit(interp.load(tiny_zoo / name), method=method, n=N, seed=0)
    curve = chart(at, "faithfulness of the top-k")
    drawn = {t["name"]: t for t in curve["data"]}
    assert drawn["faithfulness"]["x"] == [int(k) for k in c.faithfulness.ticks("k")]
    assert close(drawn["faithfulness"]["y"], c.faithfulness.scores.tolist())
    assert close(drawn["completeness"]["y"], c.faithfulness.extras["completeness"].tolist())
    slider = at.slider(key="circuit_k")
    assert slider.value == min(CircuitSettings().top, c.edges.scores.numel())
    assert sum(t["mode"] == "lines" for t in chart(at, "circuit graph")["data"]) == slider.value
    slider.set_value(3).run()
    clean(at)
    lines = [t["name"] for t in chart(at, "circuit graph")["data"] if t["mode"] == "lines"]
    assert lines == c.faithfulness.metadata["circuit"][:3]  # largest effect first
    assert [s["x0"] for s in chart(at, "faithfulness of the top-k")["layout"]["shapes"]] == [3]  # k marked
    table = at.dataframe[0].value
    assert [f"{s} -> {r}" for s, r in zip(table["sender"], table["receiver"])] == lines
    assert close(list(table["score"]), [c.edges.scores[c.edges.ticks("edge").index(e)].item() for e in lines])
    at.sidebar.number_input(key="_w_circuit_top").set_value(7).run()  # a new `top`: the slider starts there
    clean(at)
    assert at.slider(key="circuit_k").value == 7 and 7 in chart(at, "faithfulness of the top-k")["data"][0]["x"]
    assert sum(t["mode"] == "lines" for t in chart(at, "circuit graph")["data"]) == 7
    if method == "exact":
        assert not [f for f in charts(at) if "against exact" in json.dumps(f["layout"].get("title", ""))]
        return
    scatter = chart(at, "against exact")
    assert close(scatter["data"][0]["x"], c.exact.scores.tolist()) and close(scatter["data"][0]["y"], c.edges.scores.tolist())
    corr = c.edges.metadata["exact_correlation"]
    assert any(f"Pearson {corr['pearson']:.3f} · Spearman {corr['spearman']:.3f}" in x.value for x in at.caption)


def test_circuit_page_bad_input_is_one_line(tiny_zoo: Path, use_zoo) -> None:
    """Settings the probe refuses (EAP needs a differentiable metric: accuracy is not) give an error line, no
    traceback and no charts."""
    use_zoo(tiny_zoo)
    at = run_page("9_Circuit.py", tiny_zoo / "mod", circuit_method="eap", metric="accuracy")
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.error) == 1 and at.error[0].value.startswith("circuit failed") and "Traceback" not in at.error[0].value
    assert not at.get("plotly_chart")


@pytest.mark.parametrize("field", ["coef", "input"])
def test_saturation_page_says_what_the_cli_says(tiny_zoo: Path, use_zoo, field: str, capsys) -> None:
    """complex-zeros: the coef sweep (root radius) takes the roots out of the training range, the input sweep does
    not; the page, `interp saturation` and the probe agree on B±, the fall-back and 'saturated' either way, and the
    training range is shaded on the target axis up to R± only."""
    from interp.cli import main

    use_zoo(tiny_zoo)
    at = run_page("8_Saturation.py", tiny_zoo / "cz", scale_field=field)
    clean(at)
    capsys.readouterr()
    assert main(["saturation", "--ckpt", str(tiny_zoo / "cz"), "--field", field, "--n", str(N), "--seed", "0"]) == 0
    import re

    # the metadata lines under the table, "  key: value" (a long note wraps onto lines of its own)
    printed = dict(m.groups() for line in capsys.readouterr().out.splitlines() if (m := re.match(r"  (\w+): (.*)$", line)))
    fmt = shown_as
    shown = {m.label: m.value for m in at.metric}
    assert shown["training range [R−, R+]"] == f"[{float(printed['range_minus']):.3g}, {float(printed['range_plus']):.3g}]"
    assert shown["B+"] == fmt(float(printed["boundary_plus"])) and shown["B−"] == fmt(float(printed["boundary_minus"]))
    assert shown["fall-back slope + / −"] == f"{fmt(float(printed['fallback_plus']), '.2g')} / {fmt(float(printed['fallback_minus']), '.2g')}"
    saturated = {"True": "yes", "False": "no"}.get(printed.get("saturated"), "—")  # None is not printed
    assert shown["saturated"] == saturated
    if field == "input":  # the roots do not move: nothing is read, and the page says so rather than "saturated yes"
        assert shown["B+"] == shown["B−"] == "—" and saturated == "—"
        assert any("not read" in i.value for i in at.info) and "not read" in printed["note"]
    else:
        assert shown["B+"] != "—" and shown["saturated"] in ("yes", "no")
    fig = chart(at, "saturation: ")
    rects = [s for s in fig["layout"]["shapes"] if s.get("type") == "rect" and s.get("xref") == "x"]
    lo, hi = float(printed["range_minus"]), float(printed["range_plus"])
    assert [(r["x0"], r["x1"]) for r in rects] == [(pytest.approx(lo), pytest.approx(hi))]
    axis = fig["layout"]["xaxis"]["range"]
    assert axis[0] < lo and hi < axis[1]  # the shading ends at R, inside the axis
    if field == "coef":
        assert axis[1] > 2 * hi  # targets reach well past the range


# --- the shipped zoo ------------------------------------------------------------------------------------

ZOO_MODELS = [e.name for e in read_zoo(DEFAULT_ZOO) if e.error is None]


@pytest.mark.parametrize("name", ZOO_MODELS or ["(empty zoo)"])
def test_every_page_on_zoo_model(name: str, use_zoo) -> None:
    path = DEFAULT_ZOO / name
    if not (path / "config.json").is_file() or not (path / "weights.safetensors").is_file():
        pytest.skip(f"{name} is not (or no longer) a whole checkpoint in models/")
    use_zoo(DEFAULT_ZOO)
    for page in PAGES:  # Home does not depend on the model
        at = run_page(page, path, n=8)
        clean(at)


def test_the_app_reaches_the_probes_only_through_interp_api():
    """DESIGN.md's arrows: app -> interp.api -> probes. No module of app/ imports probes; what a page shows
    beside a Result (option values, tables, figures) comes from interp.api, and each such name resolves to the
    probe's own object."""
    import ast
    import importlib

    import interp.api

    for path in APP_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "probes" or n.startswith("probes.") for n in names), f"{path.name} imports {names}"
    for name, module in interp.api.VIEWS.items():
        assert getattr(interp.api, name) is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        interp.api.nonsense  # noqa: B018
