"""Metrics, evaluation curves and the input-scale sweep."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from interp.baselines import in_context, least_squares
from interp.evaluate import (
    ERROR,
    ERROR_OVER_MEAN_Y2,
    accuracy_by_position,
    error_by_position,
    error_over_mean_y2_by_position,
    error_vs_scale,
    evaluate,
    metric_label,
    shots,
    squared_error_over_d,
)
from interp.spec import ModelSpec
from interp.tasks import Batch, ComplexZerosTask, LinearTask, ModularTask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LeastSquaresModel(nn.Module):
    """Least squares wrapped as a model: [batch, 2k, d_in] -> [batch, 2k, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # evaluate finds the device from the parameters

    def forward(self, inputs: Tensor) -> Tensor:
        mask = torch.zeros(inputs.shape[:2], dtype=torch.bool)
        mask[:, 0::2] = True
        return in_context(least_squares)(Batch(inputs, torch.zeros(*inputs.shape[:2], 1), mask))


def test_old_metric_pins_the_zero_predictor_at_one_per_batch():
    batch = LinearTask(d_x=4).sample(32, 7, gen())
    err = error_over_mean_y2_by_position(torch.zeros_like(batch.targets), batch)
    assert err.shape == (32, 7)
    assert torch.allclose(err.mean(dim=0), torch.ones(7), atol=1e-6)
    assert err.std() > 0.1  # per sequence it varies; only the batch mean is pinned


def test_squared_error_by_hand():
    targets = torch.tensor([[[1.0, 0.0], [9.0, 9.0], [0.0, 2.0]], [[3.0, 0.0], [9.0, 9.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True], [True, False, True]])
    batch = Batch(torch.zeros(2, 3, 3), targets, mask)
    pred = torch.zeros_like(targets)
    pred[0, 0] = torch.tensor([1.0, 1.0])  # error 1 at the first position of sequence 0
    assert error_by_position(pred, batch, 1.0).tolist() == [[1.0, 4.0], [9.0, 0.0]]
    assert error_by_position(pred, batch, 4.0).tolist() == [[0.25, 1.0], [2.25, 0.0]]  # squared error / d, d = 4
    # the old metric: position means of the squared target are (1 + 9) / 2 = 5 and (4 + 0) / 2 = 2
    assert torch.allclose(error_over_mean_y2_by_position(pred, batch), torch.tensor([[0.2, 2.0], [1.8, 0.0]]))
    assert metric_label(ERROR, 5.0) == "squared error / d (d = 5)" and metric_label(ERROR_OVER_MEAN_Y2) == "error / mean y²"


def test_accuracy_by_hand():
    targets = torch.tensor([[4, 1, 2, 3, 0]])
    mask = torch.tensor([[False, True, False, False, True]])
    batch = Batch(torch.zeros(1, 5, dtype=torch.long), targets, mask)
    assert accuracy_by_position(torch.tensor([[0, 1, 0, 0, 6]]), batch).tolist() == [[1.0, 0.0]]


def test_shots_count_complete_examples():
    assert shots(LinearTask().sample(1, 4, gen())) == [0, 1, 2, 3]
    assert shots(ModularTask(p=5, n_tasks=4).sample(1, 4, gen())) == [0, 1, 2, 3]
    assert shots(ComplexZerosTask().sample(1, 4, gen())) == [4]


def test_oracle_model_matches_its_baseline_and_is_exact_past_d():
    d = 3
    task = LinearTask(d_x=d)
    result = evaluate(LeastSquaresModel(), task, n_examples=8, n_batches=2, batch_size=32, generator=gen(1))
    assert result.metric == ERROR and result.error_scale == d and result.n_sequences == 64
    for split in ("id", "ood"):
        model, ls = result.curve(split, "model"), result.curve(split, "least_squares")
        assert model.shots == list(range(8))
        assert model.mean == pytest.approx(ls.mean, abs=1e-6)  # same batches, same predictions
        assert max(model.mean[d + 1 :]) < 1e-6
        # 0 examples -> predicts 0 -> scores E|y|² / d = x_scale² (1 ID, 9 OOD), up to sampling (heavy-tailed)
        assert abs(model.mean[0] - (1.0 if split == "id" else 9.0)) < 4 * model.sem[0]
        assert result.curve(split, "averaging").mean[-1] > 0.1
    assert all(s >= 0 for c in result.curves for s in c.sem)
    with pytest.raises(KeyError, match="id/model"):
        result.curve("id", "nope")


def test_to_table_rows():
    result = evaluate(LeastSquaresModel(), LinearTask(d_x=3), n_examples=9, n_batches=1, batch_size=8, generator=gen(2))
    rows = result.to_table()
    assert len(rows) == 2 * 5  # id and ood, for the model and 4 baselines
    assert list(rows[0]) == ["split", "method", "k=0", "k=2", "k=4", "k=6", "k=8", "avg"]
    assert {r["split"] for r in rows} == {"id", "ood"}
    picked = result.to_table(at=[1, 20])[0]
    assert picked["k=1"] == result.curve("id", "model").mean[1]
    assert picked["k=20"] != picked["k=20"]  # NaN: more examples than were evaluated


def test_curves_as_one_result_cell_for_cell():
    from interp.results import Result

    result = evaluate(LeastSquaresModel(), LinearTask(d_x=3), n_examples=6, n_batches=1, batch_size=8, generator=gen(4))
    r = result.to_result()
    assert r.axes == ("split", "method", "shot") and r.ticks("split") == ["id", "ood"]
    assert r.ticks("shot") == [str(k) for k in range(6)] and r.metadata["label"] == result.label
    for c in result.curves:  # every cell is the curve's own number
        at = r.ticks("split").index(c.split), r.ticks("method").index(c.method)
        assert r.scores[at].tolist() == pytest.approx(c.mean, abs=0) and r.extras["sem"][at].tolist() == pytest.approx(c.sem, abs=0)
        assert r.extras["ci95"][at].tolist() == pytest.approx(c.ci95, rel=1e-6)
    frame = r.to_frame()
    assert len(frame) == 2 * 5 * 6 and set(frame.columns) >= {"split", "method", "shot", "value", "sem", "ci95"}
    assert torch.equal(Result.from_json(r.to_json()).scores, r.scores)
    assert list(result.results()) == ["curves"]
    with pytest.raises(ValueError, match="modular"):
        result.kind_result()


def test_by_kind_curves_as_one_result():
    task = ModularTask(p=5, n_tasks=8)
    model = ModelSpec.for_task(task, 6, n_layers=1, d_model=16).build()
    result = evaluate(model, task, n_examples=6, n_batches=1, batch_size=16, generator=gen(5))
    r = result.kind_result()
    assert r.axes == ("split", "method", "kind", "shot") and r.ticks("kind") == ["all", "copyable", "ratio", "regression"]
    for c in result.by_kind:
        at = r.ticks("split").index(c.split), r.ticks("method").index(c.method), r.ticks("kind").index(c.kind)
        assert r.scores[at].tolist() == pytest.approx(c.mean, abs=0, nan_ok=True)
        assert r.extras["n_queries"][at].tolist() == c.n_queries and r.extras["last"][at].item() == pytest.approx(c.last, nan_ok=True)
    assert list(result.results()) == ["curves", "by_kind"]


def test_scale_sweep_as_one_result():
    result = error_vs_scale(LeastSquaresModel(), LinearTask(d_x=3), scales=[1.0, 2.0], n_examples=5)
    r = result.to_result()
    assert r.axes == ("method", "scale") and r.ticks("method") == ["model", "zero"] and r.ticks("scale") == ["1", "2"]
    assert r.scores[1].tolist() == pytest.approx(result.errors["zero"], abs=0)
    assert r.extras["sem"][0].tolist() == pytest.approx(result.sems["model"], abs=0)


def test_evaluate_restores_training_mode_and_runs_untrained_models():
    for task, n in ((LinearTask(d_x=3), 5), (ComplexZerosTask(), 5), (ModularTask(p=5, n_tasks=8), 4)):
        model = ModelSpec.for_task(task, n, n_layers=1, d_model=16).build()
        model.train()
        result = evaluate(model, task, n_examples=n, n_batches=1, batch_size=4, generator=gen(3))
        assert model.training
        assert {(c.split, c.method) for c in result.curves} >= {("id", "model"), ("ood", "model")}
        if task.kind == "classification":
            assert result.metric == "accuracy"
            assert all(0.0 <= m <= 1.0 for c in result.curves for m in c.mean)
        assert len(result.curve("id", "model").mean) == len(result.curve("id", "model").shots)


def test_error_vs_scale():
    result = error_vs_scale(LeastSquaresModel(), LinearTask(d_x=3), scales=[1.0, 3.0], n_examples=8, baselines=True)
    assert result.field == "x_scale" and result.scales == [1.0, 3.0]
    assert max(result.errors["model"]) < 1e-6
    assert result.errors["least_squares"] == pytest.approx(result.errors["model"], abs=1e-6)
    # y = w·x scales with x, so the zero predictor's error grows about nine-fold
    assert 4.0 < result.errors["zero"][1] / result.errors["zero"][0] < 20.0
    assert result.error_scale == 3.0 and result.metric == ERROR
    assert [r["scale"] for r in result.to_table()] == [1.0, 3.0]
    with pytest.raises(ValueError, match="field"):
        error_vs_scale(LeastSquaresModel(), LinearTask(), scales=[1.0], n_examples=4, field="nope")
    with pytest.raises(ValueError, match="regression"):
        error_vs_scale(LeastSquaresModel(), ModularTask(p=5, n_tasks=4), scales=[1.0], n_examples=4)
