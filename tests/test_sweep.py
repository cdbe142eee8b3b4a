"""interp sweep: a tiny p = 5 modular grid, end to end, locally and on a local Ray instance."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

import interp

from interp.checkpoint import load_checkpoint
from interp.cli import main
from interp.config import ConfigError
from interp.sweep import PHASE_RULE, kept_rows, load_sweep, phase, run_sweep
from interp.train import objective_key

SWEEP = """
name: tiny
task: {name: modular, p: 5, n_tasks: 8, pair_fraction: 0.6, sampling: parallelogram}
model: {n_layers: 1, n_heads: 2, d_model: 16, positional: rotary, act_fn: relu}
train: {steps: 12, n_examples: 8, eval_every: 6, eval_size: 32, batch_size: 16}
grid:
  model.n_layers: [1, 2]
runs: runs/tiny
summary: out/sweep.json
"""


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(SWEEP)
    return tmp_path / "tiny.yaml"


def last_shot_accuracy(path: Path, split: str, n: int = 512, seed: int = 0) -> float:
    """Recomputed from the checkpoint through the public API: the model's accuracy at the last shot."""
    return interp.evaluate(path, n=n, seed=seed).curve(split, "model").mean[-1]


def direct_last_shot_accuracy(path: Path, split: str, n: int = 4096, seed: int = 123) -> float:
    """Independent of interp.evaluate: a fresh draw, the model's argmax at the last z against its target."""
    import torch

    ckpt = interp.load(path)
    task = ckpt.task.eval_splits()[split]
    batch = task.sample(n, ckpt.train["n_examples"], torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (ckpt.model(batch.inputs).argmax(-1)[:, -1] == batch.targets[:, -1]).float().mean().item()


def test_sweep_trains_every_cell_and_its_summary_matches_the_checkpoints(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--workers", "2"]) == 0
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["axes"] == {"model.n_layers": [1, 2]} and summary["phase_rule"] == PHASE_RULE
    assert [c["name"] for c in summary["cells"]] == ["n_layers=1", "n_layers=2"]
    for cell in summary["cells"]:
        sets = {"id_train_acc", "id_test_acc", "ood_train_acc", "ood_test_acc"}
        assert cell["status"] == "done" and sets | {s + "_last" for s in sets} <= set(cell["final"])
        assert all(k.split("_acc")[0] in {s[:-4] for s in sets} for k in cell["final"])  # only evaluation sets
        ckpt = load_checkpoint(tmp_path / "out" / cell["ckpt"])
        assert ckpt.spec.n_layers == cell["params"]["model.n_layers"] and ckpt.task.sampling == "parallelogram"
        assert cell["final"] == {k: v for k, v in ckpt.metrics[-1].items() if "_acc" in k}
        # the kinds and the phase are the checkpoint's, on the summary's sequences
        kinds = interp.evaluate(tmp_path / "out" / cell["ckpt"], n=512, seed=0, baselines=False).kind_metrics()
        assert cell["kinds"] == pytest.approx(kinds) and cell["kinds"]["ood_test_n_last"] == 512 * 2
        assert cell["phase"] == phase(kinds, p=5)
        assert cell["ood_acc_last_shot"] == pytest.approx(last_shot_accuracy(tmp_path / "out" / cell["ckpt"], "ood_test"))
        # the same quantity from an independent draw agrees within sampling error (4 s.e. of 512 sequences)
        assert abs(cell["ood_acc_last_shot"] - direct_last_shot_accuracy(tmp_path / "out" / cell["ckpt"], "ood_test")) < 4 * 0.5 / 512**0.5
        assert cell["best"]["ood_test_acc"] == max(m["ood_test_acc"] for m in ckpt.metrics)
        assert cell["curve"]["step"] == [6, 12] and cell["curve"]["ood_test_acc"] == [m["ood_test_acc"] for m in ckpt.metrics]
        target = objective_key(ckpt.metrics[-1])  # regression-only OOD accuracy when the log has it
        assert cell["best_ood_step"] == max(ckpt.metrics, key=lambda m: m[target])["step"]
    # run again: finished cells are skipped, and nothing changes
    assert main(["sweep", str(sweep_file)]) == 0
    assert capsys.readouterr().out.count(": skipped") == 2
    # the runs folder is lost (another machine, a fresh checkout): the summary's finished rows are kept as they
    # are and not trained again, only the new cell trains, and the summary is rewritten after every cell
    summary_path = tmp_path / "out" / "sweep.json"
    old = json.loads(summary_path.read_text())["cells"]
    (tmp_path / "runs").rename(tmp_path / "away")
    sweep_file.write_text(SWEEP.replace("[1, 2]", "[1, 2, 3]"))
    seen = []
    new = run_sweep(sweep_file, workers=1, on_done=lambda cell, outcome: seen.append(
        (cell.name, outcome, [c["status"] for c in json.loads(summary_path.read_text())["cells"]])))
    assert seen == [("n_layers=3", "trained", ["done", "done", "done"])]
    new = json.loads(json.dumps(new))  # as written: tuples become lists
    assert new["cells"][:2] == old and json.loads(summary_path.read_text()) == new
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["n_layers=3"]
    # a row of another run config (here: more steps) is not carried over: that cell trains again
    # rows of another grid or another run config are neither carried over nor lost: the sweep is refused
    for changed in (SWEEP.replace("[1, 2]", "[3]"), SWEEP.replace("[1, 2]", "[1, 2, 3]").replace("steps: 12", "steps: 6")):
        sweep_file.write_text(changed)
        with pytest.raises(ConfigError, match="2 of its finished runs are not here"):
            run_sweep(sweep_file)
    assert json.loads(summary_path.read_text()) == new
    for cell in (tmp_path / "away" / "tiny").iterdir():
        cell.rename(tmp_path / "runs" / "tiny" / cell.name)
    # a finished cell of another config is refused, not overwritten
    sweep_file.write_text(SWEEP.replace("steps: 12", "steps: 13"))
    assert main(["sweep", str(sweep_file), "--workers", "1"]) == 1
    again = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert all("another config" in c["status"] for c in again["cells"])


def test_failed_rows_are_kept_and_cells_selects_what_trains(tmp_path, monkeypatch, capsys):
    """A diverged cell keeps its failed row (with its run config) and is not trained again unless named by
    --cells or --retry-failed; --cells trains only what it names and keeps every other row as it was."""
    monkeypatch.chdir(tmp_path)
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(SWEEP.replace("model.n_layers: [1, 2]", "train.lr: [0.001, 1.0e+30]"))  # the second diverges
    summary_path, good, bad = tmp_path / "out" / "sweep.json", "lr=0.001", "lr=1e+30"
    rows = lambda: {c["name"]: c for c in json.loads(summary_path.read_text())["cells"]}  # noqa: E731

    assert main(["sweep", str(sweep_file), "--cells", "*=0.001", "--dry-run"]) == 0  # the plan, and nothing else
    plan_lines = [line.split() for line in capsys.readouterr().out.splitlines()[1:3]]
    assert plan_lines == [["train", good], ["not", "selected", bad]]
    assert not (tmp_path / "runs").exists() and not summary_path.exists()
    assert main(["sweep", str(sweep_file), "--cells", "*=0.001", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 cells into" in out and "1 not selected by --cells" in out and f"{good}: trained" in out
    assert [rows()[good]["status"], rows()[bad]["status"]] == ["done", "not run"]
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == [good]

    assert main(["sweep", str(sweep_file), "--workers", "1"]) == 1  # the unselected cell trains now, and diverges
    failed = rows()[bad]
    assert failed["status"].startswith("failed: training diverged") and failed["run"]["train"]["lr"] == 1e30
    assert f"1 cell(s) failed: {bad}" in capsys.readouterr().out

    before = rows()
    assert main(["sweep", str(sweep_file), "--workers", "1"]) == 0  # kept, not trained again: it would diverge again
    out = capsys.readouterr().out
    assert "1 failed, kept (--retry-failed" in out and f"{good}: skipped" in out and bad not in out.split("\n", 1)[1]
    assert rows() == before
    assert main(["sweep", str(sweep_file), "--dry-run"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[1:3]] == [["skip", good], ["kept:", "failed", bad]]
    sweep = load_sweep(sweep_file)
    assert bad in kept_rows(sweep) and bad not in kept_rows(sweep, retry_failed=True) and bad not in kept_rows(sweep, force=True)
    # a failed row of another run config is not this cell's: not kept
    sweep_file.write_text(sweep_file.read_text().replace("steps: 12", "steps: 10"))
    assert bad not in kept_rows(load_sweep(sweep_file))
    sweep_file.write_text(sweep_file.read_text().replace("steps: 10", "steps: 12"))

    assert main(["sweep", str(sweep_file), "--cells", bad, "--workers", "1"]) == 1  # named: tried again
    assert f"{bad}: failed" in capsys.readouterr().out and rows()[good] == before[good]

    assert main(["sweep", str(sweep_file), "--cells", "n_layers=9"]) == 2  # a pattern that matches nothing
    err = capsys.readouterr().err.strip()
    assert "matches no cell of sweep tiny" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'icl-interp[ray]')")
def test_ray_backend_runs_the_same_cells(sweep_file, tmp_path):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    try:
        summary = run_sweep(sweep_file, backend="ray")
    finally:
        ray.shutdown()
    assert [c["status"] for c in summary["cells"]] == ["done", "done"]
    for cell in summary["cells"]:
        assert cell["ood_acc_last_shot"] == pytest.approx(last_shot_accuracy(tmp_path / "out" / cell["ckpt"], "ood_test"))


def test_bad_sweep_files_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP.replace("model.n_layers", "n_layers"))
    with pytest.raises(ConfigError, match="must start with task., model. or train."):
        load_sweep(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(SWEEP.replace("[1, 2]", "[1, 2]\n  task.n_tasks: [30]"))
    with pytest.raises(ConfigError, match=r"\[n_layers=1,n_tasks=30\].*n_tasks"):
        load_sweep(tmp_path / "s.yaml")


@pytest.mark.parametrize("regression, copy_ood, expected", [
    ((1.0, 0.1, 0.1, 0.1), 0.2, "id_memorization"),
    ((1.0, 0.9, 0.1, 0.1), 0.2, "id_generalization"),
    ((1.0, 0.3, 0.9, 0.2), 0.9, "ood_memorization"),
    ((1.0, 0.9, 0.9, 0.8), 1.0, "ood_generalization"),
    # the old rule called this OOD generalisation (all-query OOD accuracy 0.6 > 0.5), but only copies are answered
    ((1.0, 0.2, 0.1, 0.15), 0.7, "ratio_matching_only"),
    ((0.1, 0.1, 0.1, 0.1), 0.1, "not_learned"),
])
def test_phase_names_follow_he_et_al(regression, copy_ood, expected):
    sets = ("id_train", "id_test", "ood_train", "ood_test")
    record = {f"{s}_acc_regression_last": r for s, r in zip(sets, regression)}
    record |= {f"{s}_acc_copyable_last": copy_ood for s in ("ood_train", "ood_test")}
    record |= {f"{s}_acc_last": 0.6 for s in sets}  # all-query accuracy does not name phases any more
    assert phase(record, p=11) == expected
    assert phase({"id_error": 0.1, "ood_error": 0.2}, p=11) is None


def test_old_sweep_files_with_phase_threshold_still_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP + "phase_threshold: 0.3\n")
    with pytest.warns(UserWarning, match="phase_threshold is ignored"):
        assert len(load_sweep(tmp_path / "s.yaml").cells) == 2


def test_an_axis_of_mappings_sets_keys_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP.replace("  model.n_layers: [1, 2]", """  pair:
    - {model.n_layers: 1, task.n_tasks: 4}
    - {model.n_layers: 2, task.n_tasks: 12}
  train.seed: [0, 1]"""))
    cells = load_sweep(tmp_path / "s.yaml").cells
    assert [c.name for c in cells] == ["pair=1-4,seed=0", "pair=1-4,seed=1", "pair=2-12,seed=0", "pair=2-12,seed=1"]
    assert [(c.run.spec.n_layers, c.run.task.n_tasks, c.run.train.seed) for c in cells] == [(1, 4, 0), (1, 4, 1), (2, 12, 0), (2, 12, 1)]
    assert cells[0].out == tmp_path / "runs" / "tiny" / "pair=1-4,seed=0"


def test_sections_beside_a_base_file_override_its_keys(tmp_path, monkeypatch):
    """``base: FILE`` plus a ``train:`` section: the section's keys replace the file's, the others are kept."""
    monkeypatch.chdir(tmp_path)
    head, grid = SWEEP.split("grid:")
    (tmp_path / "base.yaml").write_text(head.replace("name: tiny\n", ""))
    (tmp_path / "s.yaml").write_text("name: tiny\nbase: base.yaml\ntrain: {steps: 7, lr: 0.01}\ngrid:" + grid)
    cells = load_sweep(tmp_path / "s.yaml").cells
    assert [(c.run.train.steps, c.run.train.lr, c.run.train.eval_every, c.run.spec.d_model) for c in cells] == [(7, 0.01, 6, 16)] * 2
