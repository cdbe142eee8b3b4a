"""Weight snapshots along training: the log-spaced schedule, the files, loading one, and kill + resume."""
import json

import numpy as np
import pytest
import torch

import interp
from interp.checkpoint import load_checkpoint, read_tensors
from interp.cli import main
from interp.config import run_from_dict, same_run
from interp.spec import ModelSpec
from interp.tasks import LinearTask
from interp.train import TrainConfig, snapshot_steps, train

TASK = LinearTask(d_x=2)
SPEC = ModelSpec.for_task(TASK, 5, n_layers=1, d_model=16)
CFG = TrainConfig(steps=40, n_examples=5, batch_size=16, eval_every=10, checkpoint_every=10, warmup_steps=5,
                  keep_best=True, snapshots=8)
SCHEDULE = [1, 2, 4, 8, 13, 23, 40]


def with_(cfg: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig.from_dict(cfg.to_dict() | changes)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One uninterrupted run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("snap") / "m"
    train(TASK, SPEC, CFG, out=out, progress=False)
    return out


def entry(out) -> dict:
    return json.loads((out / "config.json").read_text())["snapshots"]


def files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "snapshots").iterdir())}


@pytest.mark.parametrize("steps, n, expected", [
    (40, 8, SCHEDULE),
    (100, 3, [1, 10, 100]),
    (10**6, 7, [1, 10, 100, 1000, 10000, 100000, 1000000]),
    (5, 20, [1, 2, 3, 4, 5]),  # deduplicated
    (7, 1, [7]),
    (7, 0, []),
])
def test_schedule_is_log_spaced_deduplicated_and_ends_at_the_last_step(steps, n, expected):
    assert snapshot_steps(TrainConfig(steps=steps, snapshots=n)) == expected


def test_default_schedule_has_about_twenty_steps_like_he_et_al():
    steps = snapshot_steps(TrainConfig(steps=20000))
    official = sorted({int(s) for s in np.logspace(0, np.log10(20000), num=20, dtype=int)} | {20000})
    assert steps == official and 15 <= len(steps) <= 20 and steps[0] == 1 and steps[-1] == 20000
    ratios = np.diff(np.log(steps[5:]))
    assert ratios.max() - ratios.min() < 0.05  # evenly spaced in log(step) once integer rounding stops mattering


@pytest.mark.parametrize("field, value", [("snapshot_dtype", "float64"), ("snapshots", -1), ("snapshots", 2.5)])
def test_bad_snapshot_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"'{field}' parameter of TrainConfig"):
        TrainConfig(**{field: value})


def test_snapshots_are_described_in_config_json_and_it_still_loads_as_a_run(run):
    config = json.loads((run / "config.json").read_text())
    snaps, best = config["snapshots"], config["train"]["best_step"]
    assert snaps["dtype"] == "float32" and snaps["best_ood_step"] == best
    assert snaps["steps"] == sorted(set(SCHEDULE) | {best})
    assert snaps["files"] == {str(s): f"snapshots/step-{s:08d}.safetensors" for s in snaps["steps"]}
    assert sorted(files(run)) == sorted(f"step-{s:08d}.safetensors" for s in snaps["steps"])
    assert same_run(run_from_dict(config), run_from_dict({"task": config["task"], "model": {"n_layers": 1, "d_model": 16},
                                                          "train": CFG.to_dict()}))
    assert not [p for p in [*run.parent.iterdir(), *(run / "snapshots").iterdir()] if p.name.startswith(".")]


def test_superseded_best_snapshots_are_pruned(run):
    """Every new best OOD score takes a snapshot; an earlier best off the schedule is dropped."""
    metrics = load_checkpoint(run).metrics
    bests = [m["step"] for i, m in enumerate(metrics) if all(m["ood_error"] < p["ood_error"] for p in metrics[:i])]
    assert len(bests) > 1  # there was something to prune
    assert set(entry(run)["steps"]) - set(SCHEDULE) == {bests[-1]} - set(SCHEDULE)


@pytest.mark.parametrize("step", [8, 23])
def test_a_snapshot_holds_the_model_exactly_as_it_was_at_that_step(run, step):
    then = train(TASK, SPEC, CFG, progress=False, stop_after=step).model.state_dict()  # same seed, stopped there
    loaded = interp.load(run, step=step)
    assert loaded.step == step
    state = loaded.model.state_dict()
    assert state.keys() == then.keys() and all(torch.equal(state[k], then[k]) for k in then)
    raw = read_tensors(run / "snapshots" / f"step-{step:08d}.safetensors")
    assert all(torch.equal(raw[k], then[k]) for k in then)


def test_the_last_and_best_snapshots_equal_the_saved_weights(run):
    best = load_checkpoint(run).train["best_step"]
    assert entry(run)["best_ood_step"] == best
    for step, weights in [(40, "last.safetensors"), (best, "weights.safetensors")]:  # keep_best: weights = best
        saved, snap = read_tensors(run / weights), read_tensors(run / entry(run)["files"][str(step)])
        assert saved.keys() == snap.keys() and all(torch.equal(saved[k], snap[k]) for k in saved)


def test_a_step_without_a_snapshot_is_a_value_error_listing_the_steps(run, capsys):
    with pytest.raises(ValueError, match=r"step 3 has no snapshot .*available steps: 1, 2, 4, 8"):
        interp.load(run, step=3)
    assert main(["info", "--ckpt", str(run), "--step", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "step 3" in err
    assert main(["info", "--ckpt", str(run), "--step", "8"]) == 0
    assert "(loaded: step 8)" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_snapshots_are_the_float32_ones_cast(run, dtype, tmp_path):
    train(TASK, SPEC, with_(CFG, snapshot_dtype=dtype), out=tmp_path / "h", progress=False)
    assert entry(tmp_path / "h")["steps"] == entry(run)["steps"] and entry(tmp_path / "h")["dtype"] == dtype
    params = {name for name, _ in SPEC.build().named_parameters()}
    for step in (8, 40):
        full = read_tensors(run / entry(run)["files"][str(step)])
        half = read_tensors(tmp_path / "h" / entry(tmp_path / "h")["files"][str(step)])
        for k, v in full.items():  # parameters cast, buffers (masks, IGNORE = -1e5) exact
            assert torch.equal(half[k], v.to(getattr(torch, dtype)) if k in params else v)
        loaded = interp.load(tmp_path / "h", step=step).model.state_dict()
        assert all(v.dtype == full[k].dtype and torch.equal(v, half[k].to(v.dtype)) for k, v in loaded.items())


def test_kill_and_resume_gives_byte_identical_snapshots(run, tmp_path):
    out = tmp_path / "b"
    # "kill" after step 25: the last save is from step 20; the snapshot at 23 is lost with steps 21-25
    train(TASK, SPEC, CFG, out=out, progress=False, stop_after=25)
    best_so_far = min(load_checkpoint(out).metrics, key=lambda m: m["ood_error"])["step"]  # evaluations at 10, 20
    assert entry(out)["steps"] == sorted({s for s in SCHEDULE if s <= 20} | {best_so_far})
    before = files(out)
    assert sorted(before) == sorted(f"step-{s:08d}.safetensors" for s in entry(out)["steps"])
    kept = {name: (out / "snapshots" / name).stat().st_ino for name in before if int(name[5:13]) in SCHEDULE}
    train(TASK, SPEC, CFG, out=out, progress=False)
    assert files(out) == files(run) and entry(out) == entry(run)
    # the snapshots written before the kill were carried over, not written again
    assert {name: (out / "snapshots" / name).stat().st_ino for name in kept} == kept


def test_early_stopping_keeps_the_last_step_and_zero_disables(tmp_path):
    cfg = with_(CFG, steps=200, eval_every=20, checkpoint_every=50, patience=1, lr=1e-1)
    ckpt = train(TASK, SPEC, cfg, out=tmp_path / "e", progress=False)
    done = ckpt.train["steps_done"]
    assert done < 200 and done in entry(tmp_path / "e")["steps"]
    ckpt = train(TASK, SPEC, with_(CFG, snapshots=0), out=tmp_path / "z", progress=False)
    assert not (tmp_path / "z" / "snapshots").exists()
    assert "snapshots" not in json.loads((tmp_path / "z" / "config.json").read_text())
    with pytest.raises(ValueError, match="available steps: none"):
        load_checkpoint(tmp_path / "z", step=40)
