"""The Task protocol and the Batch it samples.

Real-valued tasks (linear, polynomial, kernel, complex zeros) interleave x and y tokens Garg-style:
x_1, y_1, x_2, y_2, ... Each token is a vector of width ``d_in = max(d_x, d_y) + 1``; the last channel
flags y tokens so that models without positional embeddings can still tell the roles apart.
Predictions are read at the x positions. A task with a ``layout`` field may instead ask for the
"paired" layout of Cheng, Chen & Sra (and von Oswald et al.): one token [x_i, y_i] per in-context
example, then one query token [x_q, 0], with the prediction read at the query only.
Token tasks (modular) use integer tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Protocol, runtime_checkable

import einops
import torch
from torch import Tensor

from .targets import Target

TaskKind = Literal["regression", "classification"]
Layout = Literal["interleaved", "paired"]
LAYOUTS: tuple[str, ...] = ("interleaved", "paired")

CORRUPTIONS: dict[str, str] = {
    "params": "same inputs, resampled task parameters (a new w, new coefficients, a new (a, b))",
    "query": "same task and context, a resampled query (the last example)",
    "shift": "same task, every input scaled out of the training range (x3)",
}


@dataclass
class Batch:
    """One sampled batch of ICL sequences.

    inputs:    [batch, pos, d_in] float (regression) or [batch, pos] long tokens (classification)
    targets:   [batch, pos, d_out] float or [batch, pos] long; only meaningful where ``loss_mask``
    loss_mask: [batch, pos] bool, the positions where the loss applies (predictions are read there)
    params:    the task parameters per sequence, e.g. ``w: [batch, d]`` or ``a, b: [batch]``
    examples:  the raw example inputs the sequence was built from: xs [batch, k, d_x] (regression) or
               (x, y) pairs [batch, k, 2] long (modular); ``task.assemble(examples, params)`` rebuilds the batch
    pos_labels: one role label per position, e.g. ("x0", "y0", "x1", ...), shared by the batch
    layout:    how a regression sequence is laid out: "interleaved" or "paired" (see the module docstring)
    """

    inputs: Tensor
    targets: Tensor
    loss_mask: Tensor
    params: dict[str, Tensor] = field(default_factory=dict)
    examples: Tensor | None = None
    pos_labels: tuple[str, ...] = ()
    layout: Layout = "interleaved"

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch on ``device``."""
        return Batch(
            inputs=self.inputs.to(device),
            targets=self.targets.to(device),
            loss_mask=self.loss_mask.to(device),
            params={k: v.to(device) for k, v in self.params.items()},
            examples=None if self.examples is None else self.examples.to(device),
            pos_labels=self.pos_labels,
            layout=self.layout,
        )

    @property
    def query_pos(self) -> int:
        """The last position where a prediction is scored: the query."""
        return int(self.loss_mask[0].nonzero()[-1])


@runtime_checkable
class Task(Protocol):
    """An in-context-learning task family. Implementations are frozen dataclasses whose fields are the
    knobs; an out-of-distribution variant is the same class with other field values."""

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    default_examples: ClassVar[int]
    cli_flags: ClassVar[tuple[str, ...]]
    scale_field: ClassVar[str | None]
    coef_field: ClassVar[str | None]
    probe_targets: ClassVar[dict[str, Target]]

    def sample(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Batch:
        """Draw ``batch_size`` sequences of ``n_examples`` in-context examples each."""
        ...

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """The in-context baselines that make sense for this task, by name (``interp.baselines``)."""
        ...

    def corrupt(self, clean: Batch, kind: str, generator: torch.Generator) -> Batch:
        """A corrupted twin of ``clean`` for patching: see ``CORRUPTIONS``."""
        ...

    def ood(self) -> "Task":
        """The default out-of-distribution variant used in training-time evaluation."""
        ...

    def n_ctx(self, n_examples: int) -> int:
        """Sequence length for ``n_examples`` examples."""
        ...

    def describe(self) -> str:
        """One line for progress bars and model cards."""
        ...


class TaskBase:
    """Shared plumbing for the frozen-dataclass tasks. A task is three draws: parameters (the function,
    e.g. w or (a, b)), example inputs, and ``assemble`` which labels the inputs and lays out the sequence.
    Keeping them apart lets a corruption resample one and keep the other.

    What the CLI, the evaluation and the probes need to know of a task family is said here, on the class,
    not in tables keyed by its name elsewhere."""

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    default_examples: ClassVar[int]
    """In-context examples per sequence of ``interp train`` without --n-examples (small enough for a laptop CPU)."""
    cli_flags: ClassVar[tuple[str, ...]] = ()
    """The ``interp train`` task flags (argparse names: "d", "x_scale") that apply; any other is refused."""
    scale_field: ClassVar[str | None] = None
    """The field that scales the inputs: ``error_vs_scale``'s default and saturation's field="input"."""
    coef_field: ClassVar[str | None] = None
    """The field that scales the function (σ, or the roots' radius): saturation's field="coef" (its default
    where there is one)."""
    probe_targets: ClassVar[dict[str, Target]] = {}
    """Named quantities a linear probe (``probes.probing.probe``) can be asked to read; users may add their own."""

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """The in-context baselines that make sense for this task, by name (``interp.baselines``, which imports
        the tasks: the subclasses import it when called)."""
        raise ValueError(f"no baselines for task {self.name!r}")

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        """The task parameters of ``batch_size`` sequences."""
        raise NotImplementedError

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        """The example inputs, [batch, n_examples, ...]."""
        raise NotImplementedError

    def assemble(self, examples: Tensor, params: dict[str, Tensor]) -> Batch:
        """Label ``examples`` with the function ``params`` describe and lay out the sequence."""
        raise NotImplementedError

    def sample(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Batch:
        """Draw ``batch_size`` sequences of ``n_examples`` in-context examples each."""
        params = self.sample_params(batch_size, n_examples, generator)
        return self.assemble(self.sample_examples(batch_size, n_examples, generator), params)

    def corrupt(self, clean: Batch, kind: str, generator: torch.Generator, shift: float = 3.0) -> Batch:
        """A corrupted twin of ``clean`` with the same layout: one of ``CORRUPTIONS``."""
        if kind not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {kind!r}")
        assert clean.examples is not None, "clean batch must come from task.sample"
        batch_size, n_examples = clean.inputs.shape[0], clean.examples.shape[1]
        if kind == "params":
            return self.assemble(clean.examples, self.sample_params(batch_size, n_examples, generator))
        if kind == "query":
            examples = clean.examples.clone()
            examples[:, -1] = self.sample_examples(batch_size, n_examples, generator)[:, -1]
            return self.assemble(examples, clean.params)
        if not clean.examples.is_floating_point():
            raise ValueError(f"corruption 'shift' needs real-valued inputs; task {self.name} has tokens")
        return self.assemble(clean.examples * shift, clean.params)

    def eval_splits(self) -> dict[str, "TaskBase"]:
        """The named evaluation sets that training logs and ``evaluate`` reports: ID and the default OOD shift."""
        return {"id": self, "ood": self.ood()}  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> "TaskBase":
        """A variant of this task with some fields changed (how OOD variants are made)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: ``{"name": ..., **fields}``."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "name")
        return f"{self.name}({fields})"


class RegressionTask(TaskBase):
    """A real-valued task: subclasses draw xs and params and ``label`` them; this class lays out the batch,
    interleaved unless the subclass has a ``layout`` field set to "paired"."""

    kind: ClassVar[TaskKind] = "regression"
    d_x: int
    d_y: int = 1
    layout: Layout = "interleaved"

    @property
    def d_in(self) -> int:
        return self.d_x + self.d_y if self.layout == "paired" else max(self.d_x, self.d_y) + 1

    @property
    def d_out(self) -> int:
        return self.d_y

    @property
    def error_scale(self) -> float:
        """d of the error metric, squared error / d (``interp.evaluate.squared_error_over_d``): d_x, Garg et al.'s
        rule (for y = w·x with x, w ~ N(0, I_d) the zero predictor scores 1). A task whose natural scale is
        another overrides this and says so in its docstring (KernelTask: 1, the raw squared error); polynomials (d_x = 1) report the
        raw squared error, as Naim & Asher do."""
        return float(self.d_x)

    def n_ctx(self, n_examples: int) -> int:
        return n_examples + 1 if self.layout == "paired" else 2 * n_examples

    def sample(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Batch:
        """Interleaved: ``n_examples`` examples, each one scored. Paired: ``n_examples`` in-context examples
        and one more draw, the query."""
        return super().sample(batch_size, n_examples + (self.layout == "paired"), generator)

    def label(self, xs: Tensor, params: dict[str, Tensor]) -> Tensor:
        """f(x) for every example: xs [batch, k, d_x] -> ys [batch, k, d_y]."""
        raise NotImplementedError

    def assemble(self, examples: Tensor, params: dict[str, Tensor]) -> Batch:
        xs = examples
        ys = self.label(xs, params)
        if self.layout == "paired":
            return pair_up(xs, ys, params)
        batch_size, n_examples = xs.shape[:2]
        inputs = interleave(xs, ys, self.d_in)
        targets = torch.zeros(batch_size, 2 * n_examples, self.d_y)
        targets[:, 0::2] = ys
        loss_mask = torch.zeros(batch_size, 2 * n_examples, dtype=torch.bool)
        loss_mask[:, 0::2] = True
        labels = tuple(f"{r}{i}" for i in range(n_examples) for r in ("x", "y"))
        return Batch(inputs, targets, loss_mask, params, xs, labels)


def pair_up(xs: Tensor, ys: Tensor, params: dict[str, Tensor]) -> Batch:
    """Cheng et al.'s layout: tokens [x_i, y_i] for the first k - 1 examples and [x_q, 0] for the last, the
    query, which alone is scored: xs [batch, k, d_x], ys [batch, k, d_y] -> inputs [batch, k, d_x + d_y]."""
    n_context = xs.shape[1] - 1
    inputs = torch.cat([xs, ys], dim=-1)
    inputs[:, -1, xs.shape[-1]:] = 0.0
    targets = torch.zeros_like(ys)
    targets[:, -1] = ys[:, -1]
    loss_mask = torch.zeros(xs.shape[:2], dtype=torch.bool)
    loss_mask[:, -1] = True
    labels = tuple(f"xy{i}" for i in range(n_context)) + ("query",)
    return Batch(inputs, targets, loss_mask, params, xs, labels, layout="paired")


def examples_that_fit(task: "TaskBase", n_ctx: int, n_examples: int | None = None) -> int:
    """``n_examples`` checked against a context of ``n_ctx`` positions, or (None) the most that fit."""
    if n_examples is None:
        n_examples = max((k for k in range(1, n_ctx + 1) if task.n_ctx(k) <= n_ctx), default=0)  # type: ignore[attr-defined]
    if n_examples < 1 or task.n_ctx(n_examples) > n_ctx:  # type: ignore[attr-defined]
        raise ValueError(f"n_examples must be at least 1 and fit the model's context of {n_ctx} positions, got {n_examples}")
    return n_examples


def interleave(xs: Tensor, ys: Tensor, d_in: int) -> Tensor:
    """Garg-style sequence x_1, y_1, ..., x_k, y_k: [batch, k, d_x] and [batch, k, d_y] -> [batch, 2k, d_in].

    Each token is zero-padded to ``d_in``; the last channel is 1 on y tokens and 0 on x tokens."""
    batch, k, _ = xs.shape
    x_tok = torch.zeros(batch, k, d_in)
    y_tok = torch.zeros(batch, k, d_in)
    x_tok[..., : xs.shape[-1]] = xs
    y_tok[..., : ys.shape[-1]] = ys
    y_tok[..., -1] = 1.0
    return einops.rearrange(torch.stack([x_tok, y_tok], dim=2), "b k r d -> b (k r) d")
