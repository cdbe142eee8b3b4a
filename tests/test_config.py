import json
import subprocess
import sys
from pathlib import Path

import pytest

from interp.cli import main
from interp.config import ConfigError, load_run, run_from_dict, same_run, with_overrides
from interp.tasks import PolynomialTask

INTERP = [sys.executable, "-m", "interp.cli"]
ZOO_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "zoo").glob("*.yaml"))

TINY = """
name: tiny
task: {name: polynomial, degrees: [1], coef_dist: uniform, coef_scale: 5.0, x_range: 5.0}
model: {n_layers: 1, n_heads: 2, d_model: 16}
train: {steps: 6, n_examples: 4, eval_every: 3, eval_size: 16, curriculum: {points_start: 2, every: 2}}
"""


def test_run_config_round_trips_and_matches_the_trained_checkpoint(tmp_path):
    (tmp_path / "run.yaml").write_text(TINY)
    run = load_run(tmp_path / "run.yaml")
    assert run.task == PolynomialTask(degrees=(1,), coef_dist="uniform", coef_scale=5.0, x_range=5.0)
    assert run.spec.n_ctx == 8 and run.spec.d_in == 2 and run.train.curriculum.points_start == 2
    assert same_run(run_from_dict(run.to_dict()), run)
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "m")]) == 0
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["train"]["steps_done"] == 6 and saved["train"]["wall_s"] >= 0 and "CPU" in saved["train"]["hardware"]
    # the checkpoint's own config.json is a run config that reproduces the run
    assert same_run(run_from_dict(saved), run)


def test_uniform_coefficients_stay_in_range(gen):
    batch = PolynomialTask(degrees=(1,), coef_dist="uniform", coef_scale=5.0, x_range=5.0).sample(256, 4, gen())
    coefs = batch.params["coefs"]
    assert coefs.abs().max() <= 5.0 and coefs.abs().max() > 4.5 and abs(coefs.mean()) < 0.5


def test_overrides_set_dotted_keys_without_touching_the_base():
    base = {"task": {"name": "modular", "p": 5}, "model": {"n_layers": 1}}
    out = with_overrides(base, {"task.n_tasks": 8, "model.n_layers": 2, "train.seed": 3})
    assert out == {"task": {"name": "modular", "p": 5, "n_tasks": 8}, "model": {"n_layers": 2}, "train": {"seed": 3}}
    assert base["model"]["n_layers"] == 1
    with pytest.raises(ConfigError, match="must start with"):
        with_overrides(base, {"n_layers": 2})


@pytest.mark.parametrize("path", ZOO_CONFIGS, ids=lambda p: p.stem)
def test_zoo_configs_are_valid_runs(path):
    run = load_run(path)
    assert run.name == path.stem and run.purpose


@pytest.mark.parametrize(
    "text, argv, message",
    [
        ("task: {name: linear}\nmodel: {n_layerz: 2}\n", [], "unknown model field(s) ['n_layerz']"),
        ("task: {name: linear, p: 3}\n", [], "task:"),
        ("task: [1, 2\n", [], "not valid YAML"),
        ("task: {name: linear}\n", ["--layers", "3"], "drop --layers"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(text, argv, message, tmp_path):
    (tmp_path / "run.yaml").write_text(text)
    proc = subprocess.run(INTERP + ["train", "--config", "run.yaml", "--out", "x", *argv],
                          capture_output=True, text=True, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "x").exists()
