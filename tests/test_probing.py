"""Linear probes: channels that hold the target are read perfectly, shuffled labels score at chance."""
import pytest
import torch

from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask, PolynomialTask
from probes.probing import probe
from interp.results import Result


def linear_model(k: int = 8, n_layers: int = 2):
    task = LinearTask(d_x=2)
    return task, ModelSpec.for_task(task, k, n_layers=n_layers, n_heads=2, d_model=32).build()


def test_probe_reads_an_input_channel_that_holds_the_target(gen):
    """hook_embed is a linear map of the token, and token y0 carries y0 = w·x0: R² ≈ 1 there, ≈ 0 at x0."""
    task, model = linear_model()
    r = probe(model, task, lambda batch: batch.targets[:, 0], hook="hook_embed", positions=["x0", "y0"], generator=gen(0))
    assert r.axes == ("hook", "pos") and r.ticks("pos") == ["x0", "y0"] and r.ticks("hook") == ["hook_embed"]
    assert r.scores[0, 1] > 0.99  # y0 is in the y0 token
    assert r.scores[0, 0] < 0.1  # x0 alone says nothing linear about w·x0 with w random
    assert r.extras["control"][0, 1] < 0.05 and r.extras["train"][0, 1] > 0.99
    assert r.metadata["metric"] == "r2" and r.metadata["n_train"] + r.metadata["n_test"] == 512
    # a registry target the same way: the query's x sits in the query token
    q = probe(model, task, "x_query", hook="hook_embed", positions="query", generator=gen(1))
    assert q.ticks("pos") == ["x7"] and q.scores[0, 0] > 0.99


def test_shuffled_label_control_scores_at_chance_for_regression(gen):
    task, model = linear_model()
    r = probe(model, task, "w", generator=gen(2))  # every resid_post layer, every position
    assert r.axes == ("layer", "pos") and r.scores.shape == (2, 16) and r.ticks("layer") == ["L0", "L1"]
    assert r.metadata["hooks"] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    control = r.extras["control"]
    assert control.max() < 0.1 and control.mean() < 0.02  # R² ≈ 0 or below: no signal without the labels
    # the real probe beats its control somewhere: after a few examples w is partly readable even untrained
    assert (r.scores - control).max() > 0.1


def test_logistic_probe_and_its_control_at_one_over_p(gen):
    p = 7
    task = ModularTask(p=p, n_tasks=20)  # (x, y) pairs from all of Z_p²: the query's y is uniform
    model = ModelSpec.for_task(task, 6, n_layers=1, n_heads=2, d_model=32).build()
    r = probe(model, task, "y_query", hook="blocks.0.hook_resid_post", positions=["query", "x0", "y1", "z1"], n=1024,
              generator=gen(3))
    assert r.metadata["metric"] == "accuracy" and r.metadata["chance"] == pytest.approx(1 / p)
    assert r.scores[0, 0] > 0.95  # the query position holds the y token itself
    assert (r.scores[0, 1:] - 1 / p).abs().max() < 0.08  # earlier positions know nothing of the query's y
    control = r.extras["control"][0]
    # shuffled labels: accuracy ≈ 1/p (binomial std ≈ 0.022 at 256 test rows; more where features are few tokens)
    assert (control - 1 / p).abs().max() < 0.08 and abs(control.mean() - 1 / p) < 0.04
    tv = probe(model, task, "task_vector", hook="hook_embed", positions="query", n=256, generator=gen(4))
    assert tv.metadata["target_components"] == 2 and 0 <= tv.scores[0, 0] <= 1


def test_registry_targets_are_the_quantities_they_name(gen):
    """With more examples than dims the least-squares estimate is exact: w_ls = w and ls_pred = y_query."""
    task = LinearTask(d_x=3)
    batch = task.sample(16, 6, gen(5))
    t = task.probe_targets
    assert torch.allclose(t["w_ls"].fn(task, batch), batch.params["w"], atol=1e-4)
    assert torch.allclose(t["ls_pred"].fn(task, batch), t["y_query"].fn(task, batch), atol=1e-4)
    assert torch.equal(t["x_query"].fn(task, batch), batch.inputs[:, batch.query_pos, :3])
    poly = PolynomialTask(degrees=(2,))
    pb = poly.sample(16, 6, gen(6))
    assert torch.allclose(poly.probe_targets["ls_pred"].fn(poly, pb), pb.targets[:, pb.query_pos], atol=1e-3)
    mod = ModularTask(p=5, n_tasks=6)
    mb = mod.sample(16, 4, gen(7))
    ax = mod.probe_targets["ax"].fn(mod, mb)
    x_q = mb.inputs[:, mb.query_pos - 1]  # the query's x token sits just before its y
    assert torch.equal(ax, mb.params["a"] * x_q % 5)
    z = (mod.probe_targets["ax"].fn(mod, mb) + mod.probe_targets["by"].fn(mod, mb)) % 5
    assert torch.equal(z, mod.probe_targets["z_query"].fn(mod, mb))


def test_result_figure_and_json(gen):
    task, model = linear_model(k=4, n_layers=1)
    r = probe(model, task, "y_query", positions=[0, -1], n=64, generator=gen(8))
    assert r.ticks("pos") == ["x0", "y3"] and r.figure().data[0].type == "heatmap"
    back = Result.from_json(r.to_json())
    assert torch.equal(back.scores, r.scores) and back.metadata == r.metadata


def test_bad_arguments_are_one_line_value_errors():
    task, model = linear_model(k=4, n_layers=1)
    with pytest.raises(ValueError, match="target 'coefs' is not defined for task 'linear'; choose from w, w_ls"):
        probe(model, task, "coefs")
    with pytest.raises(ValueError, match="hook must name hooks"):
        probe(model, task, "w", hook="blocks.9.hook_resid_post")
    with pytest.raises(ValueError, match="positions must be"):
        probe(model, task, "w", positions=["z0"])
    with pytest.raises(ValueError, match="target must give a tensor"):
        probe(model, task, lambda batch: batch.targets[:3], n=16)
    poly = PolynomialTask(degrees=(1,))
    with pytest.raises(ValueError, match="constant"):
        probe(ModelSpec.for_task(poly, 4, n_layers=1, d_model=16).build(), poly, "degree", n=16)
