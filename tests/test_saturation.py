"""Saturation: hand-built models whose boundary value is known in closed form, plus one cheap trained pair."""
import math

import pytest
import torch

from interp.spec import ModelSpec
from interp.tasks import KernelTask, LinearTask, ModularTask, PolynomialTask
from interp.train import TrainConfig, train
from interp.results import Result
from probes.saturation import (BOUNDARY_KEYS, compare_boundaries, default_field, saturation, saturation_figure,
                               saturation_panel)

V, BETA, K = 3.0, 2 / 3, 8


def softmax_head(scoring: str = "softmax"):
    """One head, no norm, no MLP: pred(query) = Σ_k p_k · V(2·flag_k − 1) with p = softmax(β·val_k + δ·flag_k).

    Every value is ±V, so a softmax head can never output beyond V, and as |y| grows the weight goes all to the
    y tokens (y ≫ 0) or all to the x tokens (y ≪ 0): B = V exactly, reached from below. Other scorings weigh
    the same values without normalising, so nothing bounds them."""
    spec = ModelSpec(n_layers=1, n_heads=1, d_model=2, attn_only=True, normalization="none", positional="none",
                     scoring=scoring, d_in=2, d_out=1, n_ctx=2 * K)
    model = spec.build()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.linear.weight.copy_(torch.eye(2))  # resid = (val, flag)
        attn = model.blocks[0].attn
        attn.b_Q[0, 0] = BETA * math.sqrt(2)  # constant query; TransformerLens divides scores by √d_head
        attn.W_K[0, 0, 0] = 1.0  # key = val ...
        attn.W_K[0, 1, 0] = math.log(K * math.sinh(BETA) / BETA / (K - 1)) / BETA  # ... + δ·flag: x and y mass balance at y = 0
        attn.W_V[0, 1, 0], attn.b_V[0, 0] = 2 * V, -V  # value = V(2·flag − 1) = ±V
        attn.W_O[0, 0, 1] = 1.0  # written to channel 1, which is 0 in the query's own (x) token
        model.unembed.linear.weight[0, 1] = 1.0
    return model


def ln_readout(normalization: str = "LN", k: int = 6):
    """Attention that writes nothing, so the final LN alone shapes the output: resid(query) = (x, −x, 1, −1) gives
    LN = (x, −x, 1, −1)/√((x² + 1)/2 + ε) and pred = (1/√2)(LN₀ − LN₁) = 2x/√(x² + 1 + 2ε): B = 2, and 2 is also
    √d_model·‖P(γ⊙W_U)‖ = 2·‖(1/√2, −1/√2, 0, 0)‖, the supremum the final norm allows."""
    spec = ModelSpec(n_layers=1, n_heads=1, d_model=4, attn_only=True, normalization="LN", positional="none",
                     d_in=2, d_out=1, n_ctx=2 * k)
    model = spec.build()
    with torch.no_grad():
        for block in model.blocks:
            for name, p in block.attn.named_parameters():
                p.zero_()  # zero scores (uniform attention) and zero output
        model.embed.linear.weight.zero_()
        model.embed.linear.weight[:, 0] = torch.tensor([1.0, -1.0, 0.0, 0.0])
        model.embed.linear.bias.copy_(torch.tensor([0.0, 0.0, 1.0, -1.0]))
        model.unembed.linear.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0]]) / math.sqrt(2))
        model.unembed.linear.bias.zero_()
    if normalization == "LN":
        return model
    bare = ModelSpec(**{**spec.to_dict(), "normalization": normalization}).build()
    bare.load_state_dict(model.state_dict(), strict=False)  # same weights, the norms left out
    return bare


def test_softmax_head_plateaus_at_its_largest_value(gen):
    task = PolynomialTask(degrees=(0,))  # y = c0 ~ N(0, 1) at every example: the head averages bounded copies of it
    r = saturation(softmax_head(), task, field="coef", generator=gen(0))
    md = r.metadata
    assert md["field"] == "coef_scale" and r.axes == ("scale",) and r.scores.shape == (13,)
    assert abs(md["boundary_plus"] - V) < 1e-3 * V and abs(md["boundary_minus"] + V) < 1e-3 * V
    assert r.extras["prediction"].abs().max() <= V * (1 + 1e-6)  # never beyond the largest value
    assert md["saturated"] and abs(md["fallback_plus"]) < 0.05 and abs(md["fallback_minus"]) < 0.05
    # [R−, R+] is the central 99% of N(0, 1), ±2.576; the plateau sits just above it
    assert abs(md["range_plus"] - 2.576) < 0.15 and abs(md["range_minus"] + 2.576) < 0.15
    # the plateau is approached from below as |y| grows, so the highest median sits at the largest targets
    assert md["boundary_plus"] <= V and md["turn_plus"] == r.extras["bin_target"][-1].item()
    assert md["boundary_minus"] >= -V and md["turn_minus"] == r.extras["bin_target"][0].item()
    assert r.extras["relative_error"][r.ticks("scale").index("1")] < 0.25 < r.extras["relative_error"][-1]
    # the sweep scales one set of sequences: targets at scale s are exactly s x those at scale 1
    t = r.extras["target"]
    assert torch.allclose(t[-1], 16 * t[r.ticks("scale").index("1")], rtol=1e-5)
    # attention leaves the x tokens for the y tokens as y grows: mass on K-1 equal keys, entropy -> log(K-1)
    assert r.extras["entropy"][-1, 0, 0] < r.extras["entropy"][0, 0, 0]
    assert torch.allclose(r.extras["weight_sum"], torch.ones_like(r.extras["weight_sum"]), atol=1e-5)
    # score range at the query: the y keys' β·c against the x keys' β·x in [−β, β] (plus δ), E|c| = 16·√(2/π)
    beta_c = BETA * 16 * math.sqrt(2 / math.pi)
    assert beta_c - 0.5 < r.extras["score_range"][-1, 0, 0] < beta_c + 2 * BETA + 0.31 + 0.5


def test_final_layer_norm_bound_and_mechanism_records_are_exact(gen):
    task = LinearTask(d_x=1, x_dist="uniform")
    k = 6
    r = saturation(ln_readout(), task, field="input", n=2048, generator=gen(1))
    md, ex = r.metadata, r.extras
    assert md["field"] == "x_scale"
    (lo, hi), = md["ln_final_bound"]
    assert lo == pytest.approx(-2.0, abs=1e-6) and hi == pytest.approx(2.0, abs=1e-6)
    assert ex["prediction"].abs().max() <= 2.0 and r.scores[-1] > 1.98  # |pred| = 2|x|/√(x² + 1) rises to the bound
    assert ex["prediction"].abs().max() <= 2.0
    # the query is x_{k-1} at position 2k-2: 2k-1 keys, all scores 0, uniform weights
    n_keys = 2 * k - 1
    assert torch.allclose(ex["entropy"], torch.full_like(ex["entropy"], math.log(n_keys)), atol=1e-6)
    assert torch.allclose(ex["max_weight"], torch.full_like(ex["max_weight"], 1 / n_keys), atol=1e-6)
    assert torch.all(ex["score_range"] == 0)
    # LN scale at the query: ln1 and ln_final see the same residual, √((x² + 1)/2 + ε), x ~ U[-s, s]
    assert md["extra_labels"]["site"] == ["L0.ln1", "ln_final"]
    assert torch.allclose(ex["ln_scale"][:, 0], ex["ln_scale"][:, 1])
    for j, s in enumerate(float(t) for t in r.ticks("scale")):
        expected = (s / 2 * math.sqrt(s * s + 1) + math.asinh(s) / 2) / (s * math.sqrt(2))  # E √((x²+1)/2)
        assert abs(ex["ln_scale"][j, 1].item() / expected - 1) < 0.05
    # ‖resid‖ = √(2x² + 2) = 2·LN scale (up to ε)
    assert torch.allclose(ex["resid_norm"][:, 0], 2 * ex["ln_scale"][:, 1], rtol=1e-4)


def test_compare_shows_which_removal_moves_the_plateau(gen):
    poly = PolynomialTask(degrees=(0,))
    scoring = compare_boundaries([(s, softmax_head(s)) for s in ("softmax", "linear", "relu")], poly, field="coef",
                                 n=128, generator=gen(2))
    assert scoring.axes == ("variant", "side") and scoring.ticks("variant") == ["softmax", "linear", "relu"]
    assert scoring.ticks("side") == ["B+", "B-"] and scoring.scores.shape == (3, 2)
    b = dict(zip(scoring.ticks("variant"), scoring.scores.tolist()))
    assert b["softmax"] == pytest.approx([V, -V], rel=1e-3)
    assert b["linear"][0] > 5 * V and b["relu"][0] > 5 * V  # unnormalised weights: the plateau is gone ...
    # ... for relu on the y > 0 side only: for y ≪ 0 the y keys score below 0 and drop out, the x keys stay bounded
    assert b["relu"][1] > -V and b["linear"][1] < -5 * V
    relu = scoring.ticks("variant").index("relu")
    assert scoring.extras["fallback"][relu, 0] > 0.5 and scoring.extras["fallback"][relu, 1] < 0.5
    assert scoring.metadata["saturated_plus"]["relu"] is False and scoring.metadata["saturated_minus"]["relu"] is True
    assert scoring.metadata["saturated"] == {"softmax": True, "linear": False, "relu": False}
    assert scoring.metadata["moves_plateau"] == {"softmax": False, "linear": True, "relu": True}
    assert scoring.extras["curve"].shape == (3, 13) and torch.all(scoring.extras["shift"][0] == 1.0)
    assert scoring.extras["bin_prediction"].shape == (3, len(scoring.extras["bin_target"]))

    norms = compare_boundaries({"LN": ln_readout(), "no LN": ln_readout("none")}, LinearTask(d_x=1, x_dist="uniform"),
                               field="input",
                               n=128, generator=gen(3))
    # this read-out follows the query's x, not y = w·x (B± are about y): the magnitude curves show the bound
    curve = norms.extras["curve"]
    assert curve[0].max() <= 2.0 and curve[1, -1] > 3 * curve[0, -1]  # without LN, |pred| = √2·|x| grows with x
    assert norms.metadata["ln_final_bound"]["no LN"] is None and norms.metadata["ln_final_bound"]["LN"] is not None


def known_predictor(b_plus: float, b_minus: float, s_plus: float = 0.0, s_minus: float = 0.0):
    """softmax_head's hooks with a prediction built to order: p = y inside [B−, B+] and B± − s±·(y − B±) beyond,
    y read from the first y token (a degree-0 task's target at every position). s = 0 is clip(y, B−, B+); s > 0
    falls back toward 0 with slope −s."""
    model = softmax_head()
    run = model.run_with_cache

    def run_with_cache(inputs, **kwargs):
        out, cache = run(inputs, **kwargs)
        y = inputs[:, 1:2, :1].expand_as(out)
        p = torch.where(y > b_plus, b_plus - s_plus * (y - b_plus), torch.where(y < b_minus, b_minus - s_minus * (y - b_minus), y))
        return p, cache

    model.run_with_cache = run_with_cache
    return model


CONSTANT = PolynomialTask(degrees=(0,))  # y = c0 ~ N(0, 1): [R−, R+] = ±2.576


@pytest.mark.parametrize("b_plus, b_minus, s_plus, s_minus", [(2.0, -1.5, 0.0, 0.0), (2.0, -1.5, 0.3, 0.6), (1.2, -2.2, 1.5, 0.1)])
def test_boundary_values_and_fall_back_come_out_as_built(gen, b_plus, b_minus, s_plus, s_minus):
    # groups of equal count are ~1/(bins · density) wide whatever n; 256 of them resolve the corner to ~0.1
    r = saturation(known_predictor(b_plus, b_minus, s_plus, s_minus), CONSTANT, n=1024, bins=256, generator=gen(6))
    md = r.metadata
    assert md["field"] == "coef_scale" and md["range_minus"] < b_minus < b_plus < md["range_plus"]
    bt, bp = r.extras["bin_target"], r.extras["bin_prediction"]

    def width(at: float) -> float:
        """The spacing of the group medians around ``at``: the width of the group that holds the corner."""
        j = int((bt - at).abs().argmin())
        return bt.diff()[max(j - 1, 0): j + 1].max().item()

    # B±: exact on a flat plateau; within (1 + s)·a group's width of the corner when the prediction falls back
    # from it (that group mixes y just below B with B − s·(y − B) just above)
    assert abs(md["boundary_plus"] - b_plus) <= (1e-12 if s_plus == 0 else (1 + s_plus) * width(b_plus))
    assert abs(md["boundary_minus"] - b_minus) <= (1e-12 if s_minus == 0 else (1 + s_minus) * width(b_minus))
    assert width(b_plus) < 0.15 and width(b_minus) < 0.15
    assert abs(md["turn_plus"] - b_plus) <= width(b_plus) and abs(md["turn_minus"] - b_minus) <= width(b_minus)
    # beyond R± the prediction is the line B± − s±·(y − B±) (in float32): least squares returns −s±
    assert md["fallback_plus"] == pytest.approx(-s_plus, abs=1e-6) and md["fallback_minus"] == pytest.approx(-s_minus, abs=1e-6)
    assert md["saturated_plus"] and md["saturated_minus"] and md["saturated"] and md["note"] == ""
    assert md["n_beyond_plus"] > 100 and md["n_beyond_minus"] > 100
    # the median curve B± are read from: y inside, the plateau (or the fall-back line) beyond
    inside = (bt > b_minus + 0.1) & (bt < b_plus - 0.1)
    assert torch.allclose(bp[inside], bt[inside], atol=0.05)


def test_a_model_that_follows_is_not_saturated(gen):
    r = saturation(known_predictor(math.inf, -math.inf), CONSTANT, generator=gen(7))
    md = r.metadata
    assert md["fallback_plus"] == pytest.approx(1.0) and md["fallback_minus"] == pytest.approx(1.0)
    assert md["saturated"] is False and md["saturated_plus"] is False
    assert md["boundary_plus"] == r.extras["bin_prediction"][-1].item() == r.extras["bin_target"][-1].item()


def test_a_sweep_that_stays_in_the_range_reads_no_boundary(gen):
    r = saturation(known_predictor(2.0, -1.5), CONSTANT, scales=[0.25, 0.5, 1.0], generator=gen(8))
    md = r.metadata
    assert all(math.isnan(md[k]) for k in ("boundary_plus", "boundary_minus", "fallback_plus", "fallback_minus"))
    assert md["saturated"] is None and md["saturated_plus"] is None
    assert "B+ not read" in md["note"] and "B− not read" in md["note"]
    # only the minus side leaves: y < −2 are clipped, and targets up to 1.5x stay near the range
    one = saturation(known_predictor(2.0, -1.5), CONSTANT.replace(coef_scale=1.0), scales=[1.0, 8.0], generator=gen(8))
    assert one.metadata["saturated"] is True


def test_default_sweep_scales_the_function_where_the_task_can():
    assert default_field(CONSTANT) == "coef" and default_field(LinearTask(d_x=1)) == "coef"
    assert default_field(KernelTask(d_x=1)) == "input"


def test_trained_variants_on_the_same_data_respect_the_final_norm_bound(gen):
    task = LinearTask(d_x=1)
    cfg = TrainConfig(steps=20, n_examples=6, batch_size=32, lr=1e-2, warmup_steps=5, eval_every=20, eval_size=32)
    models = {norm: train(task, ModelSpec.for_task(task, 6, n_layers=1, n_heads=2, d_model=16, normalization=norm),
                          cfg, progress=False).model for norm in ("LN", "RMS")}
    scales = [0.5, 1.0, 4.0, 16.0]
    cmp = compare_boundaries(models, task, scales=scales, n=64, generator=gen(4))
    assert cmp.scores.shape == (2, 2) and torch.isfinite(cmp.scores).all() and cmp.extras["curve"].shape == (2, 4)
    for norm, model in models.items():
        single = saturation(model, task, scales=scales, n=64, generator=gen(4))
        # the comparison ran every variant on the very sequences a lone sweep with that generator draws
        j = cmp.ticks("variant").index(norm)
        assert [single.metadata[k] for k in ("boundary_plus", "boundary_minus")] == cmp.scores[j].tolist()
        assert [single.metadata[k] for k in ("fallback_plus", "fallback_minus")] == cmp.extras["fallback"][j].tolist()
        (lo, hi), = single.metadata["ln_final_bound"]
        pred = single.extras["prediction"]
        assert lo - 1e-4 <= pred.min() and pred.max() <= hi + 1e-4
        # ... and the bound is the supremum: a residual along the extremal read-out direction reaches it
        g = model.ln_final.w.detach() * model.unembed.W_U.detach()[:, 0]
        direction = g - g.mean() if norm == "LN" else g
        with torch.no_grad():
            top = model(1e4 * direction[None, None], start_at_layer=model.cfg.n_layers)
        assert abs(top.item() - hi) < 1e-3 * abs(hi)


def test_figure_panels_and_json(gen):
    r = saturation(softmax_head(), PolynomialTask(degrees=(0,)), scales=[0.5, 1, 4, 16], field="coef_scale", n=64,
                   generator=gen(5))
    fig = saturation_figure(r)
    md = r.metadata
    # the training range of y is shaded on the target axis of the first panel, and ends at R± inside the axis
    first = [s for s in fig.layout.shapes if s.type == "rect" and s.xref == "x"]
    assert [(s.x0, s.x1) for s in first] == [(md["range_minus"], md["range_plus"])]
    lo, hi = fig.layout.xaxis.range
    assert lo < md["range_minus"] and md["range_plus"] < hi and hi >= r.extras["target"].max().item()
    levels = sorted(s.y0 for s in fig.layout.shapes if s.type == "line" and s.yref == "y")
    assert levels == sorted([md["boundary_minus"], md["boundary_plus"]])  # B± dashed
    median = next(t for t in fig.data if t.name == "median prediction")
    assert median.y == tuple(r.extras["bin_prediction"].tolist())
    mags = next(t for t in fig.data if t.name == md["value_name"])
    assert mags.y == tuple(r.scores.tolist()) and list(mags.x) == [0.5, 1.0, 4.0, 16.0]
    panel = saturation_panel(r, "entropy")
    assert panel.axes == ("scale", "layer", "head") and panel.ticks("scale") == ["0.5", "1", "4", "16"]
    assert panel.figure().data[0].type == "heatmap"
    back = Result.from_json(r.to_json())
    assert all(back.metadata[k] == r.metadata[k] for k in BOUNDARY_KEYS)
    assert torch.equal(back.extras["prediction"], r.extras["prediction"])
    cmp = compare_boundaries([("a", softmax_head()), ("b", softmax_head("relu"))], PolynomialTask(degrees=(0,)),
                             scales=[1, 16], field="coef", n=32)
    assert len(saturation_figure(cmp).data) == 3  # y = x plus one median curve per variant


def test_bad_arguments_are_one_line_value_errors():
    model = softmax_head()
    with pytest.raises(ValueError, match="regression task; task 'modular'"):
        saturation(model, ModularTask(p=5, n_tasks=4))
    with pytest.raises(ValueError, match="field must be a float field.*'degrees'"):
        saturation(model, PolynomialTask(degrees=(0,)), field="degrees")
    with pytest.raises(ValueError, match="field 'coef'"):
        saturation(model, KernelTask(d_x=1), field="coef")
    with pytest.raises(ValueError, match="scales"):
        saturation(model, PolynomialTask(degrees=(0,)), scales=[0.0, 1.0])
    with pytest.raises(ValueError, match="n_examples"):
        saturation(model, PolynomialTask(degrees=(0,)), n_examples=K + 1)
    with pytest.raises(ValueError, match="distinct names"):
        compare_boundaries([("a", model), ("a", model)], PolynomialTask(degrees=(0,)))
    r = saturation(model, PolynomialTask(degrees=(0,)), scales=[1.0], n=16)
    with pytest.raises(ValueError, match="name must be an extra"):
        saturation_panel(r, "nope")
