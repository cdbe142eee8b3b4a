"""probes.fourier, probes.grid, probes.mlp: Fourier basis, key frequencies, circularity and neuron DFT on planted
data; the query grid, restricted / excluded loss and mlp_analysis on a tiny untrained model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask
from probes.fourier import circularity, figure_pca, fourier_basis, frequency_norms, neuron_fourier, pca, primitive_root
from probes.grid import Context, grid_activations, query_grid
from probes.mlp import mlp_analysis, restricted_loss
from interp.results import Result



def rotation(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


def planted_table(p: int, freqs: list[int], d: int = 16, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Residue r -> (cos 2πkr/p, sin 2πkr/p) for each k in ``freqs``, rotated into d dims, plus noise: [p, d]."""
    r = torch.arange(p, dtype=torch.float64)
    table = torch.zeros(p, d, dtype=torch.float64)
    for i, k in enumerate(freqs):
        amp = 3.0 - 0.5 * i  # the first frequency dominates, so the top-2 PCs are its circle
        table[:, 2 * i] = amp * torch.cos(2 * math.pi * k * r / p)
        table[:, 2 * i + 1] = amp * torch.sin(2 * math.pi * k * r / p)
    g = torch.Generator().manual_seed(seed + 1)
    return table @ rotation(d, seed) + noise * torch.randn(p, d, generator=g, dtype=torch.float64)


def tiny(p: int = 7, **knobs):
    task = ModularTask(p=p)
    model = ModelSpec.for_task(task, 4, n_layers=2, n_heads=2, d_model=16, d_mlp=32, **knobs).build().eval()
    return task, model


# --- Fourier basis and key frequencies ---------------------------------------------------------------


@pytest.mark.parametrize("p", [6, 7])
def test_fourier_basis_is_orthonormal_with_named_frequencies(p):
    basis = fourier_basis(p)
    b = basis.scores
    assert torch.allclose(b @ b.T, torch.eye(p, dtype=b.dtype), atol=1e-12)
    r = torch.arange(p, dtype=torch.float64)
    assert torch.allclose(b[1], math.sqrt(2 / p) * torch.cos(2 * math.pi * r / p))
    assert torch.allclose(b[2], math.sqrt(2 / p) * torch.sin(2 * math.pi * r / p))
    assert basis.labels["component"][:3] == ["const", "cos 1", "sin 1"]
    expected = [0, 1, 1, 2, 2, 3] if p == 6 else [0, 1, 1, 2, 2, 3, 3]  # an even p ends with cos p/2 alone
    assert basis.extras["frequency"].tolist() == expected


@pytest.mark.parametrize("p,freqs", [(7, [3]), (13, [2, 5])])
def test_planted_frequencies_are_key_and_lie_on_a_circle(p, freqs):
    table = planted_table(p, freqs)
    norms = frequency_norms(table)
    assert norms.metadata["key_frequencies"] == sorted(freqs)
    assert norms.extras["key"].sum() == len(freqs)
    circ = circularity(table)
    assert circ.metadata["score"] > 0.9
    assert circ.metadata["frequency"] == freqs[0]  # the dominant circle, walked in the order k·r mod p


@pytest.mark.parametrize("seed", range(5))
def test_random_table_has_no_key_frequency_and_low_circularity(seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(31, 16, generator=g)
    assert frequency_norms(table).metadata["key_frequencies"] == []
    assert circularity(table).metadata["score"] < 0.3
    assert circularity(table, multiplicative=True).metadata["score"] < 0.3


def test_circularity_penalises_uneven_radius_and_steps():
    p = 11
    r = torch.arange(p, dtype=torch.float64)
    circle = torch.stack([torch.cos(2 * math.pi * r / p), torch.sin(2 * math.pi * r / p)], dim=-1)
    assert circularity(circle).metadata["score"] > 0.999
    ellipse = circle * torch.tensor([1.0, 0.3], dtype=torch.float64)
    assert circularity(ellipse).metadata["score"] < 0.7
    shuffled = circle[torch.randperm(p, generator=torch.Generator().manual_seed(0))]
    assert circularity(shuffled).metadata["score"] < 0.5  # on a circle, but not in any cyclic order


def test_multiplicative_order_is_found_by_powers_of_a_generator():
    p = 31
    g = primitive_root(p)
    assert g == 3 and len({pow(g, j, p) for j in range(p - 1)}) == p - 1
    points = torch.zeros(p, 2, dtype=torch.float64)  # residue 0 sits at the centre
    for j in range(p - 1):
        angle = 2 * math.pi * j / (p - 1)
        points[pow(g, j, p)] = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    assert circularity(points).metadata["score"] < 0.3
    circ = circularity(points, multiplicative=True)
    assert circ.metadata["score"] > 0.99 and circ.metadata["order"] == "powers of 3"


def test_neuron_dft_finds_planted_frequencies_and_clusters_them():
    p = 11
    theta = 2 * math.pi * torch.arange(p, dtype=torch.float64) / p
    x, y = torch.meshgrid(theta, theta, indexing="ij")
    planted = [torch.relu(torch.cos(k * x + i) + torch.cos(k * y + 2 * i)) for i, k in enumerate([2, 2, 2, 3, 3])]
    noise = torch.randn(p, p, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    acts = torch.cat([torch.stack(planted, dim=-1), noise, torch.zeros(p, p, 1, dtype=torch.float64)], dim=-1)
    r = neuron_fourier(acts)
    assert r.extras["frequency"][:5].tolist() == [2, 2, 2, 3, 3]
    assert (r.scores[:5] > 0.9).all() and (r.scores[5:9] < 0.5).all()
    assert r.extras["cluster"].tolist() == [2, 2, 2, 3, 3, -1, -1, -1, -1, -1]  # the constant neuron too
    assert r.extras["cluster_size"].tolist() == [0, 3, 2, 0, 0]
    assert r.metadata["clusters"] == {"2": [0, 1, 2], "3": [3, 4]}
    # a pure product of one frequency puts all variance in the (k, k) block
    prod = (torch.cos(4 * x) * torch.sin(4 * y))[..., None]
    one = neuron_fourier(prod)
    assert one.extras["block_fraction"][0, 4, 4].item() == pytest.approx(1.0)


def test_pca_keeps_point_shape_and_explains_planted_plane():
    table = planted_table(7, [1], noise=0.0)
    r = pca(table, n_components=3)
    assert r.scores[:2].sum() == pytest.approx(1.0, abs=1e-6)
    grid = torch.randn(5, 5, 8, generator=torch.Generator().manual_seed(0))
    g = pca(grid, n_components=4)
    assert g.extras["projection"].shape == (5, 5, 4) and g.extras["components"].shape == (4, 8)
    assert torch.allclose(g.extras["projection"][2, 3], (grid[2, 3] - g.extras["mean"]) @ g.extras["components"].T, atol=1e-5)


# --- the grid on a model -----------------------------------------------------------------------------


def test_grid_activations_match_a_hand_built_sequence():
    task, model = tiny()
    ctx = Context(torch.tensor([[1, 2], [4, 0], [6, 6]]), a=3, b=5)
    name = "blocks.1.mlp.hook_post"
    acts = grid_activations(model, task, [name], ctx)[name]
    assert acts.shape == (7, 7, 32)
    one = task.assemble(torch.tensor([[[1, 2], [4, 0], [6, 6], [3, 5]]]), {"a": torch.tensor([3]), "b": torch.tensor([5])})
    assert one.inputs.tolist() == [[1, 2, 6, 4, 0, 5, 6, 6, 6, 3, 5]]
    _, cache = model.run_with_cache(one.inputs)
    assert torch.allclose(acts[3, 5], cache[name][0, one.query_pos], atol=1e-6)
    batch = query_grid(task, ctx)
    assert batch.query_pos == 10 and batch.targets[3 * 7 + 5, 10].item() == (3 * 3 + 5 * 5) % 7


def boosted(p: int = 7):
    """An untrained model whose logits move with its input, so that ablations change the loss."""
    task, model = tiny(p)
    model.unembed.W_U.data *= 30
    return task, model


def test_restricted_and_excluded_loss_split_the_activation():
    task, model = boosted()
    ctx = Context(torch.tensor([[1, 2], [4, 0]]), a=3, b=5)
    name = "blocks.0.mlp.hook_post"
    everything = restricted_loss(model, task, name, frequencies=[1, 2, 3], context=ctx)
    nothing = restricted_loss(model, task, name, frequencies=[], context=ctx)
    full = everything.scores[0]
    assert everything.labels["variant"] == ["full", "restricted", "excluded"]
    assert everything.per_example.shape == (49, 3)
    assert everything.scores[1] == pytest.approx(full.item(), abs=1e-5)  # all frequencies: nothing removed
    assert nothing.scores[2] == pytest.approx(full.item(), abs=1e-5)  # no frequency: nothing removed

    # restricted to no frequency = every query sees the grid mean; computed here by hand
    batch = query_grid(task, ctx)
    acts = grid_activations(model, task, [name], ctx)[name]
    mean = acts.mean(dim=(0, 1))

    def to_mean(act, hook):
        act = act.clone()
        act[:, batch.query_pos] = mean
        return act

    logits = model.run_with_hooks(batch.inputs, fwd_hooks=[(name, to_mean)])[:, batch.query_pos]
    by_hand = F.cross_entropy(logits, batch.targets[:, batch.query_pos]).item()
    assert abs(by_hand - full.item()) > 1e-3  # the ablation matters, so the equalities above say something
    assert nothing.scores[1] == pytest.approx(by_hand, abs=1e-5)
    assert everything.scores[2] == pytest.approx(by_hand, abs=1e-5)
    # one frequency: restricted and excluded both differ from the full loss
    one = restricted_loss(model, task, name, frequencies=[2], context=ctx)
    assert one.scores[0] == pytest.approx(full.item(), abs=1e-6)
    assert abs(one.scores[1] - full) > 1e-4 and abs(one.scores[2] - full) > 1e-4


def test_mlp_analysis_finds_a_planted_embedding():
    task, model = tiny()
    model.embed.W_E.data = planted_table(7, [2], d=16, noise=0.01).float()
    a = mlp_analysis(model, task, layer=1, generator=torch.Generator().manual_seed(3))
    assert a.frequencies.metadata["key_frequencies"] == [2]
    assert a.circularity.axes == ("activation", "residue") and a.circularity.scores.shape == (3, 3)
    assert a.circularity.scores[0, 0] > 0.9  # W_E row
    assert a.context.n_examples == 3  # n_ctx 11 = 3 examples + the query's x, y
    assert a.pca.W_E.scores[:2].sum() > 0.99
    assert a.pca.mlp_post.extras["projection"].shape == (7, 7, 6)
    assert a.neurons.scores.shape == (32,) and a.neurons.metadata["layer"] == 1
    assert a.loss.metadata["frequencies"] == [2] and a.loss.metadata["hook_name"] == "blocks.1.mlp.hook_post"
    # the full loss is the model's own cross-entropy at the query
    batch = query_grid(task, a.context)
    direct = F.cross_entropy(model(batch.inputs)[:, batch.query_pos], batch.targets[:, batch.query_pos])
    assert a.loss.scores[0] == pytest.approx(direct.item(), abs=1e-5)
    for name, r in a.results().items():
        back = Result.from_json(r.to_json())
        assert torch.equal(back.scores, r.scores), name
    fig = figure_pca(a.pca.mlp_post, color="z")
    assert len(fig.data[0].x) == 49


def test_mlp_analysis_rejects_bad_arguments():
    task, model = tiny()
    with pytest.raises(ValueError, match="task must be a ModularTask"):
        mlp_analysis(model, LinearTask(d_x=2), layer=0)
    with pytest.raises(ValueError, match=r"^layer 2 does not exist: the model has 2 layers \(0-1\)$"):
        mlp_analysis(model, task, layer=2)
    with pytest.raises(ValueError, match="d_vocab=7 but the task has p=5"):
        mlp_analysis(model, ModularTask(p=5), layer=0)
    with pytest.raises(ValueError, match="between 0 and 3 examples"):
        mlp_analysis(model, task, layer=0, n_context=4)
    with pytest.raises(ValueError, match="residues"):
        mlp_analysis(model, task, layer=0, context=Context(torch.tensor([[7, 1]]), 1, 1))
    _, attn_only = tiny(attn_only=True)
    with pytest.raises(ValueError, match="attention-only"):
        mlp_analysis(attn_only, task, layer=0)
    with pytest.raises(ValueError, match="frequencies must be in"):
        restricted_loss(model, task, "blocks.0.mlp.hook_post", frequencies=[4])
    with pytest.raises(ValueError, match="hook_name"):
        restricted_loss(model, task, "blocks.9.mlp.hook_post")
