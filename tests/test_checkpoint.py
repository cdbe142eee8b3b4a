import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from interp.cli import main
from interp.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask
from interp.train import TrainConfig, train

SMALL = TrainConfig(steps=30, n_examples=5, batch_size=16, eval_every=10, checkpoint_every=10, warmup_steps=5)


@pytest.mark.parametrize("task", [LinearTask(d_x=3), ModularTask(p=5, n_tasks=6)], ids=lambda t: t.name)
def test_save_load_round_trip_is_bit_identical(task, tmp_path, gen):
    spec = ModelSpec.for_task(task, 5, n_layers=2, d_model=16, scoring="relu", positional="rotary")
    ckpt = train(task, spec, SMALL, out=tmp_path / "m", progress=False)
    loaded = load_checkpoint(tmp_path / "m")
    batch = task.sample(4, 5, gen())
    assert torch.equal(ckpt.model(batch.inputs), loaded.model(batch.inputs))
    assert loaded.spec == spec and loaded.task == task and loaded.metrics == ckpt.metrics
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "metrics.jsonl", "snapshots", "weights.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["format_version"] == 1


def saved(tmp_path):
    task = LinearTask(d_x=2)
    spec = ModelSpec.for_task(task, 4, n_layers=1, d_model=8)
    return save_checkpoint(tmp_path / "m", spec.build(), spec, task, {"steps": 0})


def test_corrupt_weights_give_clean_error(tmp_path):
    path = saved(tmp_path)
    (path / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_truncated_weights_give_clean_error(tmp_path):
    path = saved(tmp_path)
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_files_and_wrong_version(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
    path = saved(tmp_path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    path = saved(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["model"]["d_model"] = 16
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)


def test_failed_save_leaves_previous_checkpoint_whole(tmp_path):
    path = saved(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    task = LinearTask(d_x=2)
    spec = ModelSpec.for_task(task, 4, n_layers=1, d_model=8)
    with pytest.raises(TypeError):
        save_checkpoint(path, spec.build(), spec, task, {"bad": object()})  # not JSON-serialisable
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind


@pytest.mark.parametrize("task", [LinearTask(d_x=2), ModularTask(p=5, n_tasks=6)], ids=lambda t: t.name)
def test_kill_and_resume_matches_uninterrupted_run(task, tmp_path, gen):
    cfg = TrainConfig(steps=40, n_examples=5, batch_size=16, eval_every=10, checkpoint_every=10, warmup_steps=5,
                      keep_best=True)
    spec = ModelSpec.for_task(task, 5, n_layers=2, d_model=16)
    straight = train(task, spec, cfg, out=tmp_path / "a", progress=False)
    # "kill" after step 25: the last checkpoint on disk is from step 20, steps 21-25 are lost
    train(task, spec, cfg, out=tmp_path / "b", progress=False, stop_after=25)
    assert (tmp_path / "b" / "resume" / "state.json").is_file()
    resumed = train(task, spec, cfg, out=tmp_path / "b", progress=False)
    batch = task.sample(8, 5, gen())
    assert torch.equal(straight.model(batch.inputs), resumed.model(batch.inputs))
    assert straight.metrics == resumed.metrics
    assert not (tmp_path / "b" / "resume").exists()
    assert (tmp_path / "a" / "weights.safetensors").read_bytes() == (tmp_path / "b" / "weights.safetensors").read_bytes()


def test_resume_refuses_a_different_config(tmp_path):
    task = LinearTask(d_x=2)
    spec = ModelSpec.for_task(task, 5, n_layers=1, d_model=8)
    train(task, spec, SMALL, out=tmp_path / "m", progress=False, stop_after=15)
    with pytest.raises(CheckpointError, match="different config"):
        train(task, spec, SMALL.__class__(**(SMALL.to_dict() | {"lr": 0.5})), out=tmp_path / "m", progress=False)


def test_an_unfinished_run_saved_before_new_fields_existed_resumes(tmp_path):
    """A config.json written before fields were added (with defaults that change nothing) still resumes; one
    that differs in a field it does hold is still refused."""
    task = LinearTask(d_x=2)
    spec = ModelSpec.for_task(task, 5, n_layers=1, d_model=8)
    train(task, spec, SMALL, out=tmp_path / "m", progress=False, stop_after=15)
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    for key in ("warmup_start", "balanced_batches", "decay_norms_and_biases"):
        del config["train"][key]
    for key in ("tied_embed", "bias", "init"):
        del config["model"][key]
    path.write_text(json.dumps(config))
    resumed = train(task, spec, SMALL, out=tmp_path / "m", progress=False)
    assert resumed.train["steps_done"] == SMALL.steps
    train(task, spec, SMALL, out=tmp_path / "n", progress=False, stop_after=15)
    with pytest.raises(CheckpointError, match="different config"):
        train(task, spec, SMALL.__class__(**(SMALL.to_dict() | {"warmup_start": 0.5})), out=tmp_path / "n", progress=False)


def test_init_from_starts_at_the_last_step_weights(tmp_path, monkeypatch, capsys):
    """train.init_from loads the finished run's last-step weights (last.safetensors beside keep_best's best ones),
    not its best ones and not a fresh init: with the update step made a no-op the run ends on exactly them."""
    task = ModularTask(p=5, n_tasks=6)
    spec = ModelSpec.for_task(task, 5, n_layers=1, d_model=16)
    first = TrainConfig(steps=30, n_examples=5, batch_size=12, eval_every=5, checkpoint_every=10, warmup_steps=5, keep_best=True)
    done = train(task, spec, first, out=tmp_path / "a", progress=False)
    last = load_file(str(tmp_path / "a" / "last.safetensors"))
    assert done.train["best_step"] != 30  # so that the best and the last weights differ
    monkeypatch.setattr(sys.modules["interp.train"], "train_step", lambda *args: torch.tensor(0.0))
    cont = TrainConfig(**(first.to_dict() | {"steps": 10, "keep_best": False, "seed": 1, "init_from": str(tmp_path / "a")}))
    ckpt = train(task, spec, cont, out=tmp_path / "b", progress=False)
    state = ckpt.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in last.items())
    assert load_checkpoint(tmp_path / "b").train["init_from"] == str(tmp_path / "a")
    assert main(["info", "--ckpt", str(tmp_path / "b")]) == 0
    assert f"started at  the last-step weights of {tmp_path / 'a'}" in capsys.readouterr().out
    fresh = train(task, spec, TrainConfig(**(cont.to_dict() | {"init_from": None})), progress=False).model.state_dict()
    assert not torch.equal(fresh["embed.W_E"], state["embed.W_E"])


def test_init_from_refuses_another_model_task_or_an_unfinished_run(tmp_path):
    task = ModularTask(p=5, n_tasks=6)
    spec = ModelSpec.for_task(task, 5, n_layers=1, d_model=16)
    train(task, spec, SMALL, out=tmp_path / "a", progress=False)
    cont = TrainConfig(**(SMALL.to_dict() | {"init_from": str(tmp_path / "a")}))
    wider = ModelSpec.for_task(task, 5, n_layers=1, d_model=32)
    with pytest.raises(CheckpointError, match=r"init_from: .* different model \(model.d_model: 16 there, 32 here\)"):
        train(task, wider, cont, out=tmp_path / "b", progress=False)
    other = ModularTask(p=5, n_tasks=6, split_seed=1)
    with pytest.raises(CheckpointError, match=r"different task \(task.split_seed"):
        train(other, spec, cont, out=tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()  # refused before anything is written
    train(task, spec, SMALL, out=tmp_path / "c", progress=False, stop_after=15)
    with pytest.raises(CheckpointError, match="unfinished run"):
        train(task, spec, TrainConfig(**(SMALL.to_dict() | {"init_from": str(tmp_path / "c")})), progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        train(task, spec, TrainConfig(**(SMALL.to_dict() | {"init_from": str(tmp_path / "nope")})), progress=False)


def test_training_refuses_to_overwrite_a_finished_checkpoint(tmp_path):
    task = LinearTask(d_x=2)
    spec = ModelSpec.for_task(task, 5, n_layers=1, d_model=8)
    train(task, spec, SMALL, out=tmp_path / "m", progress=False)
    before = (tmp_path / "m" / "weights.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        train(task, spec, SMALL, out=tmp_path / "m", progress=False)
    assert (tmp_path / "m" / "weights.safetensors").read_bytes() == before
    train(task, spec, SMALL.__class__(**(SMALL.to_dict() | {"seed": 1})), out=tmp_path / "m", progress=False, resume=False)
    assert (tmp_path / "m" / "weights.safetensors").read_bytes() != before
