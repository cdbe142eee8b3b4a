"""Attribution: direct logit attribution, ablation, head types and attribution patching, each against its exact
counterpart (TransformerLens, a brute-force loop or exact patching) on hand-built and briefly trained models.

Over 400 lines on purpose: the four methods share the hand-built models and the trained one defined here.
"""
import dataclasses
import json

import pandas as pd
import pytest
import torch
from transformer_lens import patching as tlp

from interp.spec import ModelSpec
from interp.tasks import Batch, LinearTask, ModularTask
from interp.train import TrainConfig, train
from probes.attribution import ablate_heads, attribute, decompose_output, direct_attribution
from probes.attribution_patching import attribution_patch, attribution_patching, correlation
from probes.head_types import HEAD_TYPES, head_types
from probes.metrics import Answers, error_metric, logit_diff
from interp.results import Result

MODULAR = ModularTask(p=7)
LINEAR = LinearTask(d_x=3)
sq_err = error_metric(LINEAR.error_scale)  # the default regression metric, squared error / d
K = 4  # in-context examples: 11 positions (modular), 8 (linear)



def build(task, **knobs):
    return ModelSpec.for_task(task, K, n_layers=2, n_heads=2, d_model=16, **knobs).build().eval()


def jiggle(model):
    """Norm weights and biases start at exactly 1 and 0; move them so that dropping one would show."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1] in ("w", "b", "b_O", "b_U", "b_in", "b_out", "b_Q", "b_K", "b_V", "bias"):
                param.add_(0.3 * torch.randn(param.shape, generator=g))
    return model


def batches(task, n=12, seed=0, kind="params"):
    g = torch.Generator().manual_seed(seed)
    clean = task.sample(n, K, g)
    return clean, task.corrupt(clean, kind, g)


def tl_metric(fn, clean, answers):
    """TransformerLens patching metric: model output -> scalar mean of our per-example metric."""
    return lambda out: fn(out[:, clean.query_pos], answers).mean()


# ------------------------------------------------------------------------------------------- direct attribution


@pytest.mark.parametrize("norm", ["none", "LN", "RMS", "LNPre"])
@pytest.mark.parametrize("metric", ["logit", "logit_diff"])
def test_direct_effects_add_up_to_the_output(norm, metric):
    model = jiggle(build(MODULAR, normalization=norm))
    clean, corrupted = batches(MODULAR)
    res = decompose_output(model, MODULAR, clean, corrupted, metric)
    q = clean.query_pos
    with torch.no_grad():
        logits = model(clean.inputs)[:, q]
    want = logits.gather(-1, clean.targets[:, q, None])[:, 0]
    if metric == "logit_diff":
        want = want - logits.gather(-1, corrupted.targets[:, q, None])[:, 0]
    # without a norm the decomposition is exact; with one it holds with the cached final scale (frozen LN)
    atol = 1e-5 if norm == "none" else 1e-4
    torch.testing.assert_close(res.per_example.sum(-1), want, atol=atol, rtol=0)
    torch.testing.assert_close(res.extras["output"], want, atol=1e-6, rtol=0)
    labels = res.labels["component"]
    assert sum(lab.startswith("L") and "H" in lab for lab in labels) == 4 and "L1 mlp" in labels

    # heads + attention bias of a layer = that layer's attn_out (as the model computed it) through TL's own
    # decompose_resid with apply_ln, dotted with the read-out direction
    _, cache = model.run_with_cache(clean.inputs)
    stack, tl_labels = cache.decompose_resid(apply_ln=True, pos_slice=q, return_labels=True)
    W = model.W_U if not hasattr(model, "ln_final") or not hasattr(model.ln_final, "w") else model.W_U * model.ln_final.w[:, None]
    direction = W.T[clean.targets[:, q]]
    if metric == "logit_diff":
        direction = direction - W.T[corrupted.targets[:, q]]
    tl_fx = torch.einsum("cbd,bd->bc", stack, direction)
    for layer in range(2):
        ours = sum(res.per_example[:, labels.index(lab)] for lab in (f"L{layer}H0", f"L{layer}H1", f"L{layer} attn bias"))
        torch.testing.assert_close(ours, tl_fx[:, tl_labels.index(f"{layer}_attn_out")], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.per_example[:, labels.index(f"L{layer} mlp")],
                                   tl_fx[:, tl_labels.index(f"{layer}_mlp_out")], atol=1e-5, rtol=1e-4)


def test_direct_attribution_heads_and_regression_prediction():
    model = jiggle(build(LINEAR, normalization="LN"))
    clean, _ = batches(LINEAR)
    full = decompose_output(model, LINEAR, clean)
    with torch.no_grad():
        pred = model(clean.inputs)[:, clean.query_pos, 0]
    torch.testing.assert_close(full.per_example.sum(-1), pred, atol=1e-4, rtol=0)
    heads = direct_attribution(model, LINEAR, clean)
    assert heads.axes == ("layer", "head") and heads.per_example.shape == (12, 2, 2)
    assert heads.labels == {"layer": ["L0", "L1"], "head": ["H0", "H1"]}
    torch.testing.assert_close(heads.per_example[:, 1, 0], full.per_example[:, full.labels["component"].index("L1H0")])
    assert heads.metadata["metric"] == "prediction" and heads.metadata["n_sequences"] == 12
    # signed_error only moves the constant term
    signed = decompose_output(model, LINEAR, clean, metric="signed_error")
    torch.testing.assert_close(signed.per_example[:, :-1], full.per_example[:, :-1])
    torch.testing.assert_close(signed.per_example.sum(-1), pred - clean.targets[:, clean.query_pos, 0], atol=1e-4, rtol=0)


def test_direct_effects_without_a_final_norm_add_up_exactly():
    """final_norm=False (the blocks keep LN): the read-out is linear in the residual, so nothing is normalised and
    the direct effects sum to the prediction."""
    model = jiggle(build(LINEAR, normalization="LN", final_norm=False))
    assert not hasattr(model, "ln_final")
    clean, _ = batches(LINEAR)
    full = decompose_output(model, LINEAR, clean)
    with torch.no_grad():
        pred = model(clean.inputs)[:, clean.query_pos, 0]
    torch.testing.assert_close(full.per_example.sum(-1), pred, atol=1e-5, rtol=0)


def test_direct_attribution_rejects_nonlinear_metrics():
    clean, corrupted = batches(MODULAR)
    model = build(MODULAR)
    with pytest.raises(ValueError, match="not linear"):
        direct_attribution(model, MODULAR, clean, corrupted, "prob")
    with pytest.raises(ValueError, match="needs a corrupted batch"):
        direct_attribution(model, MODULAR, clean, None, "logit_diff")
    with pytest.raises(ValueError, match="does not apply"):
        direct_attribution(model, MODULAR, clean, corrupted, "squared_error_over_d")


# ------------------------------------------------------------------------------------------- ablation


def naive_ablation(model, clean, corrupted, kind, fn, answers):
    """One head at a time with run_with_hooks: [batch, layer, head] change in the metric."""
    q = clean.query_pos
    with torch.no_grad():
        base = fn(model(clean.inputs)[:, q], answers)
        source = corrupted.inputs if kind == "resample" and corrupted is not None else clean.inputs
        _, cache = model.run_with_cache(source)
    out = torch.zeros(clean.inputs.shape[0], 2, 2)
    for layer in range(2):
        z_src = cache[f"blocks.{layer}.attn.hook_z"]
        for head in range(2):
            def hook(z, hook, head=head, z_src=z_src):
                z = z.clone()
                if kind == "zero":
                    z[:, :, head] = 0.0
                elif kind == "mean":
                    z[:, :, head] = z_src[:, :, head].mean(0)
                else:
                    z[:, :, head] = z_src[:, :, head] if corrupted is not None else z_src[:, :, head].roll(1, 0)
                return z

            with torch.no_grad():
                patched = model.run_with_hooks(clean.inputs, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
            out[:, layer, head] = fn(patched[:, q], answers) - base
    return out


@pytest.mark.parametrize("kind,with_corrupted", [("zero", True), ("mean", True), ("resample", True), ("resample", False)])
def test_batched_ablation_matches_one_head_at_a_time(kind, with_corrupted):
    model = build(MODULAR)
    clean, corrupted = batches(MODULAR)
    corrupted = corrupted if with_corrupted else None
    # max_batch 30 fits 2 variants of 12 sequences: chunks of 2, 2 over the 4 heads
    res = ablate_heads(model, MODULAR, clean, corrupted, ablation=kind, max_batch=30)
    fn, name = (logit_diff, "logit_diff") if with_corrupted else (None, "logit")
    answers = Answers.of(clean, corrupted if with_corrupted else clean)
    fn = fn or (lambda out, a: out.gather(-1, a.clean[:, None])[:, 0])
    want = naive_ablation(model, clean, corrupted, kind, fn, answers)
    torch.testing.assert_close(res.per_example, want, atol=1e-5, rtol=1e-4)
    assert want.abs().max() > 1e-3  # the check is not vacuous
    assert res.metadata["ablation"] == kind and res.metadata["metric"] == name


def test_ablation_regression_in_one_chunk_equals_many():
    model = build(LINEAR)
    clean, corrupted = batches(LINEAR, kind="query")
    one = ablate_heads(model, LINEAR, clean, corrupted, ablation="mean")
    many = ablate_heads(model, LINEAR, clean, corrupted, ablation="mean", max_batch=1)
    torch.testing.assert_close(one.per_example, many.per_example, atol=1e-5, rtol=1e-4)
    want = naive_ablation(model, clean, corrupted, "mean", sq_err, Answers.of(clean, corrupted))
    torch.testing.assert_close(one.per_example, want, atol=1e-5, rtol=1e-4)
    assert one.metadata["metric"] == "squared_error_over_d"


# ------------------------------------------------------------------------------------------- attribution patching


def exact_and_estimate(model, clean, corrupted):
    res = attribution_patching(model, MODULAR, clean, corrupted, "logit_diff")
    metric = tl_metric(logit_diff, clean, Answers.of(clean, corrupted))
    _, clean_cache = model.run_with_cache(clean.inputs)
    with torch.no_grad():
        base = metric(model(corrupted.inputs)).item()
    assert res.head.metadata["metric_corrupted"] == pytest.approx(base, abs=1e-5)
    return res, metric, clean_cache, base


def test_attribution_patching_is_exact_where_the_output_is_linear():
    # without a norm the logit difference is linear in the last MLP's output and, in an attention-only model,
    # in the last layer's hook_z: there the gradient estimate must equal exact patching
    clean, corrupted = batches(MODULAR)
    model = build(MODULAR, normalization="none", attn_only=True)
    res, metric, clean_cache, base = exact_and_estimate(model, clean, corrupted)
    assert res.mlp is None and "mlp" not in res.results()
    heads = tlp.get_act_patch_attn_head_out_all_pos(model, corrupted.inputs, clean_cache, metric) - base
    torch.testing.assert_close(res.head.scores[1], heads[1], atol=1e-5, rtol=1e-4)
    by_pos = tlp.get_act_patch_attn_head_out_by_pos(model, corrupted.inputs, clean_cache, metric) - base  # [l, p, h]
    torch.testing.assert_close(res.head_pos.scores[1], by_pos[1].T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.head.scores, res.head_pos.scores.sum(-1))
    assert heads[1].abs().max() > 1e-3

    model = build(MODULAR, normalization="none")
    res, metric, clean_cache, base = exact_and_estimate(model, clean, corrupted)
    mlp = tlp.get_act_patch_mlp_out(model, corrupted.inputs, clean_cache, metric) - base  # [l, p]
    torch.testing.assert_close(res.mlp_pos.scores[1], mlp[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.mlp.scores, res.mlp_pos.scores.sum(-1))
    assert mlp[1].abs().max() > 1e-3
    assert res.resid_pre.axes == ("layer", "pos") and res.resid_pre.labels["pos"][:3] == ["x0", "y0", "z0"]


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_patching_takes_the_gradient_on_the_patched_run(direction):
    # attention-only, no norm: the prediction is linear in the last layer's hook_z, so squared error / d is quadratic
    # in it and exact patching = estimate + (change in prediction)^2 / d exactly when the gradient is taken on the run being
    # patched (the corrupted run when denoising); taken on the other run the square would enter with a minus
    model = build(LINEAR, normalization="none", attn_only=True)
    with torch.no_grad():
        model.blocks[1].attn.W_O.mul_(10.0)  # a large change in prediction, so the square stands out
    clean, corrupted = batches(LINEAR, kind="params")
    est = attribution_patching(model, LINEAR, clean, corrupted, "squared_error_over_d", direction=direction).head
    shift = attribution_patching(model, LINEAR, clean, corrupted, "prediction", direction=direction).head
    source, target = (clean, corrupted) if direction == "denoise" else (corrupted, clean)
    answers, q = Answers.of(clean, corrupted), clean.query_pos
    _, source_cache = model.run_with_cache(source.inputs)
    with torch.no_grad():
        base = sq_err(model(target.inputs)[:, q], answers)
        for head in range(2):
            def hook(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = source_cache["blocks.1.attn.hook_z"][:, :, head]
                return z

            out = model.run_with_hooks(target.inputs, fwd_hooks=[("blocks.1.attn.hook_z", hook)])
            exact = sq_err(out[:, q], answers) - base
            square = shift.per_example[:, 1, head] ** 2 / LINEAR.error_scale
            torch.testing.assert_close(exact, est.per_example[:, 1, head] + square, atol=1e-4, rtol=1e-4)
            assert square.mean() > 1e-2


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_patching_is_first_order_for_small_corruptions(direction):
    # with LN and softmax nothing is linear, but for a tiny corruption every site's estimate must match exact
    # patching to first order: this checks the gradients at every layer, through the norms
    model = build(LINEAR, normalization="LN")
    clean, _ = batches(LINEAR)
    noise = torch.randn(clean.inputs.shape, generator=torch.Generator().manual_seed(5))
    corrupted = dataclasses.replace(clean, inputs=clean.inputs + 1e-2 * noise)
    res = attribution_patching(model, LINEAR, clean, corrupted, "squared_error_over_d", direction=direction)
    source, target = (clean, corrupted) if direction == "denoise" else (corrupted, clean)
    metric = tl_metric(sq_err, clean, Answers.of(clean, corrupted))
    _, source_cache = model.run_with_cache(source.inputs)
    with torch.no_grad():
        base = metric(model(target.inputs)).item()
    heads = tlp.get_act_patch_attn_head_out_all_pos(model, target.inputs, source_cache, metric) - base
    n_pos = clean.inputs.shape[1]
    index = pd.DataFrame([(l, p) for l in range(2) for p in range(n_pos)], columns=["layer", "pos"])
    resid = tlp.generic_activation_patch(model, target.inputs, source_cache, metric, tlp.layer_pos_patch_setter,
                                         "resid_pre", index_df=index).reshape(2, n_pos) - base
    for ours, exact in ((res.head.scores, heads), (res.resid_pre.scores, resid)):
        scale = exact.abs().max()
        assert scale > 1e-6
        torch.testing.assert_close(ours, exact, atol=0.05 * scale.item(), rtol=0)


@pytest.fixture(scope="module")
def trained():
    spec = ModelSpec.for_task(MODULAR, 6, n_layers=2, n_heads=4, d_model=32)
    cfg = TrainConfig(steps=30, batch_size=64, n_examples=6, lr=3e-3, warmup_steps=5, eval_every=30, eval_size=64)
    return train(MODULAR, spec, cfg, progress=False).model


def test_attribution_patching_correlates_with_exact_patching_on_a_trained_model(trained):
    g = torch.Generator().manual_seed(1)
    clean = MODULAR.sample(64, 6, g)
    corrupted = MODULAR.corrupt(clean, "params", g)
    approx = attribute(trained, MODULAR, clean, corrupted, method="attrib")
    metric = tl_metric(logit_diff, clean, Answers.of(clean, corrupted))
    _, clean_cache = trained.run_with_cache(clean.inputs)
    exact = tlp.get_act_patch_attn_head_out_all_pos(trained, corrupted.inputs, clean_cache, metric)
    r = correlation(approx, exact)
    assert r["n"] == 8 and r["pearson"] > 0.5 and r["spearman"] > 0.5
    # the offset (metric on the corrupted run) does not change a correlation, but the scale of the estimate
    # must be the patching effect's
    effect = exact - approx.metadata["metric_corrupted"]
    assert (approx.scores - effect).abs().max() < 0.5 * effect.abs().max()


def test_correlation_helper():
    x = torch.tensor([[1.0, 2.0], [3.0, 10.0]])
    assert correlation(x, x)["pearson"] == pytest.approx(1.0)
    assert correlation(x, -x)["spearman"] == pytest.approx(-1.0)
    r = correlation(x, x.exp())  # monotone but not linear
    assert r["spearman"] == pytest.approx(1.0) and r["pearson"] < 0.99
    res = Result("t", x, ("layer", "head"))
    assert correlation(res, x)["n"] == 4
    with pytest.raises(ValueError, match="shapes must match"):
        correlation(x, torch.ones(3))


# ------------------------------------------------------------------------------------------- head types


def hand_built_patterns(clean):
    """Layer 0: head 0 previous token, head 1 own example's x. Layer 1: head 0 token 0, head 1 the latest earlier
    key with the same token value. Each falls back to the query itself where its key does not exist."""
    n, p = clean.inputs.shape
    eye = torch.eye(p)
    prev = torch.zeros(p, p)
    own_x = torch.zeros(p, p)
    for q in range(p):
        prev[q, max(q - 1, 0)] = 1.0
        own_x[q, 3 * (q // 3) if q % 3 else q] = 1.0  # x of example i sits at 3i; an x query attends to itself
    first = torch.zeros(p, p)
    first[:, 0] = 1.0
    same = eye.repeat(n, 1, 1)
    for b in range(n):
        for q in range(p):
            earlier = [k for k in range(q) if clean.inputs[b, k] == clean.inputs[b, q]]
            if earlier:
                same[b, q] = 0.0
                same[b, q, earlier[-1]] = 1.0
    return {0: torch.stack([prev, own_x]).expand(n, 2, p, p), 1: torch.stack([first.expand(n, p, p), same], dim=1)}


def test_head_types_score_hand_built_patterns():
    model = build(MODULAR)
    clean, _ = batches(MODULAR, n=16)
    patterns = hand_built_patterns(clean)
    hooks = [(f"blocks.{l}.attn.hook_pattern", lambda pat, hook, l=l: patterns[l].to(pat.dtype)) for l in patterns]
    with model.hooks(fwd_hooks=hooks):
        res = head_types(model, MODULAR, clean)
        at_y = attribute(model, MODULAR, clean, method="head_types", queries="y")
    t = {name: i for i, name in enumerate(HEAD_TYPES)}
    s = res.scores
    assert res.axes == ("layer", "head", "type") and res.labels["type"] == list(HEAD_TYPES)
    assert s[0, 0, t["prev_token"]] == pytest.approx(1.0)
    assert s[0, 0, t["same_role"]] == pytest.approx(0.0)  # the previous token always has another role
    assert s[0, 0, t["own_y"]] == pytest.approx(1.0)  # own y is only earlier at z positions, one back
    assert s[0, 1, t["own_x"]] == pytest.approx(1.0)
    assert s[0, 1, t["prev_token"]] == pytest.approx(4 / 10)  # own x is one back at the 4 y positions of 1..10
    assert s[0, 1, t["earlier_x"]] == pytest.approx(0.0)
    assert s[1, 0, t["first_token"]] == pytest.approx(1.0)
    assert s[1, 0, t["self"]] == pytest.approx(1 / 11)  # only position 0 attends to itself
    assert s[1, 1, t["same_token"]] == pytest.approx(1.0)
    assert at_y.scores[0, 1, t["prev_token"]] == pytest.approx(1.0)  # at y queries own x is the previous token
    assert at_y.metadata["queries"] == "y"


def test_head_types_on_a_real_softmax_model_are_shares():
    model = build(LINEAR)
    clean, _ = batches(LINEAR)
    res = head_types(model, LINEAR, clean)
    finite = res.scores[~res.scores.isnan()]
    assert ((finite >= 0) & (finite <= 1 + 1e-6)).all()
    t = {name: i for i, name in enumerate(HEAD_TYPES)}
    assert torch.isnan(res.scores[..., t["same_token"]]).all()  # no two real-valued tokens are equal
    with pytest.raises(ValueError, match="queries"):
        head_types(model, LINEAR, clean, queries="z")


def test_head_types_accept_a_bare_query_label(gen):
    from interp.spec import ModelSpec
    from interp.tasks import ComplexZerosTask

    task = ComplexZerosTask()
    clean = task.sample(4, 5, gen())
    assert clean.pos_labels[-1] == "query"
    res = head_types(ModelSpec.for_task(task, 5, n_layers=1, n_heads=2, d_model=16).build(), task, clean)
    t = {name: i for i, name in enumerate(HEAD_TYPES)}
    # the query is an example of its own: nothing earlier is its own x or y, and the last x0..x4 are earlier x's
    assert res.scores.shape == (1, 2, len(HEAD_TYPES)) and not torch.isnan(res.scores[..., t["earlier_x"]]).any()


# ------------------------------------------------------------------------------------------- front end


def test_attribute_front_end_and_errors():
    model = build(MODULAR)
    clean, corrupted = batches(MODULAR)
    for method, axes in (("dla", ("layer", "head")), ("ablate", ("layer", "head")), ("attrib", ("layer", "head"))):
        res = attribute(model, MODULAR, clean, corrupted, method=method)
        assert res.axes == axes and res.metadata["method"] == method and res.metadata["metric"] == "logit_diff"
        assert res.metadata["n_examples"] == K and res.metadata["n_sequences"] == 12
        again = Result.from_json(res.to_json())
        assert torch.equal(again.scores, res.scores) and json.loads(res.to_json())["metadata"]["method"] == method
    assert attribute(model, MODULAR, clean, method="dla").metadata["metric"] == "logit"
    assert attribute(model, MODULAR, clean, corrupted, method="attrib", site="resid_pre").axes == ("layer", "pos")
    res = attribute(model, MODULAR, clean, corrupted, method="attrib", site="head_pos")
    assert res.axes == ("layer", "head", "pos") and res.labels["pos"][-1] == "y3"
    assert attribute(model, MODULAR, clean, method="ablate", ablation="zero").metadata["ablation"] == "zero"

    bad = [
        (dict(method="saliency"), "method"),
        (dict(method="ablate", ablation="noise"), "ablation"),
        (dict(method="attrib", site="embed"), "site"),
        (dict(method="attrib", direction="sideways"), "direction"),
        (dict(method="ablate", metric="squared_error_over_d"), "metric"),
        (dict(method="dla", metric=lambda out, answers: out.sum(-1)), "metric"),
    ]
    for kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            attribute(model, MODULAR, clean, corrupted, **kwargs)
    with pytest.raises(ValueError, match="corrupted"):
        attribute(model, MODULAR, clean, method="attrib")
    with pytest.raises(ValueError, match="corrupted inputs"):
        attribute(model, MODULAR, clean, batches(MODULAR, n=5)[1], method="ablate")
    with pytest.raises(ValueError, match="attention-only"):
        attribution_patch(build(MODULAR, attn_only=True), MODULAR, clean, corrupted, site="mlp")
    long = MODULAR.sample(2, K + 1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="n_ctx"):
        attribute(model, MODULAR, long, method="dla")
    with pytest.raises(ValueError, match="classification"):
        attribute(model, MODULAR, batches(LINEAR)[0], method="dla")
    assert isinstance(clean, Batch)
