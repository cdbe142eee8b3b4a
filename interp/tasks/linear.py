"""Linear regression in context: y = w·x (Garg et al. 2022)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor

from ..validation import POSITIVE_INT, POSITIVE_REAL, Options, validate
from .base import Batch, RegressionTask
from .targets import QUERY, Target, context, least_squares_pred, param


def w_least_squares(task: RegressionTask, batch: Batch) -> Tensor:
    """Minimum-norm least-squares estimate of w from the examples before the query: [batch, d_x]."""
    xs, ys, _ = context(batch)
    return (torch.linalg.pinv(xs) @ ys)[..., 0].float()


@dataclass(frozen=True)
class LinearTask(RegressionTask):
    """y = w·x with w ~ N(0, I_d) · w_scale.

    x ~ N(0, x_scale² I_d) (``x_dist="normal"``) or U[-x_scale, x_scale]^d (``"uniform"``).
    ``active_dims`` < d zeroes the trailing dims of x and w (Garg's curriculum grows it)."""

    name: ClassVar[str] = "linear"
    default_examples: ClassVar[int] = 11
    cli_flags: ClassVar[tuple[str, ...]] = ("d", "x_dist", "x_scale", "w_scale")
    scale_field: ClassVar[str | None] = "x_scale"
    coef_field: ClassVar[str | None] = "w_scale"
    probe_targets: ClassVar[dict[str, Target]] = {
        "w": Target(param("w"), "regression", "the weight vector w"),
        "w_ls": Target(w_least_squares, "regression", "least-squares estimate of w from the examples before the query"),
        "ls_pred": Target(least_squares_pred, "regression", "least-squares prediction at the query"),
        **QUERY,
    }
    d_x: int = 5
    x_dist: Literal["normal", "uniform"] = "normal"
    x_scale: float = 1.0
    w_scale: float = 1.0
    active_dims: int | None = None

    def __post_init__(self) -> None:
        validate(self, {"d_x": POSITIVE_INT, "x_dist": [Options(("normal", "uniform"))], "x_scale": POSITIVE_REAL,
                        "w_scale": POSITIVE_REAL, "active_dims": [None, *POSITIVE_INT]})
        if self.active_dims is not None and not 1 <= self.active_dims <= self.d_x:
            raise ValueError(f"active_dims must be in [1, {self.d_x}], got {self.active_dims}")

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        w = torch.randn(batch_size, self.d_x, generator=generator) * self.w_scale
        if self.active_dims is not None:
            w[:, self.active_dims :] = 0.0
        return {"w": w}

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        shape = (batch_size, n_examples, self.d_x)
        if self.x_dist == "normal":
            xs = torch.randn(shape, generator=generator) * self.x_scale
        else:
            xs = (torch.rand(shape, generator=generator) * 2 - 1) * self.x_scale
        if self.active_dims is not None:
            xs[..., self.active_dims :] = 0.0
        return xs

    def label(self, xs: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.einsum("bkd,bd->bk", xs, params["w"]).unsqueeze(-1)

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """Least squares, ridge, 3-NN and averaging (``interp.baselines.regression_baselines``)."""
        from ..baselines import regression_baselines

        return regression_baselines()

    def ood(self) -> "LinearTask":
        """Inputs three times wider than in training (Garg's scaled-x shift test)."""
        return self.replace(x_scale=3.0 * self.x_scale)  # type: ignore[return-value]
