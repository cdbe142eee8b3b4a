"""In-context baselines: each loss position is predicted from the EARLIER examples of its own sequence only.

Example i is predicted from examples 0..i-1 (with no earlier example a regression baseline predicts 0),
which is what a causal model sees at the same position. A ``Fit`` solves one prefix length for the whole
batch at once; ``in_context`` runs it over every prefix length and puts the answers at the loss positions.

Every baseline has one call shape: ``baseline(batch)`` gives ``[batch, pos, d_out]`` float predictions
(0 at positions that are not scored) for regression tasks, and ``[batch, pos]`` long predictions for
modular arithmetic. Fits run in float64: least squares near the interpolation threshold (k ≈ d) is too
ill-conditioned for float32 to show the exact fit that the theory promises once k > d.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Literal

import einops
import torch
from torch import Tensor

from .tasks import Batch
from .tasks.kernel import covariance
from .tasks.polynomial import basis

Baseline = Callable[[Batch], Tensor]
Fit = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x [batch, n, d_x], y [batch, n, d_y], query [batch, d_x]) -> prediction at the query [batch, d_y]."""


# --- fits: one prefix, the whole batch --------------------------------------------------------------


def least_squares(x: Tensor, y: Tensor, query: Tensor) -> Tensor:
    """Minimum-norm least squares (Garg et al.): [batch, n, d], [batch, n, d_y], [batch, d] -> [batch, d_y]."""
    w = torch.linalg.pinv(x) @ y  # [batch, d, d_y]; pinv gives the minimum-norm w when n < d
    return einops.einsum(query, w, "b d, b d o -> b o")


def ridge(x: Tensor, y: Tensor, query: Tensor, alpha: float = 0.1) -> Tensor:
    """Ridge regression without intercept, w = (XᵀX + αI)⁻¹Xᵀy: [batch, n, d], [batch, n, d_y], [batch, d] -> [batch, d_y]."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    xt = x.transpose(-1, -2)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(xt @ x + alpha * eye, xt @ y)
    return einops.einsum(query, w, "b d, b d o -> b o")


def nearest_neighbours(x: Tensor, y: Tensor, query: Tensor, n_neighbors: int = 3) -> Tensor:
    """Mean y of the ``n_neighbors`` nearest x (all of them if fewer): [batch, n, d], [batch, n, d_y], [batch, d] -> [batch, d_y]."""
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be at least 1, got {n_neighbors}")
    dist = (x - query[:, None]).norm(dim=-1)  # [batch, n]
    idx = dist.topk(min(n_neighbors, x.shape[1]), dim=-1, largest=False).indices
    return torch.gather(y, 1, einops.repeat(idx, "b m -> b m o", o=y.shape[-1])).mean(dim=1)


def averaging(x: Tensor, y: Tensor, query: Tensor) -> Tensor:
    """Garg's averaging estimator, ŵ = mean_i y_i x_i: [batch, n, d], [batch, n, d_y], [batch, d] -> [batch, d_y]."""
    w = einops.einsum(x, y, "b n d, b n o -> b d o") / x.shape[1]
    return einops.einsum(query, w, "b d, b d o -> b o")


def poly_least_squares(
    x: Tensor, y: Tensor, query: Tensor, degree: int | Tensor, kind: Literal["monomial", "chebyshev"] = "monomial"
) -> Tensor:
    """Minimum-norm least squares on basis features of 1-D x: [batch, n, 1], [batch, n, d_y], [batch, 1] -> [batch, d_y].

    ``degree`` is one int or one per sequence ([batch] long)."""
    degree = torch.as_tensor(degree, device=x.device).expand(x.shape[0])
    max_degree = int(degree.max())
    # Zeroing the columns above a sequence's degree makes pinv give them zero weight, so one batched
    # solve fits every sequence at its own degree.
    keep = (torch.arange(max_degree + 1, device=x.device) <= degree[:, None]).to(x.dtype)  # [batch, max_degree + 1]
    feats = basis(x[..., 0], max_degree, kind) * keep[:, None]
    return least_squares(feats, y, basis(query[..., 0], max_degree, kind) * keep)


def kernel_regression(x: Tensor, y: Tensor, query: Tensor, kernel: str) -> Tensor:
    """The Bayes-optimal prediction for GP data, Σ_qc Σ_cc⁺ y: [batch, n, d], [batch, n, d_y], [batch, d] -> [batch, d_y].

    Σ is the covariance y is drawn with on the context and the query together (``interp.tasks.kernel.covariance``:
    Q·|Λ|·Qᵀ, the official code's ``bayes_prediction``), so for a PSD kernel this is the GP posterior mean
    vᵀK⁻¹y and for relu(<u, v>) the posterior mean of the process the data follow. The pseudo-inverse makes a
    rank-deficient Σ_cc (linear kernel, n > d) exact rather than unstable."""
    sigma = covariance(torch.cat([x, query[:, None]], dim=1), kernel)
    coef = torch.linalg.pinv(sigma[:, :-1, :-1], hermitian=True, rtol=1e-10)  # [batch, n, n]
    return (sigma[:, -1:, :-1] @ coef @ y.double())[:, 0].to(y.dtype)


def posterior_variance(x: Tensor, query: Tensor, kernel: str) -> Tensor:
    """The GP posterior variance of y at the query, Σ_qq - Σ_qc Σ_cc⁺ Σ_cq: [batch, n, d], [batch, d] -> [batch].
    Its mean over sequences is the Bayes predictor's expected squared error (float64)."""
    sigma = covariance(torch.cat([x, query[:, None]], dim=1), kernel)
    coef = torch.linalg.pinv(sigma[:, :-1, :-1], hermitian=True, rtol=1e-10)
    return (sigma[:, -1, -1] - (sigma[:, -1:, :-1] @ coef @ sigma[:, :-1, -1:])[:, 0, 0])


# --- regression baselines ----------------------------------------------------------------------------


def regression_examples(batch: Batch) -> tuple[Tensor, Tensor]:
    """Every example of a regression batch, the scored ones included: xs [batch, k, d_x'] and ys [batch, k, d_out].

    Interleaved batches give xs with the zero padding up to d_in - 1 channels (it changes none of the fits,
    which use only inner products and distances) and ys read from the y tokens. Paired batches give the
    x part of each token, and the ys of the context tokens followed by the query's target."""
    d_out = batch.targets.shape[-1]
    if batch.layout == "paired":
        ys = batch.inputs[..., -d_out:].clone()
        ys[:, -1] = batch.targets[:, -1]
        return batch.inputs[..., :-d_out], ys
    x_pos = batch.loss_mask[0].nonzero()[:, 0]
    return batch.inputs[:, x_pos, :-1], batch.inputs[:, x_pos + 1, :d_out]


def prefix_predictions(xs: Tensor, ys: Tensor, fit: Fit) -> Tensor:
    """Example i predicted by ``fit`` on examples 0..i-1, 0 for i = 0: [batch, k, d_x], [batch, k, d_y] -> [batch, k, d_y]."""
    preds = torch.zeros_like(ys)
    for i in range(1, xs.shape[1]):
        preds[:, i] = fit(xs[:, :i], ys[:, :i], xs[:, i])
    return preds


def in_context(fit: Fit) -> Baseline:
    """Turn a prefix fit into a baseline: batch -> [batch, pos, d_out], 0 off the loss positions. The loss
    positions are the last examples (all of them interleaved, the query alone when paired)."""

    def baseline(batch: Batch) -> Tensor:
        xs, ys = regression_examples(batch)
        if batch.layout == "paired":  # only the query is scored: fit the context once
            preds = fit(xs[:, :-1].double(), ys[:, :-1].double(), xs[:, -1].double())[:, None]
        else:
            preds = prefix_predictions(xs.double(), ys.double(), fit)
        out = torch.zeros_like(batch.targets)
        out[batch.loss_mask] = einops.rearrange(preds.to(out.dtype), "b k o -> (b k) o")
        return out

    return baseline


def true_degree_poly_least_squares(kind: Literal["monomial", "chebyshev"], max_degree: int) -> Baseline:
    """Polynomial least squares at each sequence's true degree (an oracle for the class, read from
    ``params["degree"]``; ``max_degree`` when the batch has none): batch -> [batch, pos, 1]."""

    def baseline(batch: Batch) -> Tensor:
        degree = batch.params.get("degree", torch.tensor(max_degree))
        return in_context(partial(poly_least_squares, degree=degree, kind=kind))(batch)

    return baseline


# --- complex zeros -----------------------------------------------------------------------------------


def nearest_root_of_fit(zs: Tensor, fz: Tensor, z_q: Tensor, degree: int) -> Tensor:
    """Fit a degree-``degree`` complex polynomial to (z_i, f(z_i)) by minimum-norm least squares and
    return its root nearest z_q: complex [batch, k], [batch, k], [batch] -> complex [batch]."""
    vander = zs[..., None] ** torch.arange(degree + 1, device=zs.device)  # [batch, k, degree + 1]
    coefs = (torch.linalg.pinv(vander) @ fz[..., None])[..., 0]  # c_0..c_degree
    lead = coefs[:, -1:]
    # A leading coefficient of exactly 0 (too few samples) would put inf in the companion matrix.
    lead = torch.where(lead.abs() < 1e-12, torch.full_like(lead, 1e-12), lead)
    monic = coefs[:, :-1] / lead
    # Roots are the eigenvalues of the companion matrix: ones below the diagonal, -c_j/c_n in the last column.
    companion = torch.diag_embed(torch.ones(zs.shape[0], degree - 1, dtype=zs.dtype, device=zs.device), offset=-1)
    companion[:, :, -1] = -monic
    roots = torch.linalg.eigvals(companion)  # [batch, degree]
    return roots.gather(1, (roots - z_q[:, None]).abs().argmin(dim=-1, keepdim=True))[:, 0]


def complex_root_least_squares(degree: int) -> Baseline:
    """Complex-zeros baseline: least-squares polynomial through the context, its root nearest the query:
    batch -> [batch, pos, 2], (re, im) of the root at the query position, 0 elsewhere."""

    def baseline(batch: Batch) -> Tensor:
        pairs = batch.inputs[..., :2].double()
        as_complex = torch.complex(pairs[..., 0], pairs[..., 1])  # [batch, pos]
        root = nearest_root_of_fit(as_complex[:, 0:-1:2], as_complex[:, 1:-1:2], as_complex[:, -1], degree)
        out = torch.zeros_like(batch.targets)
        out[:, -1] = torch.stack([root.real, root.imag], dim=-1).to(out.dtype)
        return out

    return baseline


# --- modular arithmetic ------------------------------------------------------------------------------


def modular_examples(batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """The examples of a modular batch: x, y, z, each [batch, k] long.

    z is read from the targets at the y positions: the last z is not among the inputs, and a
    predictor at example i only ever uses z_0..z_{i-1}."""
    y_pos = batch.loss_mask[0].nonzero()[:, 0]
    return batch.inputs[:, y_pos - 1], batch.inputs[:, y_pos], batch.targets[:, y_pos]


def candidate_tasks(p: int, device: torch.device | str = "cpu") -> Tensor:
    """All p² task vectors (a, b), a-major: [p², 2] long."""
    c = torch.arange(p * p, device=device)
    return torch.stack([c // p, c % p], dim=-1)


def consistent_tasks(x: Tensor, y: Tensor, z: Tensor, p: int) -> Tensor:
    """Which (a, b) agree with each example, z = a·x + b·y mod p: [batch, n] x3 -> [batch, p², n] bool."""
    ab = candidate_tasks(p, x.device)
    pred = ab[None, :, 0, None] * x[:, None] + ab[None, :, 1, None] * y[:, None]  # [batch, p², n]
    return pred % p == z[:, None]


def solve_mod_p(x: Tensor, y: Tensor, z: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """Brute-force the (a, b) ∈ Z_p² consistent with every example: [batch, n] x3 -> ab [batch, 2], unique [batch] bool.

    ``ab`` is the first consistent candidate in a-major order; ``unique`` says whether it is the only one."""
    ok = consistent_tasks(x, y, z, p).all(dim=-1)  # [batch, p²]
    first = ok.int().argmax(dim=-1)
    return candidate_tasks(p, x.device)[first], ok.sum(dim=-1) == 1


def mod_p_solver(p: int) -> Baseline:
    """Exact in-context solver: batch -> [batch, pos] long. At example i it answers z_i when every
    (a, b) consistent with examples 0..i-1 gives the same a·x_i + b·y_i, and -1 (always wrong) when the
    context leaves the answer open. Unscored positions hold -1 too.

    Its accuracy is therefore the fraction of queries the context determines, which is also what any
    exact algorithm can reach beyond guessing (ratio matching counts as determined: the query is a
    multiple of an earlier example)."""

    def baseline(batch: Batch) -> Tensor:
        x, y, z = modular_examples(batch)
        # prefix_ok[:, :, i]: consistent with examples 0..i-1 (vacuously true for i = 0)
        ok = consistent_tasks(x, y, z, p).to(torch.uint8).cummin(dim=-1).values
        prefix_ok = torch.cat([torch.ones_like(ok[..., :1]), ok[..., :-1]], dim=-1).bool()
        ab = candidate_tasks(p, x.device)
        preds = torch.full_like(z, -1)
        for i in range(x.shape[1]):
            answers = (ab[None, :, 0] * x[:, i, None] + ab[None, :, 1] * y[:, i, None]) % p  # [batch, p²]
            lo = torch.where(prefix_ok[..., i], answers, p).min(dim=-1).values
            hi = torch.where(prefix_ok[..., i], answers, -1).max(dim=-1).values
            preds[:, i] = torch.where(lo == hi, lo, -1)
        out = torch.full(batch.loss_mask.shape, -1, dtype=torch.long, device=z.device)
        out[batch.loss_mask] = einops.rearrange(preds, "b k -> (b k)")
        return out

    return baseline


# --- per task ----------------------------------------------------------------------------------------


def regression_baselines() -> dict[str, Baseline]:
    """The baselines of every real-valued task with vector inputs, by name: least squares, ridge (alpha 0.1), 3-NN
    and averaging. Each task class adds its own in ``task.baselines()``."""
    return {
        "least_squares": in_context(least_squares),
        "ridge": in_context(partial(ridge, alpha=0.1)),
        "3-nn": in_context(partial(nearest_neighbours, n_neighbors=3)),
        "averaging": in_context(averaging),
    }
