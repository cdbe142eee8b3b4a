"""Functions drawn from a Gaussian process on the unit sphere (Cheng, Chen & Sra, ICML 2024)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor

from .base import LAYOUTS, Layout, RegressionTask

KernelName = Literal["linear", "relu", "exp"]

KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda g: g,
    "relu": torch.relu,
    "exp": torch.exp,
}


def gram(u: Tensor, v: Tensor, kernel: str) -> Tensor:
    """K(u_i, v_j) = h(<u_i, v_j>): [batch, n, d], [batch, m, d] -> [batch, n, m]."""
    return KERNELS[kernel](u @ v.transpose(-1, -2))


@dataclass(frozen=True)
class KernelTask(RegressionTask):
    """x uniform on the sphere of radius ``x_scale`` in d_x dims; y ~ GP(0, K) with K = h(<u, v>).

    ``layout="paired"`` is Cheng et al.'s: ``n_examples`` tokens [x_i, y_i], then the query [x_q, 0]."""

    name: ClassVar[str] = "kernel"
    d_x: int = 5
    kernel: KernelName = "exp"
    x_scale: float = 1.0
    layout: Layout = "interleaved"

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {self.kernel!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        """The GP draw is carried by white noise ``eps`` [batch, k]; ``label`` colours it with the Gram matrix
        of the inputs, so new params on the same inputs give a new function."""
        return {"eps": torch.randn(batch_size, n_examples, generator=generator, dtype=torch.float64).float()}

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        xs = torch.randn(batch_size, n_examples, self.d_x, generator=generator, dtype=torch.float64)
        return (xs / xs.norm(dim=-1, keepdim=True) * self.x_scale).float()

    def label(self, xs: Tensor, params: dict[str, Tensor]) -> Tensor:
        # eigh rather than Cholesky: the relu kernel's Gram matrix can be singular
        k = gram(xs.double(), xs.double(), self.kernel)
        if not torch.isfinite(k).all():  # exp(<u, v>) overflows float64 once x_scale² passes ~700
            raise ValueError(f"the {self.kernel} kernel's Gram matrix overflows at x_scale={self.x_scale}; use a smaller scale")
        evals, evecs = torch.linalg.eigh(k)
        ys = torch.einsum("bij,bj->bi", evecs, evals.clamp(min=0).sqrt() * params["eps"].double())
        return ys.float().unsqueeze(-1)

    def ood(self) -> "KernelTask":
        """Inputs off the training sphere, at twice its radius."""
        return self.replace(x_scale=2.0 * self.x_scale)  # type: ignore[return-value]
