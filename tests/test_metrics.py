import pytest
import torch

from interp.evaluate import ERROR, error_by_position, evaluate, squared_error_over_d
from interp.spec import ModelSpec
from interp.tasks import Batch, ComplexZerosTask, KernelTask, LinearTask, ModularTask, PolynomialTask
from interp.train import score
from probes.metrics import Answers, accuracy, error_metric, logit_diff, metrics_for, prob_correct, resolve_metric, signed_error


def test_metrics_on_known_answers():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    ans = Answers(torch.tensor([1, 1]), torch.tensor([2, 0]))
    assert torch.equal(logit_diff(logits, ans), torch.tensor([1.0, -3.0]))
    assert torch.equal(accuracy(logits, ans), torch.tensor([1.0, 0.0]))
    assert torch.allclose(prob_correct(logits, ans)[1], torch.tensor(1 / (torch.e**3 + 2)))
    pred = torch.tensor([[1.0], [0.5]])
    reg = Answers(torch.tensor([[0.0], [1.0]]), torch.zeros(2, 1))
    assert torch.equal(error_metric(1.0)(pred, reg), torch.tensor([1.0, 0.25]))
    assert torch.equal(error_metric(5.0)(pred, reg), torch.tensor([0.2, 0.05]))
    assert torch.equal(signed_error(pred, reg), torch.tensor([1.0, -0.5]))


def test_resolve_metric_defaults_and_errors():
    assert resolve_metric(LinearTask(), None)[0] == ERROR == "squared_error_over_d"
    assert resolve_metric(ModularTask(p=5), None)[0] == "logit_diff"
    assert resolve_metric(ModularTask(p=5), lambda out, a: out.sum(-1))[0] == "<lambda>"
    with pytest.raises(ValueError, match="does not apply"):
        resolve_metric(LinearTask(), "logit_diff")


# --- the one regression error: squared error / d (Garg et al., github dtsip/in-context-learning plot_utils.py) ---


def test_error_is_squared_error_over_d_by_brute_force():
    """On a hand-built batch (2 output channels, 2 of 3 positions scored) the per-position error is a plain loop's
    Σ_c (pred - target)² / d, for any d, and does not depend on the other sequences of the batch."""
    g = torch.Generator().manual_seed(7)
    targets, pred = torch.randn(3, 3, 2, generator=g), torch.randn(3, 3, 2, generator=g)
    mask = torch.tensor([[True, False, True]] * 3)
    batch = Batch(torch.zeros(3, 3, 4), targets, mask)
    for d in (1.0, 5.0, 20.0):
        want = torch.zeros(3, 2)
        for b in range(3):
            for j, pos in enumerate((0, 2)):
                want[b, j] = sum((pred[b, pos, c] - targets[b, pos, c]) ** 2 for c in range(2)) / d
        assert torch.allclose(error_by_position(pred, batch, d), want, rtol=1e-6)
        assert torch.allclose(squared_error_over_d(pred, targets, d), ((pred - targets) ** 2).sum(-1) / d)
        alone = Batch(torch.zeros(1, 3, 4), targets[:1], mask[:1])
        assert torch.allclose(error_by_position(pred[:1], alone, d), want[:1], rtol=1e-6)


def test_every_regression_task_divides_by_d_x():
    assert LinearTask(d_x=5).error_scale == 5.0 and LinearTask(d_x=20, active_dims=3).error_scale == 20.0
    assert PolynomialTask().error_scale == 1.0 and ComplexZerosTask().error_scale == 2.0
    assert KernelTask(d_x=4).error_scale == 1.0  # the exception, documented on the task: Cheng et al.'s raw squared error
    assert not hasattr(ModularTask(p=5), "error_scale")


class Zero(torch.nn.Module):
    """The zero predictor as a model."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, inputs):
        return torch.zeros(*inputs.shape[:2], 1)


@pytest.mark.parametrize("s", [0.5, 2.0, 3.0])
def test_scaling_x_by_s_scales_the_zero_predictors_error_by_s_squared(s):
    """Garg's shift test: with x scaled by s (same draws) the zero predictor's squared error / d is s² times the
    unscaled one, and ~1 at s = 1 (E(w·x)² = d); the old error / mean y² hides the shift and stays exactly 1."""
    def run(x_scale, metric=None):
        task = LinearTask(d_x=5, x_scale=x_scale)
        return evaluate(Zero(), task, 6, n_batches=2, batch_size=640, baselines=False, metric=metric,
                        generator=torch.Generator().manual_seed(3)).curve("id", "model")
    one, scaled = run(1.0), run(s)
    assert scaled.mean == pytest.approx([s**2 * m for m in one.mean], rel=1e-5)
    assert [abs(m - 1) < 3 * ci for m, ci in zip(one.mean, one.ci95)].count(True) >= 5  # E|y|² / d = 1
    assert run(s, "error_over_mean_y2").mean == pytest.approx([1.0] * 6, abs=1e-5)


def test_training_log_evaluate_and_probes_agree_on_one_batch():
    """The same batch scored three ways: ``interp.train.score`` (pooled over the loss positions), ``evaluate``'s
    curve (per position) and the probes' default metric at the query give the identical number."""
    task = LinearTask(d_x=3)
    model = ModelSpec.for_task(task, 6, n_layers=1, n_heads=1, d_model=16).build().eval()
    batch = task.sample(128, 6, torch.Generator().manual_seed(11))  # what evaluate draws first from this seed
    curve = evaluate(model, task, 6, n_batches=1, batch_size=128, baselines=False,
                     generator=torch.Generator().manual_seed(11)).curve("id", "model")
    logged = score(model, batch, task.error_scale)["error"]
    assert logged == pytest.approx(sum(curve.mean) / len(curve.mean), rel=1e-5)
    name, metric = resolve_metric(task, None)
    with torch.no_grad():
        at_query = metric(model(batch.inputs)[:, batch.query_pos], Answers.of(batch, batch))
    assert name == ERROR and at_query.mean().item() == pytest.approx(curve.mean[-1], rel=1e-5)
    with torch.no_grad():
        brute = ((model(batch.inputs) - batch.targets) ** 2).sum(-1)[:, 0::2] / 3
    assert logged == pytest.approx(brute.mean().item(), rel=1e-5)
    assert metrics_for(task)[ERROR].__name__ == ERROR
    with pytest.raises(ValueError, match="error_scale"):
        score(model, batch)


def test_interp_eval_names_the_metric_and_prints_intervals(tmp_path, capsys):
    import json

    import interp
    from interp.cli import main

    interp.train("linear", out=tmp_path / "m", steps=2, n_examples=4, d_model=16, progress=False, task_args={"d_x": 3})
    assert main(["eval", "--ckpt", str(tmp_path / "m"), "--n", "64", "--out", str(tmp_path / "e.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the title at the terminal's width
    assert "squared error / d (d = 3)" in out and "95% CI over 64 sequences" in out and "±" in out
    rows = json.loads((tmp_path / "e.json").read_text())
    ev = interp.evaluate(tmp_path / "m", n=64, seed=0)
    row = next(r for r in rows if (r["split"], r["method"]) == ("id", "model"))
    assert row["k=3"] == pytest.approx(ev.curve("id", "model").mean[3])
    assert row["k=3 ci95"] == pytest.approx(1.959964 * ev.curve("id", "model").sem[3])
