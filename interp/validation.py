"""Declarative parameter constraints and one validator, as scikit-learn's: a config dataclass lists what each
field may hold, and ``validate`` (called from its ``__post_init__``) raises one ValueError that reads
"The 'n_heads' parameter of ModelSpec must be an int >= 1. Got 0 instead." Kept free of heavy imports, so
that the API, the CLI, the config loader and the sweeps all check a field in the same one place.

A constraint is ``None`` (the value may be None), ``bool``, ``str``, an ``Interval``, an ``Options`` or a
``Pairs`` (a fixed-length sequence); a field's list of constraints is satisfied when one of them is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real  # re-exported for the constraint tables
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (Integral or Real) between ``low`` and ``high`` (None: unbounded), ``closed`` on
    "both", "left", "right" or "neither" side. Booleans are never numbers here, and a Real is finite."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind if self.kind is Integral else Real):
            return False
        if self.kind is Real and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))))

    def describe(self) -> str:
        what = "an int" if self.kind is Integral else "a finite number"
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if left else '('}{self.low}, {self.high}{']' if right else ')'}"
        if self.low is not None:
            return f"{what} {'>=' if left else '>'} {self.low}"
        if self.high is not None:
            return f"{what} {'<=' if right else '<'} {self.high}"
        return what


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def holds(self, value: Any) -> bool:
        # the same value of the same type: True is not 1, and 1.0 is not 1
        return any(type(value) is type(v) and value == v for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Pairs:
    """A list or tuple of exactly ``len(items)`` values, the i-th satisfying ``items[i]``."""

    items: tuple[Any, ...]

    def holds(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) == len(self.items)
                and all(satisfies(v, [c]) for v, c in zip(value, self.items)))

    def describe(self) -> str:
        return f"a sequence of {len(self.items)}: " + ", ".join(describe(c) for c in self.items)


def describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if constraint is bool:
        return "a bool (true or false)"
    if constraint is str:
        return "a string"
    return constraint.describe()


def satisfies(value: Any, constraints: Iterable[Any]) -> bool:
    for c in constraints:
        if c is None and value is None:
            return True
        if c is bool and isinstance(value, bool):
            return True
        if c is str and isinstance(value, str):
            return True
        if c not in (None, bool, str) and c.holds(value):
            return True
    return False


def check(owner: str, name: str, value: Any, constraints: Iterable[Any]) -> None:
    """Raise ValueError naming ``name`` of ``owner`` unless ``value`` satisfies one of ``constraints``."""
    constraints = list(constraints)
    if not satisfies(value, constraints):
        raise ValueError(f"The {name!r} parameter of {owner} must be {' or '.join(describe(c) for c in constraints)}. "
                         f"Got {value!r} instead.")


def validate(obj: Any, constraints: Mapping[str, Iterable[Any]]) -> None:
    """Check every field of ``obj`` that ``constraints`` names (the owner is its class name)."""
    for name, allowed in constraints.items():
        check(type(obj).__name__, name, getattr(obj, name), allowed)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, math.isqrt(n) + 1))


# the constraints used most often
POSITIVE_INT = [Interval(Integral, 1, None)]
NON_NEGATIVE_INT = [Interval(Integral, 0, None)]
POSITIVE_REAL = [Interval(Real, 0, None, closed="neither")]
NON_NEGATIVE_REAL = [Interval(Real, 0, None)]
