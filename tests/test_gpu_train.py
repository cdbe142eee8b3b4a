"""scripts/gpu_train.py: the step budget fitted from measured times, and the float16 export that fits the device
tool's transfer (at most 8 files) and loads as the checkpoint it came from."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import interp
from interp.config import run_from_dict
from interp.tasks import LinearTask
from interp.spec import ModelSpec
from interp.train import TrainConfig, train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_train.py"
spec = importlib.util.spec_from_file_location("gpu_train", SCRIPT)
gpu_train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_train)

TASK = LinearTask(d_x=2)
SPEC = ModelSpec.for_task(TASK, 5, n_layers=1, d_model=16)
CFG = TrainConfig(steps=60, n_examples=5, batch_size=16, eval_every=10, checkpoint_every=10, warmup_steps=5,
                  keep_best=True, snapshots=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "m"
    train(TASK, SPEC, CFG, out=out, progress=False)
    return out


def test_plan_fits_the_budget_and_keeps_the_config_shares(monkeypatch):
    run = run_from_dict({"task": {"name": "linear", "d_x": 2}, "model": {"n_layers": 1, "d_model": 16},
                         "train": {"steps": 200000, "warmup_steps": 10000, "eval_every": 1000, "n_examples": 5}})
    # a run of n steps takes 2 s (build and one evaluation) plus 1/16 s a step (exact in binary)
    monkeypatch.setattr(gpu_train, "timed_run", lambda r, n: 2.0 + 0.0625 * n)
    cfg, timing = gpu_train.plan(run, 400.0)
    assert timing["step_s"] == 0.0625 and timing["overhead_s"] == 2.0
    n_evals = gpu_train.MAX_EVALS  # 200 in the config, capped
    expected = int((400.0 - (n_evals + 1) * 2.0) / 0.0625) // 100 * 100  # 5568 -> 5500
    assert cfg.steps == expected == 5500
    assert cfg.warmup_steps == round(10000 * expected / 200000)  # the official 5% of the run
    assert cfg.eval_every == expected // n_evals and cfg.checkpoint_every == expected // 10
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay) == (run.train.lr, run.train.batch_size, run.train.weight_decay)
    monkeypatch.setattr(gpu_train, "timed_run", lambda r, n: 2.0 + 10.0 * n)  # 10 s a step: 100 steps do not fit
    with pytest.raises(SystemExit, match="holds 34 steps at 10.000 s a step"):
        gpu_train.plan(run, 400.0)


def test_chosen_snapshots_take_the_best_and_the_last_first():
    entry = {"steps": [1, 2, 4, 8, 16, 32, 60], "best_ood_step": 16}
    assert gpu_train.chosen_snapshots(entry, 2) == [16, 60]
    picks = gpu_train.chosen_snapshots(entry, 4)
    assert len(picks) == 4 and {16, 60} <= set(picks) and picks == sorted(picks)
    assert gpu_train.chosen_snapshots(entry, 0) == []
    assert gpu_train.chosen_snapshots(entry, 99) == entry["steps"]


def test_export_is_float16_fits_the_transfer_and_loads(run, tmp_path):
    dest = tmp_path / "out" / "m"
    assert gpu_train.main(["export", str(run), str(dest), "--max-files", "6"]) == 0
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert len(files) <= 6
    config = json.loads((dest / "config.json").read_text())
    entry = config["snapshots"]
    assert entry["dtype"] == "float16" and len(entry["steps"]) == 3  # 6 files: config, metrics, weights + 3
    assert sorted(p.relative_to(dest).as_posix() for p in (dest / "snapshots").iterdir()) == sorted(entry["files"].values())
    best = json.loads((run / "config.json").read_text())["snapshots"]["best_ood_step"]
    assert entry["best_ood_step"] == best and best in entry["steps"]
    original, exported = interp.load(run), interp.load(dest)
    for (name, a), b in zip(original.model.state_dict().items(), exported.model.state_dict().values()):
        assert torch.equal(a.half().float(), b), name  # float16 rounding, nothing else
    step = entry["steps"][0]
    for a, b in zip(interp.load(run, step=step).model.state_dict().values(), interp.load(dest, step=step).model.state_dict().values()):
        assert torch.equal(a.half().float(), b)
    assert "float16" in config["purpose"] and "stopped before its last step" not in config["purpose"]


def test_export_of_a_stopped_run_says_so(tmp_path):
    out = tmp_path / "m"
    train(TASK, SPEC, CFG, out=out, progress=False, stop_after=25)  # a kill after the step-20 checkpoint
    dest = tmp_path / "e"
    assert gpu_train.main(["export", str(out), str(dest)]) == 0
    config = json.loads((dest / "config.json").read_text())
    assert "stopped before its last step" in config["purpose"]
    assert not (dest / "resume").exists()
    assert interp.load(dest).model is not None
    assert gpu_train.main(["export", str(tmp_path / "none"), str(tmp_path / "x")]) == 2
