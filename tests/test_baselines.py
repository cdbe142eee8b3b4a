"""In-context baselines: exactness where theory says so, agreement with scikit-learn and hand computations."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor

from interp.baselines import (
    averaging,
    complex_root_least_squares,
    in_context,
    kernel_regression,
    least_squares,
    mod_p_solver,
    modular_examples,
    nearest_neighbours,
    poly_least_squares,
    ridge,
    solve_mod_p,
)
from interp.tasks import (
    Batch,
    ComplexZerosTask,
    KernelTask,
    LinearTask,
    ModularTask,
    PolynomialTask,
    RegressionTask,
    interleave,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def by_position(pred: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Squared error at the loss positions: [batch, k]."""
    err = ((pred - batch.targets) ** 2).sum(-1)[batch.loss_mask]
    return err.reshape(batch.targets.shape[0], -1)


def hand_batch(xs: list[list[float]], ys: list[float]) -> Batch:
    """A one-sequence regression batch from explicit examples."""
    x = torch.tensor(xs)[None]
    y = torch.tensor(ys)[None, :, None]
    k = x.shape[1]
    targets = torch.zeros(1, 2 * k, 1)
    targets[:, 0::2] = y
    mask = torch.zeros(1, 2 * k, dtype=torch.bool)
    mask[:, 0::2] = True
    return Batch(interleave(x, y, max(x.shape[-1], 1) + 1), targets, mask)


def at_x(pred: torch.Tensor) -> list[float]:
    """The predictions at the x positions of a one-sequence batch."""
    return pred[0, 0::2, 0].tolist()


def test_least_squares_exact_once_k_exceeds_d():
    d, k = 5, 12
    batch = LinearTask(d_x=d).sample(128, k, gen())
    err = by_position(in_context(least_squares)(batch), batch) / d
    assert err[:, d + 1 :].max() < 1e-4
    # before d examples it cannot be exact: a baseline that peeked at the answer would be
    assert err[:, 1:d].mean() > 0.05
    assert torch.all(err[:, 0] == (batch.targets[:, 0, 0] ** 2) / d)  # 0 examples -> predict 0


@pytest.mark.parametrize("n", [3, 8])  # 3 < d: minimum-norm solution; 8 > d: the ordinary one
def test_least_squares_and_ridge_match_sklearn(n):
    batch = LinearTask(d_x=5).sample(4, 10, gen(1))
    ls = in_context(least_squares)(batch)
    rd = in_context(partial(ridge, alpha=0.5))(batch)
    x = batch.inputs[:, 0::2, :5].double().numpy()
    y = batch.targets[:, 0::2, 0].double().numpy()
    for s in range(4):
        want_ls = LinearRegression(fit_intercept=False).fit(x[s, :n], y[s, :n]).predict(x[s, n : n + 1])[0]
        want_rd = Ridge(alpha=0.5, fit_intercept=False).fit(x[s, :n], y[s, :n]).predict(x[s, n : n + 1])[0]
        assert ls[s, 2 * n, 0].item() == pytest.approx(want_ls, abs=1e-4)
        assert rd[s, 2 * n, 0].item() == pytest.approx(want_rd, abs=1e-4)
        assert abs(want_rd - want_ls) > 1e-3  # the two checks are not the same check


def test_three_nn_by_hand():
    # x: 0, 10, 1, 2, 11 with y: 1..5
    batch = hand_batch([[0.0], [10.0], [1.0], [2.0], [11.0]], [1, 2, 3, 4, 5])
    pred = at_x(in_context(partial(nearest_neighbours, n_neighbors=3))(batch))
    # i=1: only y0; i=2: mean(y0, y1); i=3: all three; i=4 (x=11): nearest 10, 2, 1 -> mean(2, 4, 3)
    assert pred == pytest.approx([0.0, 1.0, 1.5, 2.0, 3.0])


def test_three_nn_matches_sklearn():
    batch = KernelTask(d_x=3).sample(3, 9, gen(2))
    pred = in_context(partial(nearest_neighbours, n_neighbors=3))(batch)
    x = batch.inputs[:, 0::2, :3].numpy()
    y = batch.targets[:, 0::2, 0].numpy()
    for s in range(3):
        for n in (3, 6, 8):
            want = KNeighborsRegressor(n_neighbors=3).fit(x[s, :n], y[s, :n]).predict(x[s, n : n + 1])[0]
            assert pred[s, 2 * n, 0].item() == pytest.approx(want, abs=1e-5)


def test_averaging_by_hand():
    batch = hand_batch([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [2.0, 4.0, 0.0])
    # i=1: w = 2·(1,0) -> pred at (0,1) is 0; i=2: w = mean(2·(1,0), 4·(0,1)) = (1, 2) -> pred at (1,1) is 3
    assert at_x(in_context(averaging)(batch)) == pytest.approx([0.0, 0.0, 3.0])


@pytest.mark.parametrize("kind", ["monomial", "chebyshev"])
def test_poly_least_squares_of_true_degree_is_exact_once_k_exceeds_degree(kind):
    task = PolynomialTask(degrees=(1, 2, 3), basis=kind)
    batch = task.sample(96, 10, gen(3))
    err = by_position(task.baselines()["poly_ls"](batch), batch)
    degree = batch.params["degree"]
    past = torch.arange(10)[None] > degree[:, None]  # more earlier examples than the degree
    # exact up to the float32 rounding of the data, which two nearly equal x's can amplify when
    # the fit is exactly determined, so the max is only checked with one example to spare
    assert err[past].median() < 1e-8
    assert err[torch.arange(10)[None] > degree[:, None] + 1].max() < 1e-6
    # at exactly `degree` examples the fit is underdetermined, so not exact
    assert err[torch.arange(96), degree].mean() > 1e-2
    # fixed degree = the max degree is exact as well once k > 3
    fixed = by_position(in_context(partial(poly_least_squares, degree=3, kind=kind))(batch), batch)
    assert fixed[:, 4:].median() < 1e-8 and fixed[:, 5:].max() < 1e-6


def test_kernel_regression_with_linear_kernel_beats_averaging_and_matches_least_squares():
    task = KernelTask(d_x=5, kernel="linear")
    batch = task.sample(128, 12, gen(4))
    bl = task.baselines()
    kr = by_position(bl["kernel_regression"](batch), batch)
    avg = by_position(bl["averaging"](batch), batch)
    ls = by_position(bl["least_squares"](batch), batch)
    assert kr[:, 1:].mean() < 0.5 * avg[:, 1:].mean()
    assert kr[:, 6:].max() < 1e-4 and ls[:, 6:].max() < 1e-4  # linear-kernel GP data is linear: both exact


def test_kernel_regression_with_matching_kernel_beats_linear_fits():
    task = KernelTask(d_x=5, kernel="exp")
    batch = task.sample(256, 14, gen(5))
    exp_err = by_position(in_context(partial(kernel_regression, kernel="exp"))(batch), batch)[:, 1:].mean()
    lin_err = by_position(in_context(partial(kernel_regression, kernel="linear"))(batch), batch)[:, 1:].mean()
    assert exp_err < lin_err


@pytest.mark.parametrize("kernel", ["linear", "relu", "exp", "comb"])
def test_kernel_regression_is_bayes_optimal(kernel):
    """On paired GP data the Bayes predictor's mean squared error is the mean posterior variance,
    Σ_qq - Σ_qc Σ_cc⁺ Σ_cq, in closed form from the covariance the task draws y with: Q·|Λ|·Qᵀ for the Gram
    matrix QΛQᵀ (the official rule; relu's has negative eigenvalues), which ``posterior_variance`` computes too."""
    from interp.baselines import posterior_variance
    from interp.tasks.kernel import gram

    task = KernelTask(d_x=5, kernel=kernel, layout="paired")
    batch = task.sample(20000, 8, gen(7))
    pred = task.baselines()["kernel_regression"](batch)
    sq = ((pred - batch.targets)[:, -1, 0] ** 2).double()
    evals, evecs = torch.linalg.eigh(gram(batch.examples.double(), batch.examples.double(), kernel))
    sigma = evecs @ torch.diag_embed(evals.abs()) @ evecs.transpose(-1, -2)
    s_cc, s_cq = sigma[:, :-1, :-1], sigma[:, :-1, -1:]
    post_var = sigma[:, -1, -1] - (s_cq.transpose(-1, -2) @ torch.linalg.pinv(s_cc, hermitian=True, rtol=1e-10) @ s_cq)[:, 0, 0]
    assert abs(sq.mean() - post_var.mean()) < 4 * sq.std() / len(sq) ** 0.5 + 1e-6
    assert torch.allclose(posterior_variance(batch.examples[:, :-1], batch.examples[:, -1], kernel), post_var)
    if kernel == "linear":  # 8 points in d = 5 determine w: exact
        assert sq.max() < 1e-6
    else:  # a real regression problem: relu with its eigenvalues clipped at 0 instead had ~4e-5
        assert post_var.mean() > 1e-4
    # and it beats every other baseline there
    for name, baseline in task.baselines().items():
        assert ((baseline(batch) - batch.targets)[:, -1, 0] ** 2).mean() >= sq.mean() - 1e-6, name


@pytest.mark.parametrize("task", [LinearTask(d_x=4), PolynomialTask(), KernelTask(d_x=4)], ids=lambda t: t.name)
def test_regression_baselines_use_only_earlier_examples(task: RegressionTask):
    batch = task.sample(8, 6, gen(6))
    changed = Batch(batch.inputs.clone(), batch.targets.clone(), batch.loss_mask, batch.params, batch.pos_labels)
    changed.inputs[:, -1, 0] += 5.0  # the last y
    changed.inputs[:, -2, :-1] += 5.0  # the last x: only the last prediction may move
    for name, baseline in task.baselines().items():
        before, after = baseline(batch), baseline(changed)
        assert before.shape == batch.targets.shape, name
        assert torch.equal(before[:, :-2], after[:, :-2]), name
        assert not torch.equal(before[:, -2], after[:, -2]), name
        assert torch.all(before[:, 0] == 0) and torch.all(before[~batch.loss_mask] == 0), name


def test_complex_root_least_squares_finds_the_nearest_root():
    task = ComplexZerosTask(degree=3)
    batch = task.sample(64, 6, gen(7))
    pred = complex_root_least_squares(3)(batch)
    assert pred.shape == batch.targets.shape
    assert torch.all(pred[:, :-1] == 0)
    assert (pred[:, -1] - batch.targets[:, -1]).abs().max() < 1e-4
    # with fewer samples than coefficients the fit is underdetermined and usually wrong
    short = task.sample(64, 3, gen(7))
    assert (complex_root_least_squares(3)(short)[:, -1] - short.targets[:, -1]).norm(dim=-1).mean() > 0.05


def test_solve_mod_p_recovers_determined_tasks_and_flags_the_rest():
    p = 7
    batch = ModularTask(p=p, n_tasks=48).sample(200, 8, gen(8))
    x, y, z = modular_examples(batch)
    ab, unique = solve_mod_p(x, y, z, p)
    truth = torch.stack([batch.params["a"], batch.params["b"]], dim=-1)
    assert unique.float().mean() > 0.9  # 8 random examples pin (a, b) down almost always
    assert torch.equal(ab[unique], truth[unique])
    # all examples on one line through 0 leave a line of solutions: z = a·c + 2b·c, 7 candidates
    c = torch.arange(1, 5)[None]
    ab_line, unique_line = solve_mod_p(c, 2 * c, (3 * c + 2 * 2 * c) % p, p)
    assert not unique_line.item()
    assert (3 + 2 * 2) % p == (ab_line[0, 0] + 2 * ab_line[0, 1]).item() % p  # still consistent


def test_mod_p_solver_is_never_wrong_when_it_answers():
    p = 7
    batch = ModularTask(p=p, n_tasks=48).sample(200, 10, gen(9))
    pred = mod_p_solver(p)(batch)
    assert pred.shape == batch.loss_mask.shape and pred.dtype == torch.long
    scored, target = pred[batch.loss_mask].reshape(200, 10), batch.targets[batch.loss_mask].reshape(200, 10)
    answered = scored != -1
    assert torch.equal(scored[answered], target[answered])
    assert answered[:, -1].float().mean() > 0.95  # 9 earlier examples determine almost every answer
    assert answered[:, 1].float().mean() < 0.5  # one example rarely does


def test_mod_p_solver_does_ratio_matching():
    # context (1, 2, z0 = 5); the query (2, 4) is twice it, so z = 2·5 = 10 = 3 mod 7 whatever (a, b) is
    inputs = torch.tensor([[1, 2, 5, 2, 4]])
    targets = torch.tensor([[2, 5, 2, 4, 3]])
    mask = torch.tensor([[False, True, False, False, True]])
    pred = mod_p_solver(7)(Batch(inputs, targets, mask))
    assert pred[0, 4].item() == 3
    assert pred[0, 1].item() == -1  # no example yet and (x, y) != (0, 0): undetermined


def test_baselines_of_each_task():
    assert set(LinearTask().baselines()) == {"least_squares", "ridge", "3-nn", "averaging"}
    assert set(PolynomialTask().baselines()) == {"least_squares", "ridge", "3-nn", "averaging", "poly_ls"}
    assert "kernel_regression" in KernelTask().baselines()
    assert set(ComplexZerosTask().baselines()) == {"poly_root_ls"}
    assert set(ModularTask(p=5, n_tasks=4).baselines()) == {"exact_mod_p"}


def test_bad_hyperparameters_name_the_argument():
    x, y, q = torch.zeros(1, 2, 3), torch.zeros(1, 2, 1), torch.zeros(1, 3)
    with pytest.raises(ValueError, match="alpha"):
        ridge(x, y, q, alpha=0.0)
    with pytest.raises(ValueError, match="n_neighbors"):
        nearest_neighbours(x, y, q, n_neighbors=0)
