import pytest
import torch

from interp.tasks import LinearTask, ModularTask
from probes.metrics import Answers, accuracy, logit_diff, mse, prob_correct, resolve_metric, signed_error


def test_metrics_on_known_answers():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    ans = Answers(torch.tensor([1, 1]), torch.tensor([2, 0]))
    assert torch.equal(logit_diff(logits, ans), torch.tensor([1.0, -3.0]))
    assert torch.equal(accuracy(logits, ans), torch.tensor([1.0, 0.0]))
    assert torch.allclose(prob_correct(logits, ans)[1], torch.tensor(1 / (torch.e**3 + 2)))
    pred = torch.tensor([[1.0], [0.5]])
    reg = Answers(torch.tensor([[0.0], [1.0]]), torch.zeros(2, 1))
    assert torch.equal(mse(pred, reg), torch.tensor([1.0, 0.25]))
    assert torch.equal(signed_error(pred, reg), torch.tensor([1.0, -0.5]))


def test_resolve_metric_defaults_and_errors():
    assert resolve_metric(LinearTask(), None)[0] == "mse"
    assert resolve_metric(ModularTask(p=5), None)[0] == "logit_diff"
    assert resolve_metric(ModularTask(p=5), lambda out, a: out.sum(-1))[0] == "<lambda>"
    with pytest.raises(ValueError, match="does not apply"):
        resolve_metric(LinearTask(), "logit_diff")
