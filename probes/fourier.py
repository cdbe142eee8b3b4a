"""Fourier analysis over Z_p, PCA and circularity: the pieces take plain tensors, so they also work on synthetic data.

- the Fourier basis over Z_p and the norm of a residue-indexed table (W_E) per frequency, with the key
  frequencies found automatically (Nanda et al., "Progress measures for grokking");
- a 2-D DFT of every neuron over the (x, y) grid: its top frequency, the fraction of its variance there, and
  neurons clustered by frequency; the split of grid activations into key-frequency and other components;
- PCA (scikit-learn) of points such as the MLP output, the residual stream or W_E, with explained variance,
  and its scatter figure;
- a circularity score: how well residues 0..p-1 lie on a circle in a cyclic order.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import einops
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from interp.results import Result

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


def split_frequencies(acts: Tensor, frequencies: Sequence[int]) -> tuple[Tensor, Tensor]:
    """[x, y, ...] -> (restricted, excluded), same shape. The key part is the 2-D components built from the
    key frequencies and the constant, without the grid mean; restricted = mean + key part, excluded = the rest."""
    p = acts.shape[0]
    basis, freqs, _ = _fourier(p)
    flat = einops.rearrange(acts.double(), "x y ... -> x y (...)")
    coef = _grid_coefficients(flat)
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
