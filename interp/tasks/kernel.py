"""Functions drawn from a Gaussian process on the unit sphere (Cheng, Chen & Sra, ICML 2024).

The kernels are those of the official code (github chengxiang/transformer-functional-gradient,
``linear_transformer.py``): ``linear`` <u, v>, ``relu`` relu(<u, v>), ``exp`` exp(<u, v>/2) (σ = 1) and ``comb``,
exp(<u_{0:2}, v_{0:2}>/2) + <u_{2:4}, v_{2:4}> (the official ``combination_kernel`` slices ``X[:, :, 2:-1]``, so the
last input coordinate enters neither term). ``exp-unscaled`` is exp(<u, v>), this repo's earlier exp kernel, kept
for the models trained on it. relu(<u, v>) is not positive semi-definite; like the official code, y's covariance
is Q·|Λ|·Qᵀ for the eigendecomposition K = QΛQᵀ (``covariance``), and the Bayes predictor
(``interp.baselines.kernel_regression``) uses that same matrix. For a PSD kernel |Λ| = Λ changes nothing.

The official code draws y = Q·|Λ|^½·ξ. We draw y = S·ξ with the symmetric root S = Q·|Λ|^½·Qᵀ (``root``): the same
Gaussian, N(0, Q·|Λ|·Qᵀ), but a function of K alone. Q is not: where eigenvalues nearly coincide (the exp kernel's
tiny ones, relu's), a change of K at rounding level turns Q's columns, so Q·|Λ|^½·ξ changed by O(1) on 0.6% (exp)
to 13% (relu) of sequences under a 1e-15 perturbation, and one seed gave other data on another CPU. S moved by
at most 5e-8 under the same perturbation.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor

from ..validation import POSITIVE_INT, POSITIVE_REAL, Options, validate
from .base import LAYOUTS, Batch, Layout, RegressionTask
from .targets import QUERY, Target, context

KernelName = Literal["linear", "relu", "exp", "comb", "exp-unscaled"]


def _comb(u: Tensor, v: Tensor) -> Tensor:
    return torch.exp(u[..., :2] @ v[..., :2].transpose(-1, -2) / 2) + u[..., 2:-1] @ v[..., 2:-1].transpose(-1, -2)


KERNELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "linear": lambda u, v: u @ v.transpose(-1, -2),
    "relu": lambda u, v: torch.relu(u @ v.transpose(-1, -2)),
    "exp": lambda u, v: torch.exp(u @ v.transpose(-1, -2) / 2),
    "comb": _comb,
    "exp-unscaled": lambda u, v: torch.exp(u @ v.transpose(-1, -2)),
}


def gram(u: Tensor, v: Tensor, kernel: str) -> Tensor:
    """K(u_i, v_j): [batch, n, d], [batch, m, d] -> [batch, n, m]."""
    return KERNELS[kernel](u, v)


def root(k: Tensor) -> Tensor:
    """The symmetric root S = Q·|Λ|^½·Qᵀ of K = QΛQᵀ: [batch, n, n] -> [batch, n, n], float64. S·Sᵀ = Q·|Λ|·Qᵀ
    (``covariance``), and S, unlike Q, does not depend on how eigh picks a basis of near-equal eigenvalues."""
    evals, evecs = torch.linalg.eigh(k.double())
    return evecs @ torch.diag_embed(evals.abs().sqrt()) @ evecs.transpose(-1, -2)


def covariance(points: Tensor, kernel: str) -> Tensor:
    """The covariance y is drawn with on ``points`` [batch, n, d]: Q·|Λ|·Qᵀ for K = QΛQᵀ (the official rule;
    equal to K for a PSD kernel) -> [batch, n, n]. Computed in float64."""
    evals, evecs = torch.linalg.eigh(gram(points.double(), points.double(), kernel))
    return evecs @ torch.diag_embed(evals.abs()) @ evecs.transpose(-1, -2)


def gp_mean(task: "KernelTask", batch: Batch) -> Tensor:
    """The GP posterior mean at the query given the context (``interp.baselines.kernel_regression``): [batch, 1]."""
    from ..baselines import kernel_regression

    xs, ys, xq = context(batch)
    return kernel_regression(xs, ys, xq, kernel=task.kernel).float()


@dataclass(frozen=True)
class KernelTask(RegressionTask):
    """x uniform on the sphere of radius ``x_scale`` in d_x dims; y ~ GP(0, K) with K = h(<u, v>).

    ``layout="paired"`` is Cheng et al.'s: ``n_examples`` tokens [x_i, y_i], then the query [x_q, 0]."""

    name: ClassVar[str] = "kernel"
    default_examples: ClassVar[int] = 14
    cli_flags: ClassVar[tuple[str, ...]] = ("d", "x_scale", "kernel", "layout")
    scale_field: ClassVar[str | None] = "x_scale"
    probe_targets: ClassVar[dict[str, Target]] = {
        "gp_mean": Target(gp_mean, "regression", "GP posterior mean at the query"),  # type: ignore[arg-type]
        **QUERY,
    }
    d_x: int = 5
    kernel: KernelName = "exp"
    x_scale: float = 1.0
    layout: Layout = "interleaved"

    def __post_init__(self) -> None:
        validate(self, {"d_x": POSITIVE_INT, "kernel": [Options(tuple(KERNELS))], "x_scale": POSITIVE_REAL,
                        "layout": [Options(LAYOUTS)]})
        if self.kernel == "comb" and self.d_x < 4:
            raise ValueError(f"kernel 'comb' needs d_x >= 4 (exp on coordinates 0-1, linear on 2 to d_x - 2), got d_x={self.d_x}")

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        """The GP draw is carried by white noise ``eps`` [batch, k]; ``label`` colours it with the Gram matrix
        of the inputs, so new params on the same inputs give a new function."""
        return {"eps": torch.randn(batch_size, n_examples, generator=generator, dtype=torch.float64).float()}

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        xs = torch.randn(batch_size, n_examples, self.d_x, generator=generator, dtype=torch.float64)
        return (xs / xs.norm(dim=-1, keepdim=True) * self.x_scale).float()

    def label(self, xs: Tensor, params: dict[str, Tensor]) -> Tensor:
        # y = S·ξ, S = Q·|Λ|^½·Qᵀ: the official distribution (theirs is Q·|Λ|^½·ξ), stable across machines (see the
        # module docstring); eigh, not Cholesky: relu's Gram matrix is indefinite, linear's singular
        k = gram(xs.double(), xs.double(), self.kernel)
        if not torch.isfinite(k).all():  # exp overflows float64 once x_scale² passes ~700
            raise ValueError(f"the {self.kernel} kernel's Gram matrix overflows at x_scale={self.x_scale}; use a smaller scale")
        ys = torch.einsum("bij,bj->bi", root(k), params["eps"].double())
        return ys.float().unsqueeze(-1)

    @property
    def error_scale(self) -> float:
        """1: the error of a kernel task is the raw squared error, the number Cheng et al. report (their
        ``in_context_loss``), not Garg et al.'s squared error / d."""
        return 1.0

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """The regression baselines and the Bayes predictor ("kernel_regression", the GP posterior mean)."""
        from ..baselines import in_context, kernel_regression, regression_baselines

        return regression_baselines() | {"kernel_regression": in_context(partial(kernel_regression, kernel=self.kernel))}

    def ood(self) -> "KernelTask":
        """Inputs off the training sphere, at twice its radius."""
        return self.replace(x_scale=2.0 * self.x_scale)  # type: ignore[return-value]
