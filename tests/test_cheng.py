"""Cheng, Chen & Sra as their official code has it: the kernels and their Bayes predictor, the restricted layer
(against the official forward written out, and as functional gradient descent), its fused training path, its
hooks, and the recipe's per-layer clipping and batch reuse."""
import math

import pytest
import torch

from interp.cheng import official_parameters, one_layer_prediction, one_layer_weights, weight_masks
from interp.spec import ModelSpec
from interp.tasks import KernelTask
from interp.tasks.kernel import covariance, gram, root
from interp.train import TrainConfig, clip_per_layer, layer_clip_at, make_optimizer, train, train_step

D = 3  # input dims of the tiny tests


def restricted(n_layers=2, scoring="exp", n_heads=1, d_x=D, n_context=5, seed=0):
    task = KernelTask(d_x=d_x, kernel="exp", layout="paired")
    spec = ModelSpec.for_task(task, n_context, n_layers=n_layers, n_heads=n_heads, d_model=d_x + 1, attn_only=True,
                              normalization="none", positional="none", mask="context", scoring=scoring,
                              layer="cheng2024", seed=seed)
    return task, spec.build()


def official_forward(allparam, Z, activations):
    """linear_transformer.py's Transformer_F.forward and attention(), line for line (one activation per head)."""
    N = Z.shape[1] - 1
    mask = torch.zeros(1, N + 1, N + 1, dtype=torch.bool)
    mask[:, -1, :] = True
    for i in range(allparam.shape[0]):
        residues = 0
        for j, act in enumerate(activations):
            P, Q, K = allparam[i, j]
            Attn = torch.einsum("BNi, ij, BMj -> BNM", Z, Q.T @ K, Z)
            PZ = torch.einsum("ij, BNj -> BNi", P, Z)
            if act == "exp":
                Attn = torch.exp(Attn).masked_fill(mask, 0)
            elif act == "linear":
                Attn = Attn.masked_fill(mask, 0)
            elif act == "relu":
                Attn = torch.relu(Attn.masked_fill(mask, 0))
            else:
                Attn = torch.softmax(Attn.masked_fill(mask, float("-inf")), dim=1)
            residues = residues + torch.einsum("BNi, BNM -> BMi", PZ, Attn) / N
        Z = Z + residues
    return Z


def test_kernels_are_the_official_ones(gen):
    """exp is exp(<u,v>/2); comb slices X[:, :, 2:-1] as theirs does; relu is relu(<u, v>)."""
    u, v = torch.randn(2, 4, 5, generator=gen()), torch.randn(2, 3, 5, generator=gen())
    dot = u @ v.transpose(-1, -2)
    assert torch.allclose(gram(u, v, "exp"), torch.exp(dot / 2))
    assert torch.allclose(gram(u, v, "exp-unscaled"), torch.exp(dot))
    assert torch.allclose(gram(u, v, "relu"), torch.relu(dot))
    comb = torch.exp(torch.einsum("bni,bmi->bnm", u[..., 0:2], v[..., 0:2]) / 2) + torch.einsum(
        "bni,bmi->bnm", u[..., 2:-1], v[..., 2:-1])
    assert torch.allclose(gram(u, v, "comb"), comb)


def test_relu_data_follow_the_absolute_eigenvalues(gen):
    """y = Q|Λ|^½ξ: its covariance over many draws on fixed inputs is Q|Λ|Qᵀ, not the clipped K, and the kernel
    really is indefinite there (so the two differ)."""
    task = KernelTask(d_x=D, kernel="relu", layout="paired")
    xs = task.sample_examples(1, 6, gen()).expand(40_000, -1, -1)
    ys = task.label(xs, task.sample_params(40_000, 6, gen()))[..., 0].double()
    want = covariance(xs[:1], "relu")[0]
    assert torch.linalg.eigvalsh(gram(xs[:1].double(), xs[:1].double(), "relu")[0]).min() < -1e-3
    assert torch.allclose(ys.T @ ys / ys.shape[0], want, atol=0.03)


@pytest.mark.parametrize("kernel", ["relu", "exp"])
def test_labels_are_a_function_of_the_gram_matrix(kernel, gen):
    """y = S·ξ with the symmetric root S of Q|Λ|Qᵀ, so one seed gives the same data on every machine: a rounding-level
    change of K moves S by rounding only (Q·|Λ|^½, the official factor, turns by O(1) where eigenvalues nearly meet)."""
    task = KernelTask(d_x=5, kernel=kernel, layout="paired")
    xs = task.sample_examples(2000, 15, gen())
    k = gram(xs.double(), xs.double(), kernel)
    noise = torch.randn(k.shape, generator=gen(), dtype=torch.float64)
    s = root(k)
    assert (root(k + (noise + noise.mT) * 1e-15 * k.abs().max()) - s).abs().max() < 1e-6
    assert torch.allclose(s @ s.mT, covariance(xs, kernel), atol=1e-9)
    params = task.sample_params(2000, 15, gen())
    want = torch.einsum("bij,bj->bi", s, params["eps"].double())
    assert torch.allclose(task.label(xs, params)[..., 0].double(), want, atol=1e-5)


@pytest.mark.parametrize("scoring", ["linear", "relu", "exp", "softmax", "exp,linear"])
def test_restricted_layer_is_the_official_forward(scoring, gen):
    """Our model on tokens Z predicts minus the label slot of the official Transformer_F (Transformer_C for two
    heads) run with our weights as P, Q, K, through every layer."""
    n_heads = len(scoring.split(","))
    task, model = restricted(n_layers=3, scoring=scoring, n_heads=n_heads)
    with torch.no_grad():  # make the x-rows move too, so later layers see changed inputs
        for block in model.blocks:
            block.attn.W_V.mul_(3.0)
    batch = task.sample(4, 5, gen())
    Z = official_forward(official_parameters(model), batch.inputs.clone(), scoring.split(","))
    assert torch.allclose(model(batch.inputs)[:, -1, 0], -Z[:, -1, D], atol=1e-5)
    _, cache = model.run_with_cache(batch.inputs)  # and every residual is the official Z
    assert torch.allclose(cache["blocks.2.hook_resid_post"], Z, atol=1e-5)


@pytest.mark.parametrize("scoring", ["linear", "relu", "exp", "softmax"])
def test_one_hand_set_layer_is_one_step_of_functional_gradient_descent(scoring, gen):
    """Q = K = I on x and P = -η on y (the official sign: the prediction is minus the label slot): from f0 = 0 the
    layer's prediction is f1(x_q) = η/N Σ_i h(<x_i, x_q>) y_i, and every context slot holds its residual y_i - f1(x_i)
    (softmax: h(<x_i, x_q>)/N with h the softmax over the context). A second such layer takes the second step."""
    task, model = restricted(n_layers=2, scoring=scoring)
    eta = 0.7
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q[0].copy_(torch.diag(torch.tensor([1.0] * D + [0.0])))
            block.attn.W_K[0].copy_(torch.diag(torch.tensor([1.0] * D + [0.0])))
            block.attn.W_V[0].copy_(torch.diag(torch.tensor([0.0] * D + [-eta])))
    batch = task.sample(6, 5, gen())
    x, y = batch.examples, batch.inputs[:, :-1, D]
    n = y.shape[1]
    scores = torch.einsum("bid,bjd->bij", x, x[:, :-1])  # [batch, every point, context point]
    h = {"linear": lambda s: s, "relu": torch.relu, "exp": torch.exp, "softmax": lambda s: s.softmax(-1)}[scoring]
    k = h(scores) / n  # the step's kernel weights
    residual = y.clone()
    f = torch.zeros_like(batch.inputs[..., 0])  # f at every point, query last
    for step in range(2):
        f = f + eta * torch.einsum("bij,bj->bi", k, residual)
        residual = y - f[:, :-1]
        if step == 0:
            _, cache = model.run_with_cache(batch.inputs)
            assert torch.allclose(cache["blocks.0.hook_resid_post"][:, :-1, D], residual, atol=1e-5)
            assert torch.allclose(model(batch.inputs, stop_at_layer=1)[:, -1, D], -f[:, -1], atol=1e-5)
    assert torch.allclose(model(batch.inputs)[:, -1, 0], f[:, -1], atol=1e-5)


@pytest.mark.parametrize("scoring", ["linear", "relu", "exp", "softmax"])
def test_one_layer_prediction_is_the_trained_form_of_one_layer(scoring, gen):
    """``one_layer_prediction`` with the weights ``one_layer_weights`` reads from a one-layer model (random, not
    hand-set: A not symmetric, P's x block non-zero) is the model's prediction at the query."""
    task, model = restricted(n_layers=1, scoring=scoring)
    with torch.no_grad():
        for name in ("W_Q", "W_K", "W_V"):
            getattr(model.blocks[0].attn, name).mul_(8.0)
    batch = task.sample(6, 5, gen())
    xs, ys = batch.examples, batch.inputs[:, :-1, D]
    score_matrix, value = one_layer_weights(model, D)
    want = one_layer_prediction(xs[:, :-1], ys, xs[:, -1], score_matrix, value, scoring)
    assert not torch.allclose(score_matrix, score_matrix.T)
    assert torch.allclose(model(batch.inputs)[:, -1, 0], want, atol=1e-5)


def test_one_layer_helpers_refuse_what_they_cannot_read(gen):
    _, deep = restricted(n_layers=2)
    with pytest.raises(ValueError, match="model must have one layer"):
        one_layer_weights(deep, D)
    xs, ys = torch.randn(2, 4, D), torch.randn(2, 4)
    with pytest.raises(ValueError, match="scoring"):
        one_layer_prediction(xs, ys, xs[:, 0], torch.eye(D), 1.0, "tanh")
    with pytest.raises(ValueError, match="score_matrix"):
        one_layer_prediction(xs, ys, xs[:, 0], torch.eye(D + 1), 1.0, "exp")


@pytest.mark.parametrize("scoring,n_heads,official", [("exp,linear", 2, True), ("relu", 1, True), ("softmax", 1, True),
                                                      ("exp,linear", 2, False)])
def test_fused_training_path_equals_transformer_lens(gen, scoring, n_heads, official):
    """In training mode with no user hook the blocks run fused: outputs and gradients equal the eval-mode
    (TransformerLens) run, in the official form's pass and (biases made trainable and non-zero) in the general
    one; a user hook in training mode is honoured (TransformerLens's path)."""
    from interp.cheng import official_form

    task, model = restricted(n_layers=3, scoring=scoring, n_heads=n_heads)
    if not official:
        with torch.no_grad():
            model.blocks[1].attn.b_O.fill_(0.1)
        model.blocks[1].attn.b_O.requires_grad_(True)
    assert [official_form(b.attn) for b in model.blocks] == [True, official, True]
    batch = task.sample(8, 5, gen())
    grads = {}
    for mode in ("eval", "train"):
        getattr(model, mode)()
        model.zero_grad()
        out = model(batch.inputs)
        out.pow(2).sum().backward()
        grads[mode] = (out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert torch.allclose(grads["eval"][0], grads["train"][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads["eval"][1], grads["train"][1]))
    seen = []
    model.train()
    model.run_with_hooks(batch.inputs, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, hook: seen.append(z.shape))])
    assert seen == [(8, 6, n_heads, D + 1)]


def test_masked_and_frozen_entries_never_move():
    """After AdamW steps the masked entries of W_Q, W_K, W_V are still exactly 0, the read-in, read-out, W_O and
    biases are as built, and the free entries moved."""
    task, model = restricted(n_layers=2, scoring="relu")
    masks = weight_masks(D + 1, D)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(lr=0.1, betas=(0.9, 0.9), weight_decay=0.1, grad_clip=0.0)
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(5):
        train_step(model, opt, task.sample(16, 5, g), 0.1, None)
    for name, value in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in masks:
            assert (value[:, ~masks[leaf]] == 0).all(), name
            assert not torch.equal(value[:, masks[leaf]], before[name][:, masks[leaf]]), name
        elif value.dtype.is_floating_point and value.ndim > 0:
            assert torch.equal(value, before[name]), name
    assert model.unembed.linear.weight.tolist() == [[0.0] * D + [-1.0]]
    assert torch.equal(model.embed.linear.weight, torch.eye(D + 1))


def test_per_layer_clipping_is_the_official_rule(gen):
    """clip_per_layer does run-exp.ipynb's clip_and_step: block i's gradient scaled to clip/(8 - i + 1)² when larger."""
    task, model = restricted(n_layers=3, scoring="exp")
    batch = task.sample(16, 5, gen())
    model(batch.inputs).pow(2).mean().backward()
    raw = [torch.cat([p.grad.flatten() for p in b.parameters() if p.grad is not None]) for b in model.blocks]
    clip = float(min(r.norm() for r in raw) * 80)  # binds for the deep blocks only
    clip_per_layer(model, clip)
    for i, (block, g0) in enumerate(zip(model.blocks, raw)):
        g1 = torch.cat([p.grad.flatten() for p in block.parameters() if p.grad is not None])
        cap = clip / (8 - i + 1) ** 2
        want = g0 * (cap / g0.norm()) if g0.norm() > cap else g0
        assert torch.allclose(g1, want, rtol=1e-6, atol=0)
    cfg = TrainConfig(layer_clip=1e-8, layer_clip_after=(8000, 1e-7))
    assert (layer_clip_at(8000, cfg), layer_clip_at(8001, cfg)) == (1e-8, 1e-7)  # their ``if t > 8000``


@pytest.mark.parametrize("clip", [1e-8, 1e-7])
def test_a_clipped_adamw_step_moves_each_block_by_lr_cap_over_eps(gen, clip):
    """Under the official constants every clipped block gradient is far below AdamW's eps: the first step moves
    each entry by lr·g/(|g| + eps) (AdamW's closed form at step 1), so block i moves by 80-100% of lr·cap/eps, cap =
    clip/(9 - i)²: the clipping constant is the step size (REPRODUCTION §3, the clipping control), and its
    tenfold growth after step 8,000 a tenfold step."""
    task, model = restricted(n_layers=3, scoring="linear")
    cfg = TrainConfig(lr=0.1, betas=(0.9, 0.9), weight_decay=0.0, grad_clip=0.0, layer_clip=clip)
    opt = make_optimizer(model, cfg)
    before = [torch.cat([p.detach().flatten().clone() for p in b.parameters()]) for b in model.blocks]
    model.train()
    train_step(model, opt, task.sample(64, 5, gen()), cfg.lr, cfg.grad_clip, cfg.layer_clip)
    eps = opt.param_groups[0]["eps"]
    for i, (block, b0) in enumerate(zip(model.blocks, before)):
        moved = torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in block.parameters()]) - b0).item()
        g = torch.cat([p.grad.flatten() for p in block.parameters() if p.grad is not None]).double()
        assert moved == pytest.approx(cfg.lr * (g / (g.abs() + eps)).norm().item(), rel=1e-4), i
        bound = cfg.lr * clip / (9 - i) ** 2 / eps
        assert 0.8 * bound < moved <= bound, i  # AdamW without eps would move it by lr·√(entries), whatever the clip


def test_batches_are_reused_for_resample_every_steps(tmp_path, monkeypatch):
    """resample_every=3: a new batch at steps 0, 3, 6 only; and a killed run resumes to identical weights."""
    task, _ = restricted(n_layers=1)
    spec = ModelSpec.for_task(task, 5, n_layers=1, n_heads=1, d_model=D + 1, attn_only=True, normalization="none",
                              positional="none", mask="context", scoring="exp", layer="cheng2024")
    cfg = TrainConfig(steps=9, batch_size=8, n_examples=5, lr=0.1, betas=(0.9, 0.9), weight_decay=0.0, warmup_steps=0,
                      grad_clip=0.0, layer_clip=1e-8, resample_every=3, eval_every=3, eval_size=16, checkpoint_every=3,
                      snapshots=0)
    import importlib

    tr = importlib.import_module("interp.train")  # ``interp.train`` the attribute is the API function

    drawn = []
    real = tr.train_batch
    monkeypatch.setattr(tr, "train_batch", lambda t, c, step, g: drawn.append(step) or real(t, c, step, g))
    full = train(task, spec, cfg, out=tmp_path / "full", progress=False)
    assert drawn == [0, 3, 6]
    train(task, spec, cfg, out=tmp_path / "killed", progress=False, stop_after=4)  # dies between saves (at 3)
    resumed = train(task, spec, cfg, out=tmp_path / "killed", progress=False)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(resample_every=3, checkpoint_every=10)


def test_restricted_model_runs_patching_and_attribution(gen):
    """The restricted layer is TransformerLens blocks: exact patching and head attribution run on it."""
    from probes.attribution import attribute
    from probes.patching import patch

    task, model = restricted(n_layers=2, scoring="exp,linear", n_heads=2)
    model.eval()
    clean = task.sample(6, 5, gen())
    corrupted = task.corrupt(clean, "params", gen(1))
    result = patch(model, task, clean, corrupted, site="z", by="head")
    assert result.scores.shape == (2, 2) and torch.isfinite(torch.as_tensor(result.scores)).all()
    dla = attribute(model, task, clean, corrupted, method="dla")
    assert torch.isfinite(torch.as_tensor(dla.scores)).all()


@pytest.mark.parametrize("field, value, match", [
    ("normalization", "LN", "normalization"), ("d_model", 8, "d_model"), ("mask", "causal", "mask"),
    ("init", "he2024", "init"), ("scoring", "exp,linear,relu", "scoring"), ("layer", "nope", "layer")])
def test_restricted_layer_refuses_what_it_cannot_be(field, value, match):
    task = KernelTask(d_x=D, layout="paired")
    knobs = dict(n_layers=1, n_heads=2, d_model=D + 1, attn_only=True, normalization="none", positional="none",
                 mask="context", scoring="exp", layer="cheng2024") | {field: value}
    with pytest.raises(ValueError, match=match):
        ModelSpec.for_task(task, 5, **knobs)


def test_restricted_exp_is_uncapped_and_standard_exp_is_capped():
    task = KernelTask(d_x=D, layout="paired")
    assert restricted()[1] is not None and ModelSpec.for_task(
        task, 5, n_layers=1, n_heads=1, d_model=D + 1, attn_only=True, normalization="none", positional="none",
        mask="context", scoring="exp", layer="cheng2024").scoring_exp_cap is None
    assert ModelSpec.for_task(task, 5, scoring="exp", mask="context").scoring_exp_cap == 10.0
    assert math.isinf(ModelSpec.for_task(task, 5, scoring="exp", mask="context", exp_cap=math.inf).scoring_exp_cap)


def test_softmax_last_equals_torch_softmax():
    """The fused pass's softmax, values and gradients, equals torch.softmax, also where exp would overflow unshifted."""
    from interp.cheng import softmax_last

    scores = (torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(0)) * 100).requires_grad_()
    upstream = torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(1))
    ours = softmax_last(scores)
    (grad_ours,) = torch.autograd.grad(ours, scores, upstream)
    theirs = torch.softmax(scores, dim=-1)
    (grad_theirs,) = torch.autograd.grad(theirs, scores, upstream)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, theirs, atol=1e-6) and torch.allclose(grad_ours, grad_theirs, atol=1e-6)


def test_paired_gap_is_the_difference_of_the_two_query_errors():
    """interp.cards.paired_gap: on the same sequences, the mean gap is the difference of the two models' query_mse
    numbers, its CI comes from the per-sequence differences (brute force), a model against itself has gap 0, and
    two different tasks are refused."""
    from interp.cards import paired_gap, query_mse

    task = KernelTask(d_x=D, kernel="exp", layout="paired")
    cfg = TrainConfig(steps=3, batch_size=16, n_examples=5, lr=0.1, betas=(0.9, 0.9), weight_decay=0.0, grad_clip=0.0,
                      warmup_steps=0, eval_every=3, eval_size=16, snapshots=0)
    ckpts = []
    for seed in (0, 1):
        spec = ModelSpec.for_task(task, 5, n_layers=2, n_heads=1, d_model=D + 1, attn_only=True, normalization="none",
                                  positional="none", mask="context", scoring="exp", layer="cheng2024", seed=seed)
        ckpts.append(train(task, spec, cfg, progress=False))
    a, b = ckpts
    gap = paired_gap(a, b, n=300, seed=5)
    assert gap["gap"] == pytest.approx(query_mse(b, 300, 5)["mse"] - query_mse(a, 300, 5)["mse"], rel=1e-9, abs=1e-12)
    batch = task.sample(300, 5, torch.Generator().manual_seed(5))
    with torch.no_grad():
        errors = [(ck.model.eval()(batch.inputs)[:, -1, 0].double() - batch.targets[:, -1, 0].double()) ** 2 for ck in (a, b)]
    diffs = [float(errors[1][i] - errors[0][i]) for i in range(300)]
    mean = sum(diffs) / 300
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 299)
    assert gap["gap_ci"] == pytest.approx(1.96 * sd / math.sqrt(300), rel=1e-9)
    assert paired_gap(a, a, n=50)["gap"] == 0.0
    other = train(KernelTask(d_x=D, kernel="linear", layout="paired"), a.spec, cfg, progress=False)
    with pytest.raises(ValueError, match="same task"):
        paired_gap(a, other, n=50)
