"""1-D polynomial regression in context, monomial or Chebyshev basis (Naim & Asher 2024-25)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor

from ..validation import NON_NEGATIVE_INT, POSITIVE_REAL, Options, check, validate
from .base import Batch, RegressionTask
from .targets import QUERY, Target, context, param


def basis(x: Tensor, degree: int, kind: Literal["monomial", "chebyshev"]) -> Tensor:
    """Basis functions phi_0..phi_degree at x: [...] -> [..., degree + 1]."""
    cols = [torch.ones_like(x)]
    if degree >= 1:
        cols.append(x)
    for _ in range(2, degree + 1):
        # monomial: x^j = x * x^(j-1); Chebyshev: T_j = 2x T_(j-1) - T_(j-2)
        cols.append(x * cols[-1] if kind == "monomial" else 2 * x * cols[-1] - cols[-2])
    return torch.stack(cols, dim=-1)


def poly_least_squares_pred(task: "PolynomialTask", batch: Batch) -> Tensor:
    """Least squares at each sequence's true degree on the context, predicted at the query: [batch, 1]."""
    from ..baselines import poly_least_squares

    xs, ys, xq = context(batch)
    return poly_least_squares(xs, ys, xq, degree=batch.params["degree"], kind=task.basis).float()


@dataclass(frozen=True)
class PolynomialTask(RegressionTask):
    """f(x) = sum_j c_j phi_j(x), with the degree drawn per sequence from ``degrees`` and c_j ~ N(0, coef_scale²),
    or c_j ~ U[-coef_scale, coef_scale] with ``coef_dist="uniform"`` (Naim & Asher's f(x) = a·x + b, a, b, x ~ U(-5, 5)
    is ``degrees=(1,), coef_dist="uniform", coef_scale=5, x_range=5``).

    Inputs are 1-D on U[-x_range, x_range]. Hold out whole classes by training on ``degrees=(1, 2, 3)``
    and testing with ``task.replace(degrees=(4,))``."""

    name: ClassVar[str] = "polynomial"
    default_examples: ClassVar[int] = 11
    cli_flags: ClassVar[tuple[str, ...]] = ("d", "degrees", "basis", "coef_scale", "x_range")
    scale_field: ClassVar[str | None] = "x_range"
    coef_field: ClassVar[str | None] = "coef_scale"
    probe_targets: ClassVar[dict[str, Target]] = {
        "coefs": Target(param("coefs"), "regression", "the polynomial coefficients"),
        "degree": Target(param("degree"), "classification", "the polynomial degree"),
        "ls_pred": Target(poly_least_squares_pred, "regression",  # type: ignore[arg-type]
                          "least squares at the true degree, predicted at the query"),
        **QUERY,
    }
    d_x: int = 1
    degrees: tuple[int, ...] = (1, 2, 3)
    basis: Literal["monomial", "chebyshev"] = "monomial"
    coef_scale: float = 1.0
    coef_dist: Literal["normal", "uniform"] = "normal"
    x_range: float = 1.0

    def __post_init__(self) -> None:
        # d_x: polynomial tasks are 1-D
        validate(self, {"d_x": [Options((1,))], "basis": [Options(("monomial", "chebyshev"))], "coef_scale": POSITIVE_REAL,
                        "coef_dist": [Options(("normal", "uniform"))], "x_range": POSITIVE_REAL})
        if not isinstance(self.degrees, (list, tuple)) or not self.degrees:
            raise ValueError(f"The 'degrees' parameter of PolynomialTask must be a non-empty list of ints >= 0. "
                             f"Got {self.degrees!r} instead.")
        for degree in self.degrees:
            check("PolynomialTask", "degrees", degree, NON_NEGATIVE_INT)
        object.__setattr__(self, "degrees", tuple(int(d) for d in self.degrees))

    @property
    def max_degree(self) -> int:
        return max(self.degrees)

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        choice = torch.randint(len(self.degrees), (batch_size,), generator=generator)
        degree = torch.tensor(self.degrees)[choice]
        shape = (batch_size, self.max_degree + 1)
        if self.coef_dist == "normal":
            coefs = torch.randn(shape, generator=generator) * self.coef_scale
        else:
            coefs = (torch.rand(shape, generator=generator) * 2 - 1) * self.coef_scale
        coefs = coefs * (torch.arange(self.max_degree + 1) <= degree[:, None])  # zero above each degree
        return {"coefs": coefs, "degree": degree}

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        return (torch.rand(batch_size, n_examples, 1, generator=generator) * 2 - 1) * self.x_range

    def label(self, xs: Tensor, params: dict[str, Tensor]) -> Tensor:
        coefs = params["coefs"]
        ys = torch.einsum("bkj,bj->bk", basis(xs[..., 0], coefs.shape[-1] - 1, self.basis), coefs)
        return ys.unsqueeze(-1)

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """The regression baselines and least squares at each sequence's true degree ("poly_ls")."""
        from ..baselines import regression_baselines, true_degree_poly_least_squares

        return regression_baselines() | {"poly_ls": true_degree_poly_least_squares(self.basis, self.max_degree)}

    def ood(self) -> "PolynomialTask":
        """Coefficients three times larger than in training (outputs leave the trained range)."""
        return self.replace(coef_scale=3.0 * self.coef_scale)  # type: ignore[return-value]
