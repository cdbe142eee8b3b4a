"""Find a zero of a complex polynomial from in-context samples (Naim & Asher 2025).

The context holds k samples (z_i, f(z_i)) of a monic polynomial f with roots r_j drawn uniformly in the
disk of radius ``root_radius``. A final query token carries a starting point z_q; the target is the root
of f nearest to z_q (a well-defined answer almost everywhere, like Newton's method from z_q).
Complex numbers are written as (real, imag) channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from ..validation import POSITIVE_INT, POSITIVE_REAL, Options, validate
from .base import Batch, RegressionTask, interleave
from .targets import QUERY, Target, y_query


def as_pairs(z: Tensor) -> Tensor:
    """Complex [...] -> real [..., 2]."""
    return torch.stack([z.real, z.imag], dim=-1).float()


def as_complex(pairs: Tensor) -> Tensor:
    """Real [..., 2] -> complex128 [...]."""
    return torch.complex(pairs[..., 0].double(), pairs[..., 1].double())


def disk(shape: tuple[int, ...], radius: float, generator: torch.Generator) -> Tensor:
    """Complex points uniform in the disk of ``radius``."""
    r = radius * torch.rand(shape, generator=generator, dtype=torch.float64).sqrt()
    theta = 2 * torch.pi * torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.polar(r, theta)


@dataclass(frozen=True)
class ComplexZerosTask(RegressionTask):
    """f(z) = prod_j (z - r_j), degree ``degree``; inputs z_i uniform in the disk of radius ``x_range``."""

    name: ClassVar[str] = "complex-zeros"
    default_examples: ClassVar[int] = 10
    cli_flags: ClassVar[tuple[str, ...]] = ("d", "x_range", "degree", "root_radius")
    scale_field: ClassVar[str | None] = "x_range"
    coef_field: ClassVar[str | None] = "root_radius"
    probe_targets: ClassVar[dict[str, Target]] = {
        "root": Target(y_query, "regression", "the root nearest the query point"),
        "x_query": QUERY["x_query"],
    }
    d_x: int = 2
    d_y: ClassVar[int] = 2
    degree: int = 2
    root_radius: float = 1.0
    x_range: float = 1.0

    def __post_init__(self) -> None:
        # d_x: complex-zeros inputs are complex numbers, two real channels
        validate(self, {"d_x": [Options((2,))], "degree": POSITIVE_INT, "root_radius": POSITIVE_REAL, "x_range": POSITIVE_REAL})

    def n_ctx(self, n_examples: int) -> int:
        return 2 * n_examples + 1

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {"roots": as_pairs(disk((batch_size, self.degree), self.root_radius, generator))}

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        """The k sample points and, last, the query point: [batch, k + 1, 2] as (real, imag)."""
        return as_pairs(disk((batch_size, n_examples + 1), self.x_range, generator))

    def assemble(self, examples: Tensor, params: dict[str, Tensor]) -> Batch:
        batch_size, n_examples = examples.shape[0], examples.shape[1] - 1
        roots = as_complex(params["roots"])
        zs = as_complex(examples)
        fz = torch.prod(zs[..., None] - roots[:, None, :], dim=-1)
        z_q = zs[:, -1]
        nearest = roots[torch.arange(batch_size), (roots - z_q[:, None]).abs().argmin(dim=-1)]
        context = interleave(as_pairs(zs[:, :-1]), as_pairs(fz[:, :-1]), self.d_in)
        query = interleave(as_pairs(z_q[:, None]), as_pairs(fz[:, -1:]), self.d_in)[:, :1]
        inputs = torch.cat([context, query], dim=1)
        targets = torch.zeros(batch_size, 2 * n_examples + 1, 2)
        targets[:, -1] = as_pairs(nearest)
        loss_mask = torch.zeros(batch_size, 2 * n_examples + 1, dtype=torch.bool)
        loss_mask[:, -1] = True
        labels = tuple(f"{r}{i}" for i in range(n_examples) for r in ("x", "y")) + ("query",)
        return Batch(inputs, targets, loss_mask, params, examples, labels)

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """Least squares on the degree-``degree`` polynomials, then its root nearest the query ("poly_root_ls")."""
        from ..baselines import complex_root_least_squares

        return {"poly_root_ls": complex_root_least_squares(self.degree)}

    def ood(self) -> "ComplexZerosTask":
        """Roots spread twice as far as in training."""
        return self.replace(root_radius=2.0 * self.root_radius)  # type: ignore[return-value]
