"""probes.geometry: circle-of-circles and even/odd scores on synthetic features, and head features read from
a tiny untrained model at the right hook and position."""
from __future__ import annotations

import math

import pytest
import torch

from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask
from probes.geometry import MEASURES, feature_geometry, head_features, head_geometry
from probes.fourier import figure_pca
from probes.grid import Context
from interp.results import Result



def synthetic(p: int, outer: float = 3.0, inner: float = 1.0, parity: float = 0.0, noise: float = 0.02,
              rotate_inner: bool = False, d: int = 12, seed: int = 0) -> torch.Tensor:
    """Features [x, y, d]: an outer circle in x (radius ``outer``), an inner circle in y at frequency 2 around each
    point of it (radius ``inner``), an even/odd-x offset of ±``parity``, rotated into d dims, plus noise. With
    ``rotate_inner`` each x turns its inner circle by x·2π/p, so the y-means cancel."""
    theta = 2 * math.pi * torch.arange(p, dtype=torch.float64) / p
    x, y = torch.meshgrid(theta, theta, indexing="ij")
    f = torch.zeros(p, p, d, dtype=torch.float64)
    f[..., 0], f[..., 1] = outer * torch.cos(x), outer * torch.sin(x)
    phase = 2 * y + (x if rotate_inner else 0)
    f[..., 2], f[..., 3] = inner * torch.cos(phase), inner * torch.sin(phase)
    f[..., 4] = parity * (1 - 2 * (torch.arange(p)[:, None] % 2)).double()
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return f @ q + noise * torch.randn(p, p, d, generator=g, dtype=torch.float64)


def score(r: Result, measure: str) -> float:
    return r.scores[MEASURES.index(measure)].item()


def test_circle_of_circles_scores_near_one():
    r = feature_geometry(synthetic(11))
    assert r.labels["measure"] == list(MEASURES)
    assert score(r, "outer x") > 0.95 and score(r, "inner y") > 0.95
    assert r.metadata["outer_x_frequency"] == 1
    assert (r.extras["inner_y"] > 0.9).all()
    assert r.extras["projection"].shape == (11, 11, 6)
    assert r.extras["explained_variance_ratio"][:4].sum() > 0.99  # two planes hold it all


def test_turning_inner_circles_are_inner_but_not_outer_in_y():
    r = feature_geometry(synthetic(11, rotate_inner=True))
    assert score(r, "outer x") > 0.95 and score(r, "inner y") > 0.95
    assert score(r, "outer y") < 0.3  # the y-means cancel when each x turns its inner circle


def test_x_only_circle_has_no_inner_structure():
    r = feature_geometry(synthetic(11, inner=0.0, noise=0.0))
    assert score(r, "outer x") > 0.99
    assert score(r, "inner y") == 0.0 and score(r, "outer y") == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_random_features_score_low(seed):
    g = torch.Generator().manual_seed(seed)
    r = feature_geometry(torch.randn(11, 11, 12, generator=g))
    assert (r.scores[:4] < 0.3).all(), r.scores
    assert (r.scores[4:] < 0.4).all(), r.scores


def test_even_and_odd_planes():
    split = feature_geometry(synthetic(11, parity=1.5))
    assert score(split, "parity x") > 0.95 and score(split, "parity y") < 0.3
    assert score(split, "outer x") > 0.9  # the offset plane is weaker than the circle, which stays on top
    plain = feature_geometry(synthetic(11))
    assert score(plain, "parity x") < 0.5  # evens and odds interleave around the circle


def tiny(p: int = 7):
    task = ModularTask(p=p)
    return task, ModelSpec.for_task(task, 4, n_layers=2, n_heads=2, d_model=16, d_mlp=32).build().eval()


def test_head_features_are_hook_z_at_the_z_token_or_the_query():
    task, model = tiny()
    ctx = Context(torch.tensor([[1, 2], [4, 0]]), a=3, b=5)
    z_feats = head_features(model, task, 1, 1, ctx, output="z", pos="z")
    q_feats = head_features(model, task, 1, 1, ctx, output="z", pos="query")
    out = head_features(model, task, 1, 1, ctx, output="result", pos="z")
    assert z_feats.shape == (7, 7, 8) and out.shape == (7, 7, 16)
    # grid example (2, 6): z = 6 + 30 = 36 = 1 mod 7, read at its z token (position 8)
    seq = torch.tensor([[1, 2, 6, 4, 0, 5, 2, 6, 1]])
    _, cache = model.run_with_cache(seq)
    z = cache["blocks.1.attn.hook_z"][0, :, 1]  # [pos, d_head]
    assert torch.allclose(z_feats[2, 6], z[8], atol=1e-6)
    assert torch.allclose(q_feats[2, 6], z[7], atol=1e-6)
    assert torch.allclose(out[2, 6], z[8] @ model.W_O[1, 1], atol=1e-5)


def test_head_geometry_end_to_end_and_errors():
    task, model = tiny()
    r = head_geometry(model, task, layer=0, head=1, generator=torch.Generator().manual_seed(0))
    assert r.scores.shape == (6,) and ((r.scores >= 0) & (r.scores <= 1)).all()
    assert r.metadata["layer"] == 0 and r.metadata["head"] == 1 and r.metadata["pos"] == "z"
    assert len(r.metadata["context"]["examples"]) == 2  # n_ctx 11 holds 2 examples + one whole grid example
    assert torch.equal(Result.from_json(r.to_json()).scores, r.scores)
    assert len(figure_pca(r, color="y").data[0].x) == 49
    with pytest.raises(ValueError, match=r"head must be in \[0, 1\], got 2"):
        head_geometry(model, task, layer=0, head=2)
    with pytest.raises(ValueError, match=r"The 'layer' parameter of GeometrySettings must be an int >= 0. Got -1"):
        head_geometry(model, task, layer=-1, head=0)
    with pytest.raises(ValueError, match=r"^layer 2 does not exist: the model has 2 layers \(0-1\)$"):
        head_geometry(model, task, layer=2, head=0)
    with pytest.raises(ValueError, match="The 'output' parameter of GeometrySettings must be one of 'z', 'result'"):
        head_geometry(model, task, layer=0, head=0, output="pattern")
    with pytest.raises(ValueError, match="task must be a ModularTask"):
        head_geometry(model, LinearTask(d_x=2), layer=0, head=0)
    with pytest.raises(ValueError, match="between 0 and 2 examples"):
        head_geometry(model, task, layer=0, head=0, n_context=3)
