"""The placeholder dashboard: the zoo reader, and Home.py run under Streamlit's AppTest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(APP_DIR))

from zoo import read_zoo, zoo_rows  # noqa: E402

CONFIG = {
    "format_version": 1,
    "task": {"name": "linear", "d": 4},
    "model": {"n_layers": 2, "n_heads": 2, "d_model": 32, "attn_only": True,
              "normalization": "LN", "scoring": "softmax"},
    "train": {"steps": 500},
}


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


def test_read_zoo_missing_or_empty(tmp_path: Path) -> None:
    assert read_zoo(tmp_path / "nope") == []
    assert read_zoo(tmp_path) == []


def test_read_zoo_env_var(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_INTERP_ZOO", str(zoo))
    assert [e.name for e in read_zoo()] == ["broken", "linear-tiny"]


def _run_home():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=30).run()


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
