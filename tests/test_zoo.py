"""Every shipped checkpoint loads, reproduces its card's headline on the card's seed, and matches its config."""
import json
import re
from pathlib import Path

import pytest

from interp import load
from interp.cards import measure
from interp.config import load_run, run_from_dict, same_run

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SHIPPED = sorted(p.parent.name for p in MODELS.glob("*/config.json"))
CONFIGS = {p.stem: p for p in ROOT.glob("configs/**/*.yaml")}


def test_the_zoo_is_small_and_every_model_has_a_card():
    assert SHIPPED, "no checkpoints in models/"
    size = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert size < 60e6, f"the zoo is {size / 1e6:.1f} MB; keep it under 60 MB"
    listed = (MODELS / "README.md").read_text()
    for name in SHIPPED:
        assert (MODELS / name / "CARD.md").is_file() and (MODELS / name / "card.json").is_file(), name
        assert f"[{name}]" in listed, f"{name} is missing from models/README.md"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_headline_matches_a_fresh_evaluation(name):
    ckpt = load(MODELS / name)
    card = json.loads((MODELS / name / "card.json").read_text())
    head = card["headline"]
    shown = re.search(r"\*\*Headline:\*\*.*= \*\*([-0-9.e+]+)\*\*", (MODELS / name / "CARD.md").read_text())
    assert shown and float(shown.group(1)) == pytest.approx(head["value"], rel=1e-3), "CARD.md and card.json disagree"
    fresh = measure(ckpt, head["metric"], n=head["n"], seed=head["seed"])
    assert fresh == pytest.approx(head["value"], rel=head["tolerance"]["rel"], abs=head["tolerance"]["abs"])


@pytest.mark.parametrize("name", SHIPPED)
def test_config_reproduces_the_checkpoint_spec(name):
    ckpt = load(MODELS / name)
    saved = run_from_dict(json.loads((MODELS / name / "config.json").read_text()))
    assert saved.spec == ckpt.spec and saved.task == ckpt.task
    config = CONFIGS.get(card_config(name))
    assert config is not None, f"no config file for {name}"
    assert same_run(load_run(config), saved), f"{config} no longer describes models/{name}"


def card_config(name: str) -> str:
    """The config file a model card names (``--config configs/.../<stem>.yaml``)."""
    made_by = re.search(r"--config configs/\S*?([^/\s]+)\.yaml", (MODELS / name / "CARD.md").read_text())
    return made_by.group(1) if made_by else name


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("cheng-")])
def test_cheng_models_are_the_restricted_layer_in_the_table(name):
    """A Cheng zoo model is the official restricted layer, and models/cheng/table.json holds its card's number."""
    ckpt = load(MODELS / name)
    assert ckpt.spec.layer == "cheng2024" and ckpt.spec.d_model == ckpt.task.d_x + 1
    head = json.loads((MODELS / name / "card.json").read_text())["headline"]
    cells = json.loads((MODELS / "cheng" / "table.json").read_text())["cells"]
    assert any(c["mse"] == head["value"] and c["layers"] == ckpt.spec.n_layers for c in cells)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("modular-p11")])
def test_modular_zoo_keeps_its_weight_snapshots(name):
    """The p = 11 modular zoo keeps its training history (about 20 log-spaced snapshots plus the best-OOD step),
    and a snapshot loads: the last one equals the shipped last-step weights cast to the snapshot's dtype."""
    config = json.loads((MODELS / name / "config.json").read_text())
    snaps = config["snapshots"]
    assert len(snaps["steps"]) >= 15 and snaps["best_ood_step"] in snaps["steps"]
    assert all((MODELS / name / f).is_file() for f in snaps["files"].values())
    first = load(MODELS / name, step=snaps["steps"][0])
    assert first.step == snaps["steps"][0]
    import torch

    best = config["train"]["weights"].startswith("best")
    step = snaps["best_ood_step"] if best else config["train"]["steps_done"]
    snapshot = load(MODELS / name, step=step).model
    shipped = load(MODELS / name).model.state_dict()
    params = {k for k, _ in snapshot.named_parameters()}  # parameters are stored in the snapshot dtype, buffers exactly
    for key, value in snapshot.state_dict().items():
        want = shipped[key].to(getattr(torch, snaps["dtype"])).to(value.dtype) if key in params else shipped[key]
        assert torch.equal(value, want), key


def test_the_readme_loads_snapshots_that_exist():
    """Every ``interp.load("models/<name>", step=N)`` in the README names a step that model has a snapshot at."""
    calls = re.findall(r'interp\.load\("models/([\w-]+)", step=(\d+)\)', (ROOT / "README.md").read_text())
    assert calls
    for name, step in calls:
        assert load(MODELS / name, step=int(step)).step == int(step)
