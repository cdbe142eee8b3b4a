"""MLP representations of modular arithmetic in context, over the full (x, y) grid of queries.

With the in-context examples fixed (a ``Context``: k examples of one task (a, b)), each of the p² queries
(x, y) gets its own sequence, and activations are read at the query's y position, where z is predicted.
On that grid this module gives:

- PCA (scikit-learn) of the MLP output, the residual stream and the embedding W_E, with explained variance;
- the Fourier basis over Z_p and the norm of a residue-indexed table (W_E) per frequency, with the key
  frequencies found automatically (Nanda et al., "Progress measures for grokking");
- a 2-D DFT of every neuron over the grid: its top frequency, the fraction of its variance there, and
  neurons clustered by frequency;
- a circularity score: how well residues 0..p-1 lie on a circle in a cyclic order;
- restricted / excluded loss: the loss at the query with only the key-frequency components of an
  activation kept, or with them removed.

``mlp_analysis`` runs all of it; the pieces take plain tensors so that they also work on synthetic data.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Sequence

import einops
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from interp.tasks import Batch, ModularTask
from interp.results import Result

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


def check_layer(model: Any, layer: int) -> int:
    """``layer`` itself, or a one-line ValueError when the model has no such block."""
    n = model.cfg.n_layers
    if not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise ValueError(f"layer must be in [0, {n - 1}], got {layer!r}")
    return int(layer)


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


# --- Fourier analysis mod p --------------------------------------------------------------------------


def _fourier(p: int) -> tuple[Tensor, Tensor, list[str]]:
    """Orthonormal Fourier basis of Z_p: rows [component, residue] float64, each component's frequency [p], names."""
    r = torch.arange(p, dtype=torch.float64)
    rows, freqs, names = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)], [0], ["const"]
    for k in range(1, p // 2 + 1):
        angle = 2 * math.pi * k * r / p
        if 2 * k == p:  # the Nyquist frequency of an even p has a cosine only: (-1)^r
            rows.append(torch.cos(angle) / math.sqrt(p))
            freqs.append(k)
            names.append(f"cos {k}")
            continue
        rows += [torch.cos(angle) * math.sqrt(2 / p), torch.sin(angle) * math.sqrt(2 / p)]
        freqs += [k, k]
        names += [f"cos {k}", f"sin {k}"]
    return torch.stack(rows), torch.tensor(freqs), names


def fourier_basis(p: int) -> Result:
    """The orthonormal Fourier basis over residues: scores [component, residue] (constant, cos k, sin k for
    k = 1..p//2); extras frequency [component]."""
    if p < 2:
        raise ValueError(f"p must be at least 2, got {p}")
    basis, freqs, names = _fourier(p)
    return Result("fourier_basis", basis, ("component", "residue"),
                  labels={"component": names, "residue": [str(r) for r in range(p)]},
                  extras={"frequency": freqs}, metadata={"p": p, "title": f"Fourier basis mod {p}"})


def _key_frequencies(power: Tensor, min_gap: float) -> Tensor:
    """Frequencies whose power stands ``min_gap`` times above the rest: [m] -> [m] bool.

    The powers are sorted and cut at their largest ratio between neighbours; the top group is key when
    that ratio is at least ``min_gap``. Noise spreads power evenly, so it has no such gap."""
    key = torch.zeros(power.shape[0], dtype=torch.bool)
    order = power.argsort(descending=True)
    s = power[order]
    if s.shape[0] < 2 or s[0] <= 0:
        return key
    hi, lo = s[:-1], s[1:]
    ratio = torch.where(lo > 0, hi / lo.clamp_min(torch.finfo(s.dtype).tiny),
                        torch.where(hi > 0, torch.tensor(math.inf, dtype=s.dtype), torch.ones_like(hi)))
    j = int(ratio.argmax())
    if ratio[j] >= min_gap:
        key[order[: j + 1]] = True
    return key


def frequency_norms(table: Tensor, min_gap: float = 4.0) -> Result:
    """Norm per frequency of a residue-indexed table (e.g. W_E): [p, d] -> scores [frequency] for k = 1..p//2.

    metadata["key_frequencies"] lists the frequencies whose power stands at least ``min_gap`` times above the
    rest (norm ratio √min_gap); extras: key [frequency] bool, component_norm [component] (constant, cos 1, ...)."""
    if table.dim() != 2 or table.shape[0] < 2:
        raise ValueError(f"table must be [p, d] with p >= 2, got shape {tuple(table.shape)}")
    if min_gap <= 1:
        raise ValueError(f"min_gap must be above 1, got {min_gap}")
    p = table.shape[0]
    basis, freqs, names = _fourier(p)
    component_norm = (basis @ table.detach().double()).norm(dim=-1)  # [component]
    power = torch.zeros(p // 2, dtype=torch.float64).index_add_(0, freqs[1:] - 1, component_norm[1:] ** 2)
    tiny = float(power.sum()) <= (100 * torch.finfo(table.dtype).eps) ** 2 * float((component_norm**2).sum()) \
        if table.is_floating_point() else float(power.sum()) == 0
    key = torch.zeros_like(power, dtype=torch.bool) if tiny else _key_frequencies(power, min_gap)  # a constant table has none
    return Result("frequency_norms", power.sqrt().float(), ("frequency",),
                  labels={"frequency": [str(k) for k in range(1, p // 2 + 1)]},
                  extras={"key": key, "component_norm": component_norm.float()},
                  metadata={"p": p, "key_frequencies": (torch.nonzero(key)[:, 0] + 1).tolist(), "min_gap": min_gap,
                            "components": names, "value_name": "norm", "title": "norm per frequency"})


def _grid_coefficients(acts: Tensor) -> Tensor:
    """2-D Fourier coefficients over the grid: [x, y, d] -> [component_x, component_y, d] float64."""
    basis, _, _ = _fourier(acts.shape[0])
    return einops.einsum(basis, basis, acts.double(), "i x, j y, x y d -> i j d")


def neuron_fourier(acts: Tensor, min_fraction: float = 0.5) -> Result:
    """2-D DFT of each neuron over the (x, y) grid: [x, y, neuron] -> scores [neuron], the fraction of the
    neuron's variance at its top frequency k (the blocks (k, 0), (0, k) and (k, k) of frequency pairs, as
    in Nanda et al.).

    extras: frequency [neuron] (its top k; 0 for a constant neuron), cluster [neuron] (the top k when the
    fraction is at least ``min_fraction``, else -1), cluster_size [frequency] (k = 1..p//2),
    frequency_fraction [neuron, frequency], block_fraction [neuron, k_x, k_y] (k = 0..p//2, share of the
    variance in each pair of frequencies)."""
    if acts.dim() != 3 or acts.shape[0] != acts.shape[1] or acts.shape[0] < 3:
        raise ValueError(f"acts must be [p, p, neuron] with p >= 3, got shape {tuple(acts.shape)}")
    p = acts.shape[0]
    m = p // 2
    _, freqs, _ = _fourier(p)
    one_hot = F.one_hot(freqs, m + 1).double()  # [component, frequency]
    power = _grid_coefficients(acts) ** 2
    block = einops.einsum(power, one_hot, one_hot, "i j n, i a, j b -> n a b")  # [neuron, k_x, k_y]
    total = block.sum(dim=(1, 2)) - block[:, 0, 0]  # variance: all but the mean
    k = torch.arange(1, m + 1)
    per_freq = block[:, k, 0] + block[:, 0, k] + block[:, k, k]  # [neuron, m]
    alive = total > 1e-12 * max(float(total.max()), 1e-300)
    denom = torch.where(alive, total, torch.ones_like(total))
    frac_per_freq = torch.where(alive[:, None], per_freq / denom[:, None], torch.zeros_like(per_freq))
    fraction, top = frac_per_freq.max(dim=-1)
    top = torch.where(alive, top + 1, torch.zeros_like(top))
    cluster = torch.where(alive & (fraction >= min_fraction), top, torch.full_like(top, -1))
    sizes = torch.stack([(cluster == f).sum() for f in range(1, m + 1)])
    clusters = {str(f): torch.nonzero(cluster == f)[:, 0].tolist() for f in range(1, m + 1) if sizes[f - 1]}
    block_fraction = torch.where(alive[:, None, None], block / denom[:, None, None], torch.zeros_like(block))
    block_fraction[:, 0, 0] = 0.0
    return Result("neuron_fourier", fraction.float(), ("neuron",),
                  extras={"frequency": top, "cluster": cluster, "cluster_size": sizes,
                          "frequency_fraction": frac_per_freq.float(), "block_fraction": block_fraction.float()},
                  metadata={"p": p, "min_fraction": min_fraction, "clusters": clusters,
                            "value_name": "variance fraction at top frequency", "title": "neurons: top-frequency fraction"})


def _split_frequencies(acts: Tensor, frequencies: Sequence[int]) -> tuple[Tensor, Tensor]:
    """[x, y, ...] -> (restricted, excluded), same shape. The key part is the 2-D components built from the
    key frequencies and the constant, without the grid mean; restricted = mean + key part, excluded = the rest."""
    p = acts.shape[0]
    basis, freqs, _ = _fourier(p)
    flat = einops.rearrange(acts.double(), "x y ... -> x y (...)")
    coef = einops.einsum(basis, basis, flat, "i x, j y, x y d -> i j d")
    allowed = torch.isin(freqs, torch.tensor([0, *frequencies], dtype=torch.long))
    keep = allowed[:, None] & allowed[None, :]
    keep[0, 0] = False
    key_part = einops.einsum(basis, basis, coef * keep[..., None], "i x, j y, i j d -> x y d")
    mean = flat.mean(dim=(0, 1))
    restricted, excluded = mean + key_part, flat - key_part
    return restricted.reshape(acts.shape).to(acts.dtype), excluded.reshape(acts.shape).to(acts.dtype)


# --- PCA and circles ---------------------------------------------------------------------------------


def pca(acts: Tensor, n_components: int = 6, metadata: dict[str, Any] | None = None) -> Result:
    """PCA (scikit-learn) of points [..., d]: scores [component], the explained variance ratio; extras
    projection [..., component], components [component, d], mean [d], explained_variance [component]."""
    from sklearn.decomposition import PCA

    if acts.dim() < 2:
        raise ValueError(f"acts must be [..., d] with at least one point axis, got shape {tuple(acts.shape)}")
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}")
    flat = einops.rearrange(acts.detach().double(), "... d -> (...) d").numpy()
    n = min(n_components, *flat.shape)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant points: the ratio is 0/0, reported as 0
        fit = PCA(n_components=n, random_state=0).fit(flat)  # seeded: "auto" may pick the randomized solver
        projection = fit.transform(flat)
    ratio = np.nan_to_num(fit.explained_variance_ratio_)
    return Result("pca", torch.tensor(ratio, dtype=torch.float32), ("component",),
                  labels={"component": [f"PC{i + 1}" for i in range(n)]},
                  extras={"projection": torch.tensor(projection, dtype=torch.float32).reshape(*acts.shape[:-1], n),
                          "components": torch.tensor(fit.components_, dtype=torch.float32),
                          "mean": torch.tensor(fit.mean_, dtype=torch.float32),
                          "explained_variance": torch.tensor(fit.explained_variance_, dtype=torch.float32)},
                  metadata={"point_shape": list(acts.shape[:-1]), "value_name": "explained variance ratio",
                            "title": "PCA"} | (metadata or {}))


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % q for q in range(2, math.isqrt(p) + 1))


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group of Z_p (p prime)."""
    if not _is_prime(p):
        raise ValueError(f"p must be prime for a primitive root, got {p}")
    if p == 2:
        return 1
    factors = [q for q in range(2, p) if (p - 1) % q == 0 and _is_prime(q)]
    return next(g for g in range(2, p) if all(pow(g, (p - 1) // q, p) != 1 for q in factors))


def _circle_shares(points: Tensor) -> tuple[Tensor, Tensor]:
    """Top-2 PCs of [n, d] points and the share of their 2-D variance at each rotation frequency 1..n-1."""
    x = points.double() - points.double().mean(dim=0)
    # a spread at the rounding level of the input dtype is no structure (e.g. a constant computed two ways)
    eps = torch.finfo(points.dtype).eps if points.is_floating_point() else 0.0
    if float((x**2).sum()) <= (100 * eps) ** 2 * float((points.double() ** 2).sum()):
        x = torch.zeros_like(x)
    if x.shape[1] == 1:
        x = torch.cat([x, torch.zeros_like(x)], dim=1)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    plane = x @ vh[:2].T  # [n, 2]
    # A point set on a circle visited with a constant step 2πk/n is w_r = A·exp(2πi k r / n): all its
    # variance sits in DFT coefficient k. This one number checks radius and step at once.
    power = torch.fft.fft(torch.complex(plane[:, 0], plane[:, 1])).abs() ** 2
    total = power[1:].sum()
    if not total > 0:  # all points equal: no circle at all
        return plane, torch.zeros(x.shape[0] - 1, dtype=torch.float64)
    return plane, power[1:] / total


def _chance_corrected(share: float, n_freq: int) -> float:
    """Rescale a top share so that isotropic noise scores 0 on average and a perfect circle 1.

    Under noise the n_freq shares are Dirichlet(1, ..., 1); their expected maximum is H(n_freq) / n_freq."""
    if n_freq < 2:
        return 0.0
    chance = sum(1 / i for i in range(1, n_freq + 1)) / n_freq
    return float(min(1.0, max(0.0, (share - chance) / (1 - chance))))


def circularity(points: Tensor, multiplicative: bool = False) -> Result:
    """How well residues lie on a circle in a cyclic order: points [p, d], row r = residue r.

    The top-2 principal components are read as complex numbers w_r; a circle visited in the order c·r mod p
    puts all of w's variance into DFT frequency c. scores [frequency] is that share per frequency 1..p-1;
    metadata["score"] is the top share rescaled so that a perfect circle (constant radius and angle step)
    scores 1 and isotropic noise 0 on average. With ``multiplicative`` (p prime) the nonzero residues are also
    tried in the order of powers of a primitive root, and the better of the two orders is reported.
    metadata["frequency"] is the step of the best order (folded into 1..p//2 for the additive order)."""
    if points.dim() != 2 or points.shape[0] < 3:
        raise ValueError(f"points must be [p, d] with p >= 3, got shape {tuple(points.shape)}")
    p = points.shape[0]
    plane, shares = _circle_shares(points)
    best = int(shares.argmax())
    score = _chance_corrected(float(shares[best]), p - 1)
    # frequency k and p - k are the same order walked the other way round
    meta: dict[str, Any] = {"p": p, "order": "additive", "frequency": min(best + 1, p - best - 1), "top_share": float(shares[best])}
    extras = {"points": plane.float()}
    if multiplicative:
        g = primitive_root(p)
        order = torch.tensor([pow(g, j, p) for j in range(p - 1)])
        _, mshares = _circle_shares(points[order])
        extras["multiplicative_share"] = mshares.float()
        mbest = int(mshares.argmax()) if len(mshares) else 0
        mscore = _chance_corrected(float(mshares[mbest]), p - 2) if len(mshares) else 0.0
        if mscore > score:
            score, meta = mscore, meta | {"order": f"powers of {g}", "frequency": mbest + 1, "top_share": float(mshares[mbest])}
    return Result("circularity", shares.float(), ("frequency",), labels={"frequency": [str(k) for k in range(1, p)]},
                  extras=extras, metadata=meta | {"score": score, "value_name": "variance share", "title": f"circularity {score:.2f}"})


def grouped_means(acts: Tensor, labels: Tensor, p: int) -> Tensor | None:
    """Mean of the points [N, d] per label 0..p-1: [p, d], or None when some label has no point."""
    counts = torch.bincount(labels, minlength=p)
    if bool((counts == 0).any()):
        return None
    sums = torch.zeros(p, acts.shape[-1], dtype=torch.float64).index_add_(0, labels, acts.double())
    return sums / counts[:, None]


# --- restricted / excluded loss ----------------------------------------------------------------------


def restricted_loss(
    model: Any,
    task: ModularTask,
    hook_name: str,
    frequencies: Sequence[int] | None = None,
    context: Context | int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> Result:
    """Loss at the query over the grid with ``hook_name`` at the query position kept whole ("full"), restricted
    to the components of the ``frequencies`` (and the grid mean), or with those components removed ("excluded"):
    scores [variant]; per_example [query, variant] cross-entropy; extras accuracy [variant].

    ``frequencies`` defaults to the key frequencies of W_E."""
    task = check_modular(task)
    check_token_model(model, task)
    if hook_name not in model.hook_dict:
        raise ValueError(f"hook_name {hook_name!r} is not a hook of this model")
    ctx = resolve_context(task, context, max_context(model), generator)
    if frequencies is None:
        frequencies = frequency_norms(model.W_E.detach()[: task.p]).metadata["key_frequencies"]
    frequencies = [int(f) for f in frequencies]
    if any(not 1 <= f <= task.p // 2 for f in frequencies):
        raise ValueError(f"frequencies must be in [1, {task.p // 2}], got {frequencies}")
    batch = query_grid(task, ctx)
    logits, acts = run_grid(model, batch.inputs, batch.query_pos, read=[hook_name], batch_size=batch_size)
    return _restricted_from(model, task, batch, ctx, hook_name, acts[hook_name], logits, frequencies, batch_size)


def _restricted_from(model: Any, task: ModularTask, batch: Batch, ctx: Context, hook_name: str, acts: Tensor,
                     logits: Tensor, frequencies: list[int], batch_size: int) -> Result:
    p, pos = task.p, batch.query_pos
    grid = einops.rearrange(acts, "(x y) ... -> x y ...", x=p)
    restricted, excluded = _split_frequencies(grid, frequencies)
    target = batch.targets[:, pos]
    outs = [logits]
    for variant in (restricted, excluded):
        new = einops.rearrange(variant, "x y ... -> (x y) ...")
        outs.append(run_grid(model, batch.inputs, pos, replace={hook_name: new}, batch_size=batch_size)[0])
    losses = torch.stack([F.cross_entropy(o.float(), target, reduction="none") for o in outs], dim=-1)
    accuracy = torch.stack([(o.argmax(-1) == target).float().mean() for o in outs])
    return Result("restricted_loss", losses.mean(0), ("variant",), labels={"variant": ["full", "restricted", "excluded"]},
                  per_example=losses, extras={"accuracy": accuracy},
                  metadata={"hook_name": hook_name, "frequencies": frequencies, "p": p, "context": ctx.to_dict(),
                            "value_name": "loss at the query", "title": f"restricted / excluded loss at {hook_name}"})


# --- everything at once ------------------------------------------------------------------------------


@dataclass
class MLPAnalysis:
    """What ``mlp_analysis`` finds at one layer; every field is a Result."""

    frequencies: Result  # norm of W_E per frequency; metadata["key_frequencies"]
    pca: dict[str, Result]  # "W_E" [residue], "mlp_post" and "resid_post" [x, y] projections
    circularity: Result  # scores [activation, residue]: circularity of the class means by x, y and z
    neurons: Result  # per-neuron top frequency, fraction and cluster
    loss: Result  # full / restricted / excluded loss at the MLP output
    context: Context

    def results(self) -> dict[str, Result]:
        """Every Result by name, flat (for the CLI and JSON)."""
        return {"frequencies": self.frequencies, **{f"pca_{k}": v for k, v in self.pca.items()},
                "circularity": self.circularity, "neurons": self.neurons, "loss": self.loss}


def mlp_analysis(
    model: Any,
    task: ModularTask,
    layer: int,
    context: Context | int | None = None,
    generator: torch.Generator | None = None,
    n_components: int = 6,
    min_gap: float = 4.0,
    min_fraction: float = 0.5,
    batch_size: int = 256,
) -> MLPAnalysis:
    """PCA, Fourier analysis, circularity and restricted / excluded loss of block ``layer``'s MLP over the p²
    queries after a fixed context (default: as many sampled examples as the model reads, from ``generator``)."""
    task = check_modular(task)
    check_token_model(model, task)
    layer = check_layer(model, layer)
    if model.cfg.attn_only:
        raise ValueError("model is attention-only: it has no MLP to analyse")
    ctx = resolve_context(task, context, max_context(model), generator)
    p = task.p
    mlp_name, resid_name = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_resid_post"
    batch = query_grid(task, ctx)
    logits, flat = run_grid(model, batch.inputs, batch.query_pos, read=[mlp_name, resid_name], batch_size=batch_size)
    acts = {n: einops.rearrange(a, "(x y) d -> x y d", x=p) for n, a in flat.items()}
    w_e = model.W_E.detach()[:p]

    freqs = frequency_norms(w_e, min_gap)
    grid_meta = {"p": p, "a": ctx.a, "b": ctx.b, "layer": layer}
    pcas = {"W_E": pca(w_e, n_components, {"p": p, "title": "PCA of W_E"}),
            "mlp_post": pca(acts[mlp_name], n_components, grid_meta | {"hook_name": mlp_name, "title": f"PCA of {mlp_name}"}),
            "resid_post": pca(acts[resid_name], n_components, grid_meta | {"hook_name": resid_name, "title": f"PCA of {resid_name}"})}

    answers = grid_answers(p, ctx).flatten()
    x_lab, y_lab = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    circ_rows, best = [], {}
    w_e_score = circularity(w_e).metadata["score"]
    circ_rows.append([w_e_score] * 3)  # W_E is indexed by the token's residue, the same for every role
    for short, name in (("mlp_post", mlp_name), ("resid_post", resid_name)):
        points = flat[name]
        row = []
        for role, lab in (("x", x_lab), ("y", y_lab), ("z", answers)):
            means = grouped_means(points, lab, p)
            c = circularity(means) if means is not None else None
            row.append(0.0 if c is None else c.metadata["score"])
            best[f"{short} {role}"] = None if c is None else c.metadata["frequency"]
        circ_rows.append(row)
    circ = Result("circularity_table", torch.tensor(circ_rows), ("activation", "residue"),
                  labels={"activation": ["W_E", "mlp_post", "resid_post"], "residue": ["x", "y", "z"]},
                  metadata={"p": p, "layer": layer, "best_frequency": best, "context": ctx.to_dict(),
                            "title": f"circularity of the class means, layer {layer}"})

    neurons = neuron_fourier(acts[mlp_name], min_fraction)
    neurons.metadata |= {"layer": layer, "hook_name": mlp_name}
    loss = _restricted_from(model, task, batch, ctx, mlp_name, flat[mlp_name], logits,
                            freqs.metadata["key_frequencies"], batch_size)
    return MLPAnalysis(freqs, pcas, circ, neurons, loss, ctx)


# --- figures -----------------------------------------------------------------------------------------


def figure_pca(result: Result, color: str = "x", components: tuple[int, int] = (0, 1)):
    """Scatter of two principal components of a ``pca`` (or ``head_geometry``) Result, coloured by residue: ``color`` is "x", "y" or
    "z" for a grid ([x, y] points; z needs metadata a, b, p), anything for a residue table ([p] points)."""
    import plotly.graph_objects as go

    proj = result.extras["projection"]
    i, j = components
    if max(i, j) >= proj.shape[-1]:
        raise ValueError(f"components must be below {proj.shape[-1]}, got {components}")
    if proj.dim() == 3:
        p = proj.shape[0]
        x, y = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        if color not in ("x", "y", "z"):
            raise ValueError(f"color must be 'x', 'y' or 'z', got {color!r}")
        if color == "z":
            meta = result.metadata
            if not {"a", "b", "p"} <= set(meta):
                raise ValueError("color='z' needs metadata a, b and p")
            c = (meta["a"] * x + meta["b"] * y) % meta["p"]
        else:
            c = x if color == "x" else y
        text = [f"x={a}, y={b}" for a, b in zip(x.flatten().tolist(), y.flatten().tolist())]
    else:
        c = torch.arange(proj.shape[0])
        text = [f"r={r}" for r in range(proj.shape[0])]
    pts = einops.rearrange(proj, "... c -> (...) c")
    ratio = result.extras.get("explained_variance_ratio", result.scores)  # a pca Result, or a head_geometry one
    fig = go.Figure(go.Scatter(x=pts[:, i].tolist(), y=pts[:, j].tolist(), mode="markers", text=text,
                               marker={"color": c.flatten().tolist(), "colorscale": "Twilight", "showscale": True,
                                       "colorbar": {"title": color}}))
    fig.update_layout(title=result.metadata.get("title", "PCA"),
                      xaxis_title=f"PC{i + 1} ({float(ratio[i]):.0%})", yaxis_title=f"PC{j + 1} ({float(ratio[j]):.0%})")
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig
