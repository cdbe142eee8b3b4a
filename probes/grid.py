"""The query grid of modular arithmetic in context: every query (x, y) after one fixed set of examples.

With the in-context examples fixed (a ``Context``: k examples of one task (a, b)), each of the p² queries
(x, y) gets its own sequence, and activations are read at the query's y position, where z is predicted.
``run_grid`` runs such a batch in chunks, reading hooks at one position and, if asked, writing replacements
there. The MLP analysis (``probes.mlp``), the algorithm maps and the head geometry all start here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Sequence

import einops
import numpy as np
import torch
from torch import Tensor

from interp.tasks import Batch, ModularTask

# --- checks ------------------------------------------------------------------------------------------


def check_modular(task: Any) -> ModularTask:
    """``task`` itself, or a one-line ValueError when it is not modular arithmetic."""
    if not isinstance(task, ModularTask):
        raise ValueError(f"task must be a ModularTask, got {getattr(task, 'name', type(task).__name__)!r}")
    return task


def check_token_model(model: Any, task: ModularTask) -> None:
    """A one-line ValueError unless ``model`` is a token model whose vocabulary is Z_p."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not isinstance(getattr(getattr(model, "embed", None), "W_E", None), torch.Tensor):
        raise ValueError(f"model must be a token HookedTransformer, got {type(model).__name__}")
    if cfg.d_vocab != task.p:
        raise ValueError(f"model has d_vocab={cfg.d_vocab} but the task has p={task.p}")


# --- the query grid ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare by
class Context:
    """The fixed in-context examples before the query: ``examples`` [n, 2] long (x, y) pairs of the task (a, b)."""

    examples: Tensor
    a: int
    b: int

    def __post_init__(self) -> None:
        examples = torch.as_tensor(self.examples).long()
        if examples.numel() == 0:
            examples = examples.reshape(0, 2)
        if examples.dim() != 2 or examples.shape[1] != 2:
            raise ValueError(f"context examples must be [n, 2] (x, y) pairs, got shape {tuple(examples.shape)}")
        object.__setattr__(self, "examples", examples)
        object.__setattr__(self, "a", int(self.a))
        object.__setattr__(self, "b", int(self.b))

    @property
    def n_examples(self) -> int:
        return self.examples.shape[0]

    def answers(self, p: int) -> Tensor:
        """z_i = a·x_i + b·y_i mod p: [n] long."""
        return (self.a * self.examples[:, 0] + self.b * self.examples[:, 1]) % p

    def prefix(self, n: int) -> "Context":
        """The first ``n`` examples."""
        return Context(self.examples[:n], self.a, self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"examples": self.examples.tolist(), "a": self.a, "b": self.b}

    @classmethod
    def sample(cls, task: ModularTask, n_examples: int, generator: torch.Generator) -> "Context":
        """A task (a, b) of ``task``'s split and ``n_examples`` of its (x, y) pairs."""
        params = task.sample_params(1, n_examples, generator)
        examples = task.sample_examples(1, n_examples, generator)[0]
        return cls(examples, int(params["a"][0]), int(params["b"][0]))


def max_context(model: Any, extra_tokens: int = 2) -> int:
    """The most context examples that fit before a query of ``extra_tokens`` tokens (2: x and y; 3: with z)."""
    return (model.cfg.n_ctx - extra_tokens) // 3


def resolve_context(
    task: ModularTask,
    context: Context | int | None,
    n_max: int,
    generator: torch.Generator | None = None,
    n_min: int = 0,
) -> Context:
    """A validated ``Context``: ``context`` itself, ``context`` sampled examples (an int), or ``n_max`` of them (None)."""
    if context is None or isinstance(context, (int, np.integer)):
        n = n_max if context is None else int(context)
        if not n_min <= n <= n_max:
            raise ValueError(f"context must have between {n_min} and {n_max} examples for this model, got {n}")
        return Context.sample(task, n, generator if generator is not None else torch.Generator().manual_seed(0))
    if not isinstance(context, Context):
        raise ValueError(f"context must be a Context, an int or None, got {type(context).__name__}")
    p = task.p
    if not n_min <= context.n_examples <= n_max:
        raise ValueError(f"context must have between {n_min} and {n_max} examples for this model, got {context.n_examples}")
    if context.n_examples and not bool(((context.examples >= 0) & (context.examples < p)).all()):
        raise ValueError(f"context examples must be residues in [0, {p - 1}]")
    if not (0 <= context.a < p and 0 <= context.b < p):
        raise ValueError(f"context (a, b) must be residues in [0, {p - 1}], got ({context.a}, {context.b})")
    return context


def query_grid(task: ModularTask, context: Context) -> Batch:
    """All p² queries after ``context``: a batch of p² sequences, row x·p + y holding the query (x, y)."""
    p = task.p
    x, y = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    queries = torch.stack([x.flatten(), y.flatten()], dim=-1)  # [p², 2]
    fixed = einops.repeat(context.examples, "n r -> q n r", q=p * p)
    examples = torch.cat([fixed, queries[:, None]], dim=1)  # [p², n + 1, 2]
    params = {"a": torch.full((p * p,), context.a), "b": torch.full((p * p,), context.b)}
    return task.assemble(examples, params)


def grid_answers(p: int, context: Context) -> Tensor:
    """The true z of every query: [x, y] long."""
    r = torch.arange(p)
    return (context.a * r[:, None] + context.b * r[None, :]) % p


def _read(act: Tensor, hook: Any, store: list[Tensor], pos: int) -> None:
    store.append(act[:, pos].detach().clone())


def _write(act: Tensor, hook: Any, new: Tensor, pos: int) -> Tensor:
    act = act.clone()
    act[:, pos] = new.to(act.dtype)
    return act


@torch.no_grad()
def run_grid(
    model: Any,
    inputs: Tensor,
    pos: int,
    *,
    read: Iterable[str] = (),
    replace: dict[str, Tensor] | None = None,
    batch_size: int = 256,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``inputs`` [rows, seq] in chunks: the logits at ``pos`` [rows, d_vocab], the hooks named in ``read``
    at ``pos`` ({name: [rows, ...]}), with ``replace`` ({name: [rows, ...]}) written at ``pos`` on the way."""
    read, replace = list(read), replace or {}
    unknown = [n for n in [*read, *replace] if n not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook name {unknown[0]!r}")
    store: dict[str, list[Tensor]] = {n: [] for n in read}
    logits = []
    for start in range(0, inputs.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        hooks = [(n, partial(_write, new=v[rows], pos=pos)) for n, v in replace.items()]
        hooks += [(n, partial(_read, store=store[n], pos=pos)) for n in read]
        logits.append(model.run_with_hooks(inputs[rows], fwd_hooks=hooks)[:, pos])
    return torch.cat(logits), {n: torch.cat(v) for n, v in store.items()}


def grid_activations(
    model: Any, task: ModularTask, names: Sequence[str], context: Context, batch_size: int = 256
) -> dict[str, Tensor]:
    """The hooks ``names`` at the query position over the grid: {name: [x, y, ...]}."""
    batch = query_grid(task, context)
    _, acts = run_grid(model, batch.inputs, batch.query_pos, read=names, batch_size=batch_size)
    return {n: einops.rearrange(a, "(x y) ... -> x y ...", x=task.p) for n, a in acts.items()}
