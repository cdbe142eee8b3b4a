"""Modular arithmetic in context: z = a·x + b·y mod p (He, Doshi, Das & Gromov, NeurIPS 2024).

A sequence is k examples as tokens x_1, y_1, z_1, ..., x_k, y_k, z_k with no separators. The model
reads the first 3k - 1 tokens and predicts the next one; the loss falls on the z tokens, which are
predicted at the y positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor

from ..validation import NON_NEGATIVE_INT, Interval, Integral, Options, Real, check, is_prime, validate
from .base import Batch, TaskBase, TaskKind
from .targets import Target, param

SAMPLINGS = ("random", "parallelogram", "parallelogram-legacy")
MAX_P = 1000  # the p² task vectors and pairs are enumerated (and the parallelograms drawn) in Python


@dataclass(frozen=True)
class ModularTask(TaskBase):
    """The p² task vectors (a, b) are split by ``split_seed`` into ``n_tasks`` pre-training tasks (``split="id"``)
    and the held-out rest (``split="ood"``). With ``sampling="parallelogram"`` (He et al.'s
    ``parallelogram_tasks_with_shared_components``) ``n_tasks / 4`` distinct (a, b) are drawn and each brings
    (a, y), (x, b) and (x, y) with it, x ∉ {a, b}, y ∉ {a, b, x}, redrawn while a corner is already chosen;
    ``"parallelogram-legacy"`` is this repo's earlier rule (four random corners at a time, duplicates merged),
    kept because the shipped p = 7 models were trained on it; with ``"random"`` they are a uniform draw.
    ``sample_balanced`` gives every task the same number of sequences on the same pairs (He et al.'s batches).
    A fraction ``pair_fraction`` of the p² (x, y) pairs is used in
    pre-training (``pairs="train"``), the rest held out (``pairs="test"``), the same for every task."""

    name: ClassVar[str] = "modular"
    kind: ClassVar[TaskKind] = "classification"
    default_examples: ClassVar[int] = 16
    cli_flags: ClassVar[tuple[str, ...]] = ("p", "n_tasks", "split_seed", "pair_fraction")
    probe_targets: ClassVar[dict[str, Target]] = {
        "a": Target(param("a"), "classification", "task parameter a"),
        "b": Target(param("b"), "classification", "task parameter b"),
        "task_vector": Target(lambda t, b: torch.stack([b.params["a"], b.params["b"]], -1), "classification",
                              "the task vector (a, b), one classifier per component"),
        "z_query": Target(lambda t, b: b.targets[:, b.query_pos], "classification", "the answer z at the query"),
        "x_query": Target(lambda t, b: b.examples[:, -1, 0], "classification", "the query's x token"),  # type: ignore[index]
        "y_query": Target(lambda t, b: b.examples[:, -1, 1], "classification", "the query's y token"),  # type: ignore[index]
        "ax": Target(lambda t, b: b.params["a"] * b.examples[:, -1, 0] % t.p, "classification", "a·x mod p at the query"),  # type: ignore[index, attr-defined]
        "by": Target(lambda t, b: b.params["b"] * b.examples[:, -1, 1] % t.p, "classification", "b·y mod p at the query"),  # type: ignore[index, attr-defined]
    }
    p: int = 29
    n_tasks: int | None = None  # default: min(256, p² // 2)
    split_seed: int = 0
    split: Literal["id", "ood"] = "id"
    pair_fraction: float = 1.0
    pairs: Literal["train", "test", "all"] = "train"
    sampling: Literal["random", "parallelogram", "parallelogram-legacy"] = "random"

    def __post_init__(self) -> None:
        check("ModularTask", "p", self.p, [Interval(Integral, 2, MAX_P)])
        if not is_prime(self.p):  # He et al.'s task: Z_p is a field, so every (a, b) is a function of two shots
            raise ValueError(f"The 'p' parameter of ModularTask must be a prime (He et al.'s z = a·x + b·y mod p). "
                             f"Got {self.p!r} instead.")
        validate(self, {"n_tasks": [None, Interval(Integral)], "split_seed": NON_NEGATIVE_INT,
                        "split": [Options(("id", "ood"))], "pair_fraction": [Interval(Real, 0, 1, closed="right")],
                        "pairs": [Options(("train", "test", "all"))], "sampling": [Options(SAMPLINGS)]})
        if self.n_tasks is None:
            object.__setattr__(self, "n_tasks", min(256, self.p**2 // 2))
        if not 1 <= self.n_tasks < self.p**2:
            raise ValueError(f"n_tasks must be in [1, p² - 1 = {self.p**2 - 1}], got {self.n_tasks}")
        if self.sampling == "parallelogram" and self.n_tasks % 4:
            raise ValueError(f"n_tasks must be a multiple of 4 with sampling 'parallelogram' (four corners per "
                             f"parallelogram), got {self.n_tasks}")
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
            order = self.parallelogram_order(order, g)
        elif self.sampling == "parallelogram-legacy":
            order = self.legacy_parallelogram_order(g)
        chosen = order[: self.n_tasks] if self.split == "id" else order[self.n_tasks :]
        return torch.stack([chosen // self.p, chosen % self.p], dim=-1)

    def parallelogram_order(self, order: Tensor, g: torch.Generator) -> Tensor:
        """All p² task ids (a·p + b), the pre-training ones first, as He et al.'s task_utils.py draws them: the
        first n_tasks / 4 of the permutation ``order`` are the seeds (random.sample); then for each seed (a, b)
        in turn x ∉ {a, b} and y ∉ {a, b, x} are drawn (random.choice) until none of (a, y), (x, b), (x, y) is
        chosen yet, and those three are appended. The held-out rest follows in a random order (get_ood_lists)."""
        p, n_seeds = self.p, self.n_tasks // 4
        chosen = order[:n_seeds].tolist()
        taken = set(chosen)

        def choice(options: list[int]) -> int:
            return options[int(torch.randint(len(options), (1,), generator=g))]

        for a, b in [divmod(t, p) for t in chosen[:n_seeds]]:
            xs = [i for i in range(p) if i not in (a, b)]
            fits = lambda x, y: not {a * p + y, x * p + b, x * p + y} & taken  # noqa: E731
            if not any(fits(x, y) for x in xs for y in range(p) if y not in (a, b, x)):  # the official loop never ends
                raise ValueError(f"n_tasks = {self.n_tasks} is too many parallelograms for p = {self.p} with "
                                 f"split_seed {self.split_seed}: no free corners are left for ({a}, {b}); "
                                 "use fewer tasks or another split_seed")
            while True:
                x = choice(xs)
                y = choice([i for i in range(p) if i not in (a, b, x)])
                if fits(x, y):
                    break
            corners = [a * p + y, x * p + b, x * p + y]
            chosen += corners
            taken.update(corners)
        rest = torch.tensor([t for t in range(p**2) if t not in taken], dtype=torch.long)
        return torch.cat([torch.tensor(chosen, dtype=torch.long), rest[torch.randperm(len(rest), generator=g)]])

    def legacy_parallelogram_order(self, g: torch.Generator) -> Tensor:
        """The earlier rule (``sampling="parallelogram-legacy"``): all p² task ids, the pre-training ones first,
        drawn four at a time as (a, b), (a, b'), (a', b), (a', b') with repeats merged."""
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

    def sample_balanced(self, batch_size: int, n_examples: int, generator: torch.Generator) -> Batch:
        """He et al.'s training batch: batch_size / n tasks sequences of each of the n tasks of this split, task
        by task, and the j-th sequence of every task on the same (x, y) pairs in the same order. [batch, 3k - 1]."""
        n = len(self.task_vectors)
        if batch_size % n:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of the number of tasks ({n}) for "
                             "balanced batches")
        per_task = batch_size // n
        examples = self.sample_examples(per_task, n_examples, generator).repeat(n, 1, 1)  # [n * per_task, k, 2]
        ab = self.task_vectors.repeat_interleave(per_task, dim=0)
        return self.assemble(examples, {"a": ab[:, 0], "b": ab[:, 1]})

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

    def baselines(self) -> dict[str, Callable[[Batch], Tensor]]:
        """The exact solver: every (a, b) consistent with the examples so far ("exact_mod_p")."""
        from ..baselines import mod_p_solver

        return {"exact_mod_p": mod_p_solver(self.p)}

    def ood(self) -> "ModularTask":
        """The held-out task vectors (a, b), on the same (x, y) pairs."""
        return self.replace(split="ood")  # type: ignore[return-value]
