"""Functions drawn from a Gaussian process on the unit sphere (Cheng, Chen & Sra, ICML 2024)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor

from .base import RegressionTask

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
    """x uniform on the sphere of radius ``x_scale`` in d_x dims; y ~ GP(0, K) with K = h(<u, v>)."""

    name: ClassVar[str] = "kernel"
    d_x: int = 5
    kernel: KernelName = "exp"
    x_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {self.kernel!r}")

    def draw(self, batch_size: int, n_examples: int, generator: torch.Generator) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        xs = torch.randn(batch_size, n_examples, self.d_x, generator=generator, dtype=torch.float64)
        xs = xs / xs.norm(dim=-1, keepdim=True) * self.x_scale
        # eigh rather than Cholesky: the relu kernel's Gram matrix can be singular
        evals, evecs = torch.linalg.eigh(gram(xs, xs, self.kernel))
        noise = torch.randn(batch_size, n_examples, generator=generator, dtype=torch.float64)
        ys = torch.einsum("bij,bj->bi", evecs, evals.clamp(min=0).sqrt() * noise)
        return xs.float(), ys.float().unsqueeze(-1), {}

    def ood(self) -> "KernelTask":
        """Inputs off the training sphere, at twice its radius."""
        return self.replace(x_scale=2.0 * self.x_scale)  # type: ignore[return-value]
