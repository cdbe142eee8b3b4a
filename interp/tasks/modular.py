"""Modular arithmetic in context: z = a·x + b·y mod p (He, Doshi, Das & Gromov, NeurIPS 2024).

A sequence is k examples as tokens x_1, y_1, z_1, ..., x_k, y_k, z_k with no separators. The model
reads the first 3k - 1 tokens and predicts the next one; the loss falls on the z tokens, which are
predicted at the y positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Literal

import torch
from torch import Tensor

from .base import Batch, TaskBase, TaskKind


@dataclass(frozen=True)
class ModularTask(TaskBase):
    """The p² task vectors (a, b) are split by ``split_seed`` into ``n_tasks`` pre-training tasks (``split="id"``)
    and the held-out rest (``split="ood"``). With ``sampling="parallelogram"`` (He et al.) the pre-training
    tasks come in parallelograms: a random (a, b) brings (a, b'), (a', b) and (a', b') with it; with
    ``"random"`` they are a uniform draw. A fraction ``pair_fraction`` of the p² (x, y) pairs is used in
    pre-training (``pairs="train"``), the rest held out (``pairs="test"``), the same for every task."""

    name: ClassVar[str] = "modular"
    kind: ClassVar[TaskKind] = "classification"
    p: int = 29
    n_tasks: int | None = None  # default: min(256, p² // 2)
    split_seed: int = 0
    split: Literal["id", "ood"] = "id"
    pair_fraction: float = 1.0
    pairs: Literal["train", "test", "all"] = "train"
    sampling: Literal["random", "parallelogram"] = "random"

    def __post_init__(self) -> None:
        if self.p < 2:
            raise ValueError(f"p must be at least 2, got {self.p}")
        if self.n_tasks is None:
            object.__setattr__(self, "n_tasks", min(256, self.p**2 // 2))
        if not 1 <= self.n_tasks < self.p**2:
            raise ValueError(f"n_tasks must be in [1, p² - 1 = {self.p**2 - 1}], got {self.n_tasks}")
        if self.split not in ("id", "ood"):
            raise ValueError(f"split must be 'id' or 'ood', got {self.split!r}")
        if not 0.0 < self.pair_fraction <= 1.0:
            raise ValueError(f"pair_fraction must be in (0, 1], got {self.pair_fraction}")
        if self.pairs not in ("train", "test", "all"):
            raise ValueError(f"pairs must be 'train', 'test' or 'all', got {self.pairs!r}")
        if self.sampling not in ("random", "parallelogram"):
            raise ValueError(f"sampling must be 'random' or 'parallelogram', got {self.sampling!r}")
        if self.pairs == "test" and self.pair_fraction == 1.0:
            raise ValueError("pairs='test' needs pair_fraction < 1: no (x, y) pair is held out")

    @property
    def d_vocab(self) -> int:
        return self.p

    def n_ctx(self, n_examples: int) -> int:
        return 3 * n_examples - 1

    @cached_property
    def task_vectors(self) -> Tensor:
        """The (a, b) of this split: [n, 2] long. ID and OOD sets are disjoint and cover Z_p²."""
        g = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(self.p**2, generator=g)
        if self.sampling == "parallelogram":
            order = self.parallelogram_order(g)
        chosen = order[: self.n_tasks] if self.split == "id" else order[self.n_tasks :]
        return torch.stack([chosen // self.p, chosen % self.p], dim=-1)

    def parallelogram_order(self, g: torch.Generator) -> Tensor:
        """All p² task ids, the pre-training ones first, drawn four at a time: (a, b), (a, b'), (a', b), (a', b')."""
        seen: dict[int, None] = {}
        while len(seen) < self.n_tasks:
            a, a2, b, b2 = torch.randint(self.p, (4,), generator=g).tolist()
            for ta, tb in ((a, b), (a, b2), (a2, b), (a2, b2)):
                seen.setdefault(ta * self.p + tb)
        first = list(seen)[: self.n_tasks]
        chosen = set(first)
        return torch.tensor(first + [t for t in range(self.p**2) if t not in chosen])

    @cached_property
    def pair_set(self) -> Tensor:
        """The (x, y) pairs this variant draws from: [m, 2] long."""
        g = torch.Generator().manual_seed(self.split_seed + 1)
        order = torch.randperm(self.p**2, generator=g)
        n_train = max(1, round(self.pair_fraction * self.p**2))
        chosen = {"train": order[:n_train], "test": order[n_train:], "all": order}[self.pairs]
        return torch.stack([chosen // self.p, chosen % self.p], dim=-1)

    def sample_params(self, batch_size: int, n_examples: int, generator: torch.Generator) -> dict[str, Tensor]:
        ab = self.task_vectors[torch.randint(len(self.task_vectors), (batch_size,), generator=generator)]
        return {"a": ab[:, 0], "b": ab[:, 1]}

    def sample_examples(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Tensor:
        """(x, y) pairs: [batch, k, 2] long."""
        return self.pair_set[torch.randint(len(self.pair_set), (batch_size, n_examples), generator=generator)]

    def assemble(self, examples: Tensor, params: dict[str, Tensor]) -> Batch:
        batch_size, n_examples = examples.shape[:2]
        a, b = params["a"], params["b"]
        z = (a[:, None] * examples[..., 0] + b[:, None] * examples[..., 1]) % self.p
        seq = torch.cat([examples, z[..., None]], dim=-1).reshape(batch_size, 3 * n_examples)
        loss_mask = torch.zeros(batch_size, 3 * n_examples - 1, dtype=torch.bool)
        loss_mask[:, 1::3] = True  # the y positions, where z is predicted
        labels = tuple(f"{r}{i}" for i in range(n_examples) for r in ("x", "y", "z"))[:-1]
        return Batch(seq[:, :-1], seq[:, 1:], loss_mask, params, examples, labels)

    def eval_splits(self) -> dict[str, "TaskBase"]:
        """He et al.'s four sets when (x, y) pairs are held out: ID or OOD tasks × train or test pairs."""
        if self.pair_fraction == 1.0:
            return super().eval_splits()
        return {f"{split}_{pairs}": self.replace(split=split, pairs=pairs)
                for split in ("id", "ood") for pairs in ("train", "test")}

    def ood(self) -> "ModularTask":
        """The held-out task vectors (a, b), on the same (x, y) pairs."""
        return self.replace(split="ood")  # type: ignore[return-value]
