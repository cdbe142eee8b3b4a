"""One frozen settings dataclass per probe: the probe's API function, its CLI flags and its dashboard widgets all
use these field names and defaults, and nothing restates them (nanoGPT's configurator: one name per knob).

A field is declared with ``option(default, help, constraints, parse=...)``. ``__post_init__`` checks every field
once (``interp.validation``: a ValueError that names the field), ``add_flags`` builds ``--field-name`` flags from
the fields, and ``from_args`` reads them back. Kept free of torch and TransformerLens, so that the CLI's argument
parser (and ``interp --help``) costs nothing. The probes' own tables of names (``probes.patching.SITES``,
``probes.attribution.METHODS``, ...) must agree with the choices here; ``tests/test_settings.py`` checks it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, TypeVar

from interp.validation import NON_NEGATIVE_INT, POSITIVE_INT, Integral, Interval, Options, Real, validate

S = TypeVar("S", bound="Settings")

# names the probes define (tests/test_settings.py checks them against the probes' tables)
PATCH_SITES = ("resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
SITE_ALIASES = {"resid": "resid_pre", "attn": "attn_out", "mlp": "mlp_out", "head": "z"}  # short names
PATCH_BY = ("layer_pos", "layer", "head_pos", "head")
CORRUPTIONS = ("params", "query", "shift")
DIRECTIONS = ("denoise", "noise")
ATTRIBUTION_METHODS = ("dla", "ablate", "attrib", "head_types")
ABLATIONS = ("zero", "mean", "resample")
ATTRIBUTION_SITES = ("head", "head_pos", "mlp", "mlp_pos", "resid_pre")


def option(default: Any, help: str, constraints: Iterable[Any] | None = None, parse: Callable[[str], Any] | None = None,
           choices: Iterable[Any] | None = None) -> Any:
    """A settings field: its default, its help line, what it may hold (``interp.validation`` constraints;
    ``choices`` is the common case of a fixed set of strings), and how the CLI parses one flag value."""
    choices = tuple(choices) if choices is not None else None
    allowed = list(constraints or []) + ([Options(choices)] if choices else [])
    return field(default=default, metadata={"help": help, "constraints": allowed, "parse": parse, "choices": choices})


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def positions(text: str) -> list[int | str]:
    return [int(v) if v.lstrip("-").isdigit() else v for v in text.split(",")]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Settings:
    """Base of the probe settings: validation, CLI flags and overrides, from the fields' ``option`` metadata."""

    probe: ClassVar[str] = "probe"  # the API function's name, for messages

    def __post_init__(self) -> None:
        validate(self, {f.name: f.metadata["constraints"] for f in dataclasses.fields(self)
                        if f.metadata.get("constraints")})

    @classmethod
    def resolve(cls: type[S], settings: S | None = None, overrides: Mapping[str, Any] | None = None) -> S:
        """``settings`` (or the defaults) with ``overrides`` applied; an unknown name is a ValueError naming it."""
        if settings is not None and not isinstance(settings, cls):
            raise ValueError(f"The 'settings' argument of {cls.probe} must be a {cls.__name__}. Got {settings!r} instead.")
        overrides = dict(overrides or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown argument(s) of {cls.probe}: {', '.join(unknown)}; "
                             f"{cls.__name__} has {', '.join(sorted(names))}")
        return dataclasses.replace(settings or cls(), **overrides) if overrides else (settings or cls())

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
        """One ``--field-name`` flag per field (except ``skip``), with the field's default, help and choices;
        booleans get ``--name`` / ``--no-name``."""
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            meta = f.metadata
            kwargs: dict[str, Any] = {"dest": f.name, "default": f.default}
            if isinstance(f.default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = meta.get("parse") or _parser_for(f)
                if meta.get("choices"):
                    kwargs["choices"] = meta["choices"]
            default = "" if f.default is None or isinstance(f.default, bool) else f" (default: {f.default})"
            parser.add_argument(flag_name(f.name), help=meta.get("help", "") + default, **kwargs)

    @classmethod
    def from_args(cls: type[S], args: argparse.Namespace) -> S:
        """The settings the parsed flags name (``add_flags``' destinations)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parser_for(f: dataclasses.Field) -> Callable[[str], Any]:
    for c in f.metadata.get("constraints", ()):
        if isinstance(c, Interval):
            return int if c.kind is Integral else float
    return str


N_SEQUENCES = "sequences to average over"
SEED = option(0, "seed of the sampled sequences", NON_NEGATIVE_INT)
LAYER_OR_ALL = option(None, "layer (default: every layer)", [None, *NON_NEGATIVE_INT])
METRIC = option(None, "squared_error_over_d | signed_error (regression); logit_diff | prob | accuracy (modular); "
                "default: the task's first", [None, str])


N_CONTEXT = option(None, "context examples before each grid query (default: as many as the model reads)",
                   [None, Interval(Integral, 0, None)])
COMPONENTS = option(6, "principal components kept", POSITIVE_INT)
GRID_BATCH = option(256, "grid queries per forward pass", POSITIVE_INT)


def n_option(default: int, low: int = 1) -> Any:
    return option(default, N_SEQUENCES, [Interval(Integral, low, None)])


def batch_option(default: int, what: str = "sequences per forward pass (variants x batch)") -> Any:
    return option(default, f"{what}; memory grows with it", POSITIVE_INT)


@dataclass(frozen=True)
class PatchSettings(Settings):
    """Exact activation patching (``interp.patch``, ``interp patch``)."""

    probe: ClassVar[str] = "patch"
    site: str = option("resid_pre", "where to patch; resid, attn, mlp and head are short for resid_pre, attn_out, "
                       "mlp_out and z", choices=(*PATCH_SITES, *SITE_ALIASES))
    layer: int | None = LAYER_OR_ALL
    by: str | None = option(None, "what one patch covers: layer_pos | layer (resid sites), head_pos | head (head "
                            "sites); default: the first", [None], choices=PATCH_BY)
    corruption: str = option("params", "how the corrupted run differs: params (new task parameters), query, shift",
                             choices=CORRUPTIONS)
    metric: str | None = METRIC
    direction: str = option("denoise", "denoise: clean into corrupted; noise: corrupted into clean", choices=DIRECTIONS)
    n: int = n_option(64, low=2)  # one sequence has no spread: its sem would be NaN
    seed: int = SEED
    max_batch: int = batch_option(512)

    @property
    def site_name(self) -> str:
        """``site`` with the short names resolved (a ``probes.patching.SITES`` key)."""
        return SITE_ALIASES.get(self.site, self.site)


@dataclass(frozen=True)
class AttributeSettings(Settings):
    """Attention-head attribution (``interp.attribute``, ``interp attribute``)."""

    probe: ClassVar[str] = "attribute"
    method: str = option("dla", "dla (direct logit/read-out attribution), ablate, attrib (attribution patching), "
                         "head_types", choices=ATTRIBUTION_METHODS)
    ablation: str = option("mean", "ablate: what replaces a head's output", choices=ABLATIONS)
    site: str = option("head", "attrib: where the estimate is taken", choices=ATTRIBUTION_SITES)
    corruption: str | None = option("params", "the corrupted run of attrib and resample ablation", [None],
                                    choices=CORRUPTIONS)
    metric: str | None = METRIC
    direction: str = option("denoise", "attrib: denoise or noise", choices=DIRECTIONS)
    compare_exact: bool = option(True, "attrib: also run the exact patching it estimates and report the correlation",
                                 [bool])
    n: int = n_option(64, low=2)
    seed: int = SEED
    queries: str | None = option(None, "head_types: only query positions of this role, e.g. y (default: every one)",
                                 [None, str])
    max_batch: int = batch_option(2048, "ablate: sequences per forward pass (heads x batch)")


@dataclass(frozen=True)
class MlpSettings(Settings):
    """Fourier / PCA / circularity analysis of a modular model's MLP (``interp.mlp``, ``interp mlp``)."""

    probe: ClassVar[str] = "mlp"
    layer: int = option(0, "the block whose MLP is analysed", NON_NEGATIVE_INT)
    n_context: int | None = N_CONTEXT
    seed: int = SEED
    n_components: int = COMPONENTS
    min_gap: float = option(4.0, "a key frequency's power stands this many times above the rest's",
                            [Interval(Real, 1, None, closed="neither")])
    min_fraction: float = option(0.5, "a neuron joins its top frequency's cluster with at least this share of its "
                                 "power", [Interval(Real, 0, 1)])
    batch_size: int = GRID_BATCH


@dataclass(frozen=True)
class AlgorithmsSettings(Settings):
    """Ratio matching against modular regression over the (x, y) grid (``interp.algorithms``)."""

    probe: ClassVar[str] = "algorithms"
    shots: tuple[int, ...] | list[int] | None = option(None, "shot counts, e.g. 1,2,13,31 (default: a spread up to "
                                                       "the context)", None, parse=int_list)
    n_context: int | None = option(None, "context examples the shots are prefixes of (default: the largest shot "
                                   "count)", [None, Interval(Integral, 0, None)])
    seed: int = SEED
    batch_size: int = GRID_BATCH

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shots is not None and not (isinstance(self.shots, (list, tuple)) and self.shots
                                           and all(Interval(Integral, 0, None).holds(k) for k in self.shots)):
            raise ValueError(f"The 'shots' parameter of AlgorithmsSettings must be a non-empty list of ints >= 0 or "
                             f"None. Got {self.shots!r} instead.")


@dataclass(frozen=True)
class GeometrySettings(Settings):
    """Circle-of-circles and even/odd geometry of one head's output (``interp.geometry``)."""

    probe: ClassVar[str] = "geometry"
    layer: int = option(0, "the head's layer", NON_NEGATIVE_INT)
    head: int = option(0, "the head", NON_NEGATIVE_INT)
    n_context: int | None = N_CONTEXT
    seed: int = SEED
    output: str = option("z", "z (the head's hook_z) or result (hook_z @ W_O)", choices=("z", "result"))
    pos: str = option("z", "where the output is read: z (the grid example appended whole) or query (its y, where z "
                      "is predicted)", choices=("z", "query"))
    n_components: int = COMPONENTS
    parity_dims: int = option(3, "principal components the even/odd separator reads", POSITIVE_INT)
    batch_size: int = GRID_BATCH


@dataclass(frozen=True)
class SaturationSettings(Settings):
    """Prediction, softmax and layer-norm statistics as inputs leave the training range (``interp.saturation``,
    ``interp.compare_saturation``)."""

    probe: ClassVar[str] = "saturation"
    scales: tuple[float, ...] | list[float] | None = option(None, "multipliers of the field, e.g. 0.25,1,4,16 "
                                                            "(default: 0.25 to 16 by factors of √2)", None, parse=float_list)
    field: str | None = option(None, "coef (default where the task has one: w_scale, coef_scale, root_radius) | "
                               "input | a task field such as x_scale", [None, str])
    n: int = n_option(256, low=8)
    seed: int = SEED
    quantile: float = option(0.9, "the quantile of |prediction| each scale scores", [Interval(Real, 0.5, 1, closed="left")])
    bins: int = option(64, "groups of equal count along the target that the median curve and B+ / B- are read from",
                       POSITIVE_INT)
    follows: float = option(0.5, "a side is saturated when its fall-back slope (prediction against target beyond "
                            "the training range) is below this", [Interval(Real, 0, 1, closed="right")])
    moved: float = option(0.25, "compare: a variant moves the plateau when its B+ or B- differs from the first's by "
                          "more than this share", [Interval(Real, 0, None)])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scales is not None and not (isinstance(self.scales, (list, tuple)) and self.scales
                                            and all(Interval(Real, 0, None, closed="neither").holds(s) for s in self.scales)):
            raise ValueError(f"The 'scales' parameter of SaturationSettings must be a non-empty list of finite numbers "
                             f"> 0 or None. Got {self.scales!r} instead.")


@dataclass(frozen=True)
class ProbeSettings(Settings):
    """Linear probes from activations to a task quantity, with a shuffled-label control (``interp.probe``)."""

    probe: ClassVar[str] = "probe"
    target: str | None = option(None, "the task quantity, e.g. w, w_ls, coefs, a, b, task_vector, ax (required)",
                                [None, str])
    hook: str | tuple[str, ...] | list[str] | None = option(None, "a hook name (default: every "
                                                            "blocks.{l}.hook_resid_post)", None)
    positions: tuple[int | str, ...] | list[int | str] | None = option(
        None, "positions, e.g. query or y3,query (default: the query)", None, parse=positions)
    n: int = n_option(512, low=8)
    seed: int = SEED
    test_fraction: float = option(0.25, "share of the sequences held out to score the probe",
                                  [Interval(Real, 0, 1, closed="neither")])
    kind: str | None = option(None, "regression (ridge, R²) or classification (logistic, accuracy); default: from "
                              "the target's dtype", [None], choices=("regression", "classification"))

    def __post_init__(self) -> None:
        super().__post_init__()
        hook = self.hook
        if not (hook is None or isinstance(hook, str) or (isinstance(hook, (list, tuple)) and hook
                                                          and all(isinstance(h, str) for h in hook))):
            raise ValueError(f"The 'hook' parameter of ProbeSettings must be None, a string or a non-empty list of "
                             f"strings. Got {hook!r} instead.")


@dataclass(frozen=True)
class EvalSettings(Settings):
    """Error (or accuracy) against the number of examples, beside the baselines (``interp.evaluate``, ``interp eval``)."""

    probe: ClassVar[str] = "evaluate"
    n: int = option(1280, "sequences per split (1280: the official Garg et al. count)", [Interval(Integral, 1, None)])
    seed: int = SEED
    metric: str | None = option(None, "regression: squared_error_over_d (default) or error_over_mean_y2", [None, str])
    baselines: bool = option(True, "also run the task's baselines (they draw no random numbers)", [bool])


CIRCUIT_METHODS = ("exact", "eap", "eap-ig")


@dataclass(frozen=True)
class CircuitSettings(Settings):
    """Edge scores and circuits (``interp.circuit``, ``interp circuit``; ``probes.circuits``)."""

    probe: ClassVar[str] = "circuit"
    method: str = option("exact", "exact (edge patching), eap or eap-ig (gradient estimates)", choices=CIRCUIT_METHODS)
    direction: str = option("denoise", "denoise: clean into corrupted; noise: corrupted into clean", choices=DIRECTIONS)
    corruption: str = option("params", "how the corrupted run differs: params, query, shift", choices=CORRUPTIONS)
    metric: str | None = METRIC
    positions: str = option("all", "what one edge covers: all rows, the query row, or each row",
                            choices=("all", "query", "each"))
    ig_steps: int = option(5, "eap-ig: interpolation steps between the source and base input embeddings", POSITIVE_INT)
    top: int = option(20, "the circuit: this many top edges (also a point of the faithfulness curve)", NON_NEGATIVE_INT)
    ablation: str = option("resample", "faithfulness: what an edge outside the circuit carries", choices=ABLATIONS)
    n: int = n_option(64, low=2)
    seed: int = SEED
    freeze_ln: bool = option(True, "freeze each receiver's norm scale at the base run's (TransformerLens's "
                             "path-patching convention)", [bool])
    max_batch: int = batch_option(512)


PROBE_SETTINGS: dict[str, type[Settings]] = {
    "patch": PatchSettings, "attribute": AttributeSettings, "mlp": MlpSettings, "algorithms": AlgorithmsSettings,
    "geometry": GeometrySettings, "saturation": SaturationSettings, "probe": ProbeSettings, "circuit": CircuitSettings,
}
