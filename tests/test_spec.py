import math

import pytest
import torch
from transformer_lens import ActivationCache, HookedTransformer

from interp.scoring import EXP_CAP
from interp.spec import ModelSpec, RegressionTransformer
from interp.tasks import KernelTask, LinearTask, ModularTask

VARIANTS = [
    {},
    {"attn_only": True},
    {"normalization": "none"},
    {"normalization": "LNPre"},
    {"normalization": "RMS"},
    {"positional": "rotary"},
    {"positional": "none"},
    {"scoring": "relu"},
    {"scoring": "linear"},
    {"scoring": "exp"},
]
TASKS = [LinearTask(d_x=3), ModularTask(p=7, n_tasks=20)]


def tiny(task, **knobs):
    return ModelSpec.for_task(task, 4, n_layers=2, n_heads=2, d_model=16, **knobs).build()


@pytest.mark.parametrize("knobs", VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_standard_hooks_and_identity_hooks(task, knobs, gen):
    model = tiny(task, **knobs)
    assert isinstance(model, HookedTransformer if task.name == "modular" else RegressionTransformer)
    batch = task.sample(3, 4, gen())
    out, cache = model.run_with_cache(batch.inputs)
    assert isinstance(cache, ActivationCache)
    names = set(cache.keys())
    for layer in range(2):
        for hook in ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z",
                     "attn.hook_attn_scores", "attn.hook_pattern", "hook_attn_out", "hook_resid_post"):
            assert f"blocks.{layer}.{hook}" in names
        assert (f"blocks.{layer}.hook_mlp_out" in names) != knobs.get("attn_only", False)
        has_ln = knobs.get("normalization", "LN") != "none"
        assert (f"blocks.{layer}.ln1.hook_scale" in names) == has_ln
    assert "hook_embed" in names
    # caching then hooking every point with the identity changes nothing
    again = model.run_with_hooks(batch.inputs, fwd_hooks=[(lambda name: True, lambda act, hook: act)])
    assert torch.equal(out, again)
    assert torch.equal(out, model(batch.inputs))
    # the residual stream the cache reports adds up to what the read-out sees
    final = cache["blocks.1.hook_resid_post"]
    assert torch.equal(model(final, start_at_layer=2), out) if isinstance(model, RegressionTransformer) else True
    # the pattern really weighs the values: z = pattern @ v
    pattern, v = cache["blocks.0.attn.hook_pattern"], cache["blocks.0.attn.hook_v"]
    z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    assert torch.allclose(z, cache["blocks.0.attn.hook_z"], atol=1e-5)


def test_start_and_stop_at_layer_match_full_run(gen):
    task = LinearTask(d_x=3)
    model = tiny(task)
    batch = task.sample(3, 4, gen())
    out, cache = model.run_with_cache(batch.inputs)
    assert torch.allclose(model(batch.inputs, stop_at_layer=1), cache["blocks.1.hook_resid_pre"])
    assert torch.allclose(model(cache["blocks.1.hook_resid_pre"], start_at_layer=1), out)


@pytest.mark.parametrize("scoring", ["relu", "linear", "exp"])
def test_nonsoftmax_pattern_matches_hand_computation(scoring, gen):
    """pattern[q, k] = h(q·k / sqrt(d_head)) / (q + 1) for k <= q, else 0, computed from the raw weights."""
    task = LinearTask(d_x=2)
    model = ModelSpec.for_task(task, 3, n_layers=1, n_heads=1, d_model=4, normalization="none", scoring=scoring).build()
    batch = task.sample(2, 3, gen())
    _, cache = model.run_with_cache(batch.inputs)
    resid = cache["blocks.0.hook_resid_pre"]
    attn = model.blocks[0].attn
    q = torch.einsum("bpm,hmd->bphd", resid, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpm,hmd->bphd", resid, attn.W_K) + attn.b_K
    n = resid.shape[1]
    h = {"relu": torch.relu, "linear": lambda s: s, "exp": torch.exp}[scoring]
    expected = torch.zeros(2, 1, n, n)
    for qi in range(n):
        for ki in range(qi + 1):
            s = (q[:, qi, 0] * k[:, ki, 0]).sum(-1) / math.sqrt(4)
            expected[:, 0, qi, ki] = h(s) / (qi + 1)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"], expected, atol=1e-5)


def test_exp_scoring_caps_runaway_scores(gen):
    """exp scoring is exp(min(s, EXP_CAP)) / n_keys: a score of 1e4 (exp overflows float32 past ~88) gives a
    finite weight e^EXP_CAP / n_keys, a score of 1 still exactly e / n_keys, and masked keys stay at 0."""
    task = LinearTask(d_x=2)
    model = ModelSpec.for_task(task, 3, n_layers=1, n_heads=1, d_model=4, normalization="none", scoring="exp").build()
    batch = task.sample(2, 3, gen())
    n = batch.inputs.shape[1]
    big = lambda s, hook: torch.where(torch.isfinite(s), torch.full_like(s, 1e4), s)  # noqa: E731
    one = lambda s, hook: torch.where(torch.isfinite(s), torch.ones_like(s), s)  # noqa: E731
    causal = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    for hook, weight in ((big, math.exp(EXP_CAP)), (one, math.e)):
        seen = {}
        out = model.run_with_hooks(batch.inputs, fwd_hooks=[
            ("blocks.0.attn.hook_attn_scores", hook), ("blocks.0.attn.hook_pattern", lambda p, hook: seen.setdefault("p", p))])
        assert torch.isfinite(out).all()
        assert torch.allclose(seen["p"][0, 0], weight * causal, rtol=1e-5)


def test_patching_scores_moves_nonsoftmax_pattern(gen):
    """A user hook on hook_attn_scores must change the pattern the relu scoring computes."""
    task = LinearTask(d_x=2)
    model = ModelSpec.for_task(task, 3, n_layers=1, n_heads=1, d_model=4, scoring="relu").build()
    batch = task.sample(2, 3, gen())
    seen = {}
    hooks = [("blocks.0.attn.hook_attn_scores", lambda s, hook: torch.where(torch.isfinite(s), torch.ones_like(s), s)),
             ("blocks.0.attn.hook_pattern", lambda p, hook: seen.setdefault("p", p))]
    model.run_with_hooks(batch.inputs, fwd_hooks=hooks)
    n = batch.inputs.shape[1]
    expected = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    assert torch.allclose(seen["p"][0, 0], expected)
    # and the permanent hook survives reset_hooks()
    model.reset_hooks()
    _, cache = model.run_with_cache(batch.inputs)
    assert not torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(2, 1, n))


@pytest.mark.parametrize("scoring", ["softmax", "relu", "linear", "exp"])
def test_context_mask_is_chengs_layer(scoring, gen):
    """mask="context": Z <- Z + P Z h(Zᵀ Qᵀ K Z) M / N with M dropping the query column (softmax: over the N
    context keys), checked against the layer written out from the raw weights."""
    task = KernelTask(d_x=3, layout="paired")
    n_context = 5
    model = ModelSpec.for_task(task, n_context, n_layers=1, n_heads=1, d_model=4, attn_only=True, normalization="none",
                               positional="none", scoring=scoring, mask="context").build()
    batch = task.sample(2, n_context, gen())
    out = model(batch.inputs)
    attn = model.blocks[0].attn
    resid = model.embed(batch.inputs)
    q = resid @ attn.W_Q[0] + attn.b_Q[0]
    k = resid @ attn.W_K[0] + attn.b_K[0]
    v = resid @ attn.W_V[0] + attn.b_V[0]
    scores = (q @ k.transpose(-1, -2) / math.sqrt(4))[..., :n_context]  # the query is no key
    weights = scores.softmax(-1) if scoring == "softmax" else {"relu": torch.relu, "linear": lambda s: s, "exp": torch.exp}[scoring](scores) / n_context
    expected = model.unembed(resid + weights @ v[:, :n_context] @ attn.W_O[0] + attn.b_O)
    assert torch.allclose(out, expected, atol=1e-5)
    # so changing the query token moves no context position
    changed = batch.inputs.clone()
    changed[:, -1, :3] += 1.0
    moved = model(changed)
    assert torch.allclose(moved[:, :-1], out[:, :-1], atol=1e-6) and not torch.allclose(moved[:, -1], out[:, -1])


@pytest.mark.parametrize("scoring", ["softmax", "relu", "linear", "exp"])
def test_context_mask_layer_can_be_one_step_of_functional_gradient_descent(scoring, gen):
    """Cheng et al.'s construction by hand: Q = K on x, P on y. From f = 0 one step of functional GD in the
    RKHS of h gives f(x_q) = η/N Σ_i h(<x_i, x_q>) y_i (softmax: Σ_i softmax_i(<x_i, x_q>) y_i)."""
    task = KernelTask(d_x=3, kernel="exp", layout="paired")
    model = ModelSpec.for_task(task, 6, n_layers=1, n_heads=1, d_model=4, attn_only=True, normalization="none",
                               positional="none", scoring=scoring, mask="context").build()
    eta, x_part, y_part = 0.7, torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0])), torch.diag(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    attn = model.blocks[0].attn
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.linear.weight.copy_(torch.eye(4))
        attn.W_Q[0].copy_(x_part * math.sqrt(2.0))  # TransformerLens divides scores by sqrt(d_head) = 2
        attn.W_K[0].copy_(x_part * math.sqrt(2.0))
        attn.W_V[0].copy_(y_part)
        attn.W_O[0].copy_(eta * y_part)
        model.unembed.linear.weight.copy_(y_part[3:])
    batch = task.sample(5, 6, gen())
    x, y = batch.examples, batch.inputs[:, :-1, 3]
    gram = torch.einsum("bid,bd->bi", x[:, :-1], x[:, -1])
    h = {"relu": torch.relu, "linear": lambda g: g, "exp": torch.exp}
    step = gram.softmax(-1) * eta if scoring == "softmax" else h[scoring](gram) * eta / 6
    assert torch.allclose(model(batch.inputs)[:, -1, 0], (step * y).sum(-1), atol=1e-5)


def test_context_mask_needs_the_paired_layout():
    with pytest.raises(ValueError, match="paired"):
        ModelSpec.for_task(KernelTask(), 4, mask="context")
    with pytest.raises(ValueError, match="mask"):
        ModelSpec(d_in=3, mask="sideways")


def test_spec_validation():
    with pytest.raises(ValueError, match="scoring"):
        ModelSpec(d_in=3, scoring="tanh")
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec(d_in=3, d_vocab=5)
    with pytest.raises(ValueError, match="divisible"):
        ModelSpec(d_in=3, d_model=10, n_heads=3)


def test_build_is_seeded():
    spec = ModelSpec(d_in=3, seed=7)
    a, b = spec.build().state_dict(), spec.build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
