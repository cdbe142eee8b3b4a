"""probes.algorithms: ratio-matching and modular-regression sets on hand-built contexts, agreement with the
exact mod-p solver, the shares for hand-made answers, and algorithm_map on a tiny untrained model."""
from __future__ import annotations

import pytest
import torch

from interp.baselines import mod_p_solver
from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask
from probes.algorithms import algorithm_map, compare_algorithms, figure_map, modular_regression, ratio_matching
from probes.grid import Context, grid_answers, query_grid
from interp.results import Result



def cells(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(c) for c in torch.nonzero(mask.bool()).tolist()}


P = 7
ONE = Context(torch.tensor([[1, 2]]), a=3, b=4)  # z = 3 + 8 = 11 = 4 mod 7
TWO = Context(torch.tensor([[1, 2], [3, 1]]), a=3, b=4)


def test_one_example_gives_its_multiples():
    line = {(c % P, 2 * c % P) for c in range(P)}
    assert len(line) == 7
    ratio = ratio_matching(ONE, P)
    assert cells(ratio.scores) == line and ratio.metadata["n_covered"] == 7
    for c in range(P):
        assert ratio.extras["answer"][c, 2 * c % P].item() == 4 * c % P  # c·z_1
        assert ratio.extras["source"][c, 2 * c % P].item() == 0
    assert (ratio.extras["answer"][~ratio.scores.bool()] == -1).all()
    regression = modular_regression(ONE, P)
    assert cells(regression.scores) == line  # the span of one vector is its multiples


def test_two_independent_examples_solve_everything():
    ratio = ratio_matching(TWO, P)
    lines = {(c, 2 * c % P) for c in range(P)} | {(3 * c % P, c) for c in range(P)}
    assert cells(ratio.scores) == lines and len(lines) == 13  # two lines through the origin
    assert ratio.extras["source"][0, 0].item() == 0  # the origin is matched by the first example
    assert ratio.extras["source"][3, 1].item() == 1
    regression = modular_regression(TWO, P)
    assert regression.scores.bool().all()
    assert torch.equal(regression.extras["answer"], grid_answers(P, TWO))  # Σ c_i·z_i is the true z everywhere
    assert torch.equal(ratio.extras["answer"][ratio.scores.bool()], grid_answers(P, TWO)[ratio.scores.bool()])


def test_dependent_and_zero_examples_add_nothing():
    dependent = Context(torch.tensor([[1, 2], [2, 4], [0, 0]]), a=1, b=1)
    assert cells(modular_regression(dependent, P).scores) == {(c, 2 * c % P) for c in range(P)}
    zero = Context(torch.tensor([[0, 0]]), a=2, b=5)
    assert cells(ratio_matching(zero, P).scores) == {(0, 0)}
    assert cells(modular_regression(zero, P).scores) == {(0, 0)}
    empty = Context(torch.zeros(0, 2, dtype=torch.long), a=2, b=5)
    assert cells(ratio_matching(empty, P).scores) == set()
    assert cells(modular_regression(empty, P).scores) == {(0, 0)}


@pytest.mark.parametrize("p", [5, 7])
@pytest.mark.parametrize("seed", range(4))
def test_regression_set_is_what_the_context_determines(p, seed):
    """For p prime the span of the examples is exactly where every consistent (a, b) gives the same z."""
    g = torch.Generator().manual_seed(seed)
    task = ModularTask(p=p)
    for n in (1, 2, 3):
        ctx = Context.sample(task, n, g)
        batch = query_grid(task, ctx)
        solver = mod_p_solver(p)(batch)[:, batch.query_pos].reshape(p, p)
        regression = modular_regression(ctx, p)
        assert torch.equal(regression.scores.bool(), solver >= 0), (p, seed, n, ctx)
        assert torch.equal(regression.extras["answer"], solver)


def test_shares_for_hand_made_answers():
    answer = grid_answers(P, TWO)
    ratio_1 = ratio_matching(TWO.prefix(1), P).scores.bool()
    # one shot: right exactly on the ratio set; two shots: right everywhere
    preds = torch.stack([torch.where(ratio_1, answer, (answer + 1) % P), answer])
    r = compare_algorithms(preds, TWO, P, shots=[1, 2])
    assert r.axes == ("shots", "x", "y") and r.scores.shape == (2, 7, 7)
    assert torch.equal(r.scores[0].bool(), ratio_1)
    ex = r.extras
    assert ex["accuracy"].tolist() == pytest.approx([7 / 49, 1.0])
    assert ex["ratio_share"].tolist() == pytest.approx([1.0, 13 / 49])
    assert ex["regression_share"].tolist() == pytest.approx([1.0, 1.0])
    assert ex["ratio_coverage"].tolist() == pytest.approx([7 / 49, 13 / 49])
    assert ex["regression_coverage"].tolist() == pytest.approx([7 / 49, 1.0])
    assert ex["ratio_accuracy"].tolist() == pytest.approx([1.0, 1.0])
    assert ex["other_accuracy"][0].item() == 0.0 and torch.isnan(ex["other_accuracy"][1])  # nothing is left over
    assert (ex["regression"] >= ex["ratio"]).all()  # ratio matching is one-term regression
    wrong = compare_algorithms((preds + 1) % P, TWO, P, shots=[1, 2])
    assert torch.isnan(wrong.extras["ratio_share"]).all() and wrong.extras["accuracy"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="shots must be in"):
        compare_algorithms(preds, TWO, P, shots=[1, 3])


def tiny():
    task = ModularTask(p=P)
    return task, ModelSpec.for_task(task, 4, n_layers=2, n_heads=2, d_model=16, d_mlp=32).build().eval()


def test_algorithm_map_reads_the_model_at_each_shot_count():
    task, model = tiny()
    ctx = Context(torch.tensor([[1, 2], [3, 1], [5, 5]]), a=3, b=4)
    r = algorithm_map(model, task, shots=[1, 3], context=ctx)
    assert r.labels["shots"] == ["1", "3"] and r.metadata["shots"] == [1, 3]
    assert torch.equal(r.scores.bool(), r.extras["prediction"] == grid_answers(P, ctx))
    # query (4, 6) after one example is the sequence 1 2 z1 4 6
    seq = torch.tensor([[1, 2, (3 + 8) % P, 4, 6]])
    assert r.extras["prediction"][0, 4, 6].item() == model(seq)[0, -1].argmax().item()
    assert torch.equal(r.extras["ratio"][1].bool(), ratio_matching(ctx, P).scores.bool())
    assert r.extras["regression"][0].sum() == 7 and r.extras["regression"][1].sum() == 49
    assert Result.from_json(r.to_json()).extras["ratio_share"].shape == (2,)
    assert len(figure_map(r).data) == 2
    default = algorithm_map(model, task, generator=torch.Generator().manual_seed(1))
    assert default.metadata["shots"] == [1, 2, 3]  # 1, 2, half and all of the 3 examples the model reads


def test_algorithm_map_rejects_bad_arguments():
    task, model = tiny()
    with pytest.raises(ValueError, match="task must be a ModularTask"):
        algorithm_map(model, LinearTask(d_x=2))
    with pytest.raises(ValueError, match=r"shots must be a non-empty list of ints in \[0, 3\]"):
        algorithm_map(model, task, shots=[1, 4])
    with pytest.raises(ValueError, match="between 2 and 3 examples"):
        algorithm_map(model, task, shots=[2], context=ONE)
