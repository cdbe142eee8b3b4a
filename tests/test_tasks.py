import pytest
import torch

from interp.tasks import (TASKS, ComplexZerosTask, KernelTask, LinearTask, ModularTask, PolynomialTask,
                          task_from_dict)
from interp.tasks.polynomial import basis

ALL_TASKS = [LinearTask(d_x=3), PolynomialTask(), PolynomialTask(basis="chebyshev"), KernelTask(kernel="relu"),
             KernelTask(kernel="exp", layout="paired"),
             ModularTask(p=7, n_tasks=20), ComplexZerosTask()]


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.describe())
def test_sampling_is_deterministic_and_seed_dependent(task, gen):
    a, b, c = task.sample(8, 6, gen(1)), task.sample(8, 6, gen(1)), task.sample(8, 6, gen(2))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.describe())
def test_shapes_and_roundtrip(task, gen):
    batch = task.sample(8, 6, gen())
    n_ctx = task.n_ctx(6)
    assert batch.inputs.shape[:2] == (8, n_ctx) == batch.loss_mask.shape
    assert batch.targets.shape[:2] == (8, n_ctx)
    assert len(batch.pos_labels) == n_ctx
    assert task_from_dict(task.to_dict()) == task


@pytest.mark.parametrize("task", [LinearTask(d_x=3), PolynomialTask(), KernelTask()], ids=lambda t: t.name)
def test_regression_layout(task, gen):
    """x_1, y_1, x_2, y_2, ...: targets and loss at the x positions; the y token carries y and a flag."""
    batch = task.sample(4, 5, gen())
    assert batch.loss_mask[0].tolist() == [True, False] * 5
    x_tok, y_tok = batch.inputs[:, 0::2], batch.inputs[:, 1::2]
    assert torch.all(x_tok[..., -1] == 0) and torch.all(y_tok[..., -1] == 1)
    assert torch.allclose(y_tok[..., 0], batch.targets[:, 0::2, 0])


def test_linear_targets_are_w_dot_x(gen):
    task = LinearTask(d_x=4, x_dist="uniform", x_scale=2.0)
    batch = task.sample(16, 7, gen())
    xs = batch.inputs[:, 0::2, :4]
    assert xs.abs().max() <= 2.0
    assert torch.allclose(torch.einsum("bkd,bd->bk", xs, batch.params["w"]), batch.targets[:, 0::2, 0], atol=1e-5)
    cur = task.replace(active_dims=2).sample(16, 7, gen())
    assert torch.all(cur.inputs[:, 0::2, 2:4] == 0) and torch.all(cur.params["w"][:, 2:] == 0)


def test_polynomial_degrees_and_bases(gen):
    x = torch.linspace(-1, 1, 11)
    cheb = basis(x, 3, "chebyshev")
    assert torch.allclose(cheb[:, 3], 4 * x**3 - 3 * x, atol=1e-6)  # T_3
    assert torch.allclose(basis(x, 3, "monomial")[:, 2], x**2)
    task = PolynomialTask(degrees=(1, 2, 3))
    batch = task.sample(64, 5, gen())
    deg = batch.params["degree"]
    assert set(deg.tolist()) <= {1, 2, 3}
    above = torch.arange(4)[None] > deg[:, None]
    assert torch.all(batch.params["coefs"][above] == 0)
    held_out = task.replace(degrees=(4,)).sample(8, 5, gen())
    assert torch.all(held_out.params["degree"] == 4)
    xs = batch.inputs[:, 0::2, 0]
    ys = torch.einsum("bkj,bj->bk", basis(xs, 3, "monomial"), batch.params["coefs"])
    assert torch.allclose(ys, batch.targets[:, 0::2, 0], atol=1e-5)


def test_kernel_inputs_on_sphere_and_gp_covariance(gen):
    task = KernelTask(kernel="linear", d_x=5)
    batch = task.sample(4000, 3, gen())
    xs = batch.inputs[:, 0::2, :5]
    assert torch.allclose(xs.norm(dim=-1), torch.ones(4000, 3), atol=1e-5)
    ys = batch.targets[:, 0::2, 0]
    # linear kernel: Cov(y_i, y_j | x) = <x_i, x_j>; check E[y_0 y_1 - <x_0, x_1>] ~ 0 and E[y² ] ~ 1
    assert abs((ys[:, 0] * ys[:, 1] - (xs[:, 0] * xs[:, 1]).sum(-1)).mean()) < 0.05
    assert abs(ys.pow(2).mean() - 1) < 0.05


def test_kernel_paired_layout(gen):
    """Cheng et al.'s layout: n tokens [x_i, y_i], then [x_q, 0]; the query's y is the one target."""
    task = KernelTask(kernel="linear", d_x=4, layout="paired")
    batch = task.sample(4000, 6, gen())
    assert batch.inputs.shape == (4000, 7, 5) and batch.pos_labels == ("xy0", "xy1", "xy2", "xy3", "xy4", "xy5", "query")
    assert batch.loss_mask[:, -1].all() and batch.loss_mask.sum() == 4000 and torch.all(batch.inputs[:, -1, 4] == 0)
    xs, y_q = batch.inputs[..., :4], batch.targets[:, -1, 0]
    assert torch.equal(xs, batch.examples) and torch.allclose(xs.norm(dim=-1), torch.ones(4000, 7), atol=1e-5)
    # linear kernel: Cov(y_i, y_q | x) = <x_i, x_q>, for context ys and the query's target alike
    assert abs((batch.inputs[:, 0, 4] * y_q - (xs[:, 0] * xs[:, -1]).sum(-1)).mean()) < 0.05
    assert abs(y_q.pow(2).mean() - 1) < 0.05
    with pytest.raises(ValueError, match="layout"):
        KernelTask(layout="stacked")


def test_modular_splits_are_disjoint_and_targets_right(gen):
    task = ModularTask(p=7, n_tasks=20, split_seed=3)
    ood = task.ood()
    id_set = {tuple(v) for v in task.task_vectors.tolist()}
    ood_set = {tuple(v) for v in ood.task_vectors.tolist()}
    assert len(id_set) == 20 and not id_set & ood_set and len(id_set | ood_set) == 49
    assert {tuple(v) for v in ModularTask(p=7, n_tasks=20, split_seed=4).task_vectors.tolist()} != id_set
    batch = task.sample(32, 5, gen())
    seq = torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).reshape(32, 5, 3)
    a, b = batch.params["a"][:, None], batch.params["b"][:, None]
    assert torch.equal(seq[..., 2], (a * seq[..., 0] + b * seq[..., 1]) % 7)
    assert {(x, y) for x, y in zip(a[:, 0].tolist(), b[:, 0].tolist())} <= id_set
    # the loss falls on the z tokens, predicted at the y positions
    assert batch.loss_mask[0].nonzero()[:, 0].tolist() == [1, 4, 7, 10, 13]
    assert torch.equal(batch.targets[batch.loss_mask].reshape(32, 5), seq[..., 2])


def test_modular_pair_split(gen):
    train = ModularTask(p=7, n_tasks=10, pair_fraction=0.5)
    test = train.replace(pairs="test")
    tr, te = ({tuple(v) for v in t.pair_set.tolist()} for t in (train, test))
    assert not tr & te and len(tr | te) == 49
    batch = test.sample(16, 4, gen())
    seq = torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).reshape(16, 4, 3)
    assert {tuple(v) for v in seq[..., :2].reshape(-1, 2).tolist()} <= te


def test_complex_zeros_target_is_nearest_root(gen):
    task = ComplexZerosTask(degree=3)
    batch = task.sample(16, 6, gen())
    roots = torch.complex(batch.params["roots"][..., 0], batch.params["roots"][..., 1])
    z_q = torch.complex(batch.inputs[:, -1, 0], batch.inputs[:, -1, 1])
    target = torch.complex(batch.targets[:, -1, 0], batch.targets[:, -1, 1])
    assert torch.allclose((target - z_q).abs(), (roots - z_q[:, None]).abs().min(-1).values, atol=1e-5)
    z0 = torch.complex(batch.inputs[:, 0, 0], batch.inputs[:, 0, 1]).to(torch.complex128)
    f0 = torch.complex(batch.inputs[:, 1, 0], batch.inputs[:, 1, 1])
    assert torch.allclose(torch.prod(z0[:, None] - roots.to(torch.complex128), -1).to(torch.complex64), f0, atol=1e-4)
    assert batch.loss_mask.sum().item() == 16 and batch.loss_mask[:, -1].all()


def test_bad_task_arguments_raise():
    with pytest.raises(ValueError):
        ModularTask(p=5, n_tasks=25)
    with pytest.raises(ValueError):
        task_from_dict({"name": "nope"})
    with pytest.raises(ValueError):
        task_from_dict({"name": "linear", "p": 3})
    assert set(TASKS) == {"linear", "polynomial", "kernel", "modular", "complex-zeros"}


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.describe())
def test_corruptions_change_only_what_they_name(task, gen):
    clean = task.sample(16, 5, gen())
    new_params = task.corrupt(clean, "params", gen(1))
    assert torch.equal(new_params.examples, clean.examples)
    assert any(not torch.equal(new_params.params[k], clean.params[k]) for k in clean.params)
    new_query = task.corrupt(clean, "query", gen(1))
    assert torch.equal(new_query.examples[:, :-1], clean.examples[:, :-1])
    assert not torch.equal(new_query.examples[:, -1], clean.examples[:, -1])
    assert all(torch.equal(new_query.params[k], clean.params[k]) for k in clean.params)
    for corrupted in (new_params, new_query):
        assert corrupted.inputs.shape == clean.inputs.shape and torch.equal(corrupted.loss_mask, clean.loss_mask)
    if task.kind == "regression":
        shifted = task.corrupt(clean, "shift", gen(1))
        assert torch.allclose(shifted.examples, 3 * clean.examples)
    else:
        with pytest.raises(ValueError, match="real-valued"):
            task.corrupt(clean, "shift", gen(1))
    # the linear task's corrupted labels are recomputed, not copied
    if task.name == "linear":
        assert torch.allclose(new_params.targets[:, 0::2, 0], torch.einsum("bkd,bd->bk", clean.examples, new_params.params["w"]), atol=1e-5)


def test_legacy_parallelogram_sampling_comes_in_fours_and_splits_cleanly():
    task = ModularTask(p=29, n_tasks=64, sampling="parallelogram-legacy", split_seed=2)
    id_set = [tuple(v) for v in task.task_vectors.tolist()]
    ood_set = {tuple(v) for v in task.ood().task_vectors.tolist()}
    assert len(set(id_set)) == 64 and not set(id_set) & ood_set and len(ood_set) == 29**2 - 64
    (a, b), (a_, b2), (a2, b_) = id_set[0], id_set[1], id_set[2]
    assert a_ == a and b_ == b and (a2, b2) in id_set  # (a, b), (a, b'), (a', b), (a', b')
    # every pre-training task shares its a with another task and its b with another (the parallelogram's sides)
    assert all(sum(t[0] == a for t in id_set) >= 2 and sum(t[1] == b for t in id_set) >= 2 for a, b in id_set)
    assert id_set != [tuple(v) for v in ModularTask(p=29, n_tasks=64).task_vectors.tolist()]


def test_modular_eval_splits_are_he_et_als_four_sets():
    task = ModularTask(p=7, n_tasks=10, pair_fraction=0.5)
    splits = task.eval_splits()
    assert list(splits) == ["id_train", "id_test", "ood_train", "ood_test"]
    assert (splits["ood_test"].split, splits["ood_test"].pairs) == ("ood", "test")
    assert list(ModularTask(p=7, n_tasks=10).eval_splits()) == ["id", "ood"]
    assert list(LinearTask().eval_splits()) == ["id", "ood"]


def test_kernel_gram_overflow_is_a_clear_error(gen):
    import pytest

    with pytest.raises(ValueError, match="overflows at x_scale=40"):  # exp(40²/2) is past float64's e^709
        KernelTask(kernel="exp", x_scale=40.0).sample(4, 5, gen())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_per_task_knowledge_on_the_class_names_real_fields(name):
    """What the CLI, evaluation and probes read off a task class: flags that set a field, float scale fields,
    probe targets that give one row per sequence, and baselines that predict every position."""
    import dataclasses

    from interp.cli import FLAG_FIELDS

    cls = TASKS[name]
    task = cls(p=5, n_tasks=4) if name == "modular" else cls()
    fields = {f.name for f in dataclasses.fields(cls)}
    assert cls.default_examples >= 1 and cls.cli_flags
    assert {FLAG_FIELDS.get(flag, flag) for flag in cls.cli_flags} <= fields
    for field in (cls.scale_field, cls.coef_field):
        assert field is None or isinstance(getattr(task, field), float)
    assert (cls.scale_field is not None) == (task.kind == "regression")
    batch = task.sample(4, 5, torch.Generator().manual_seed(0))
    for target in cls.probe_targets.values():
        assert target.fn(task, batch).shape[0] == 4
    for baseline in task.baselines().values():
        assert baseline(batch).shape == batch.targets.shape


def test_the_train_parsers_task_flags_are_the_task_classes():
    from interp.parser import build_parser, subparsers

    train = subparsers(build_parser())["train"]
    group = next(g for g in train._action_groups if g.title == "task")
    assert [a.dest for a in group._group_actions] and \
        {a.dest for a in group._group_actions} == {f for cls in TASKS.values() for f in cls.cli_flags}
