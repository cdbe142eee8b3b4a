"""Card measurements against closed forms."""
import pytest
import torch
from torch import nn

from interp.cards import kx_sweep, markdown_table
from interp.checkpoint import Checkpoint
from interp.spec import ModelSpec
from interp.tasks import PolynomialTask

TASK = PolynomialTask(degrees=(1,), coef_dist="uniform", coef_scale=5.0, x_range=5.0)


class Constant(nn.Module):
    """Predicts ``c`` everywhere: a model saturated at exactly B = |c|."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.full((*inputs.shape[:2], 1), self.c)


def test_kx_sweep_reads_a_constant_model_and_the_target_in_closed_form():
    ckpt = Checkpoint(Constant(-7.0), ModelSpec.for_task(TASK, 10), TASK, {"n_examples": 10})
    r = kx_sweep(ckpt, slopes=(1, 4, 20), n=4096)
    assert r["boundary"] == pytest.approx(7.0) and r["pred_q99"] == pytest.approx([7.0] * 3)
    # |k·x| with x ~ U(-5, 5) has 0.99 quantile 0.99 · 5k; the mean of k·x where it is positive is 2.5k
    assert r["target_q99"] == pytest.approx([4.95 * k for k in (1, 4, 20)], rel=0.01)
    assert r["target_pos_mean"] == pytest.approx([2.5 * k for k in (1, 4, 20)], rel=0.05)
    with pytest.raises(ValueError, match="polynomial task"):
        kx_sweep(Checkpoint(Constant(0.0), ckpt.spec, TASK.replace(degrees=(0,)), {"n_examples": 10}))


def test_markdown_table():
    assert markdown_table([{"k": 1, "err": 0.012345}]) == ["| k | err |", "|---|---|", "| 1 | 0.0123 |"]
