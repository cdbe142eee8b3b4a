"""probes.patching: exact against transformer_lens.patching on token and real-valued models, both directions,
known answers, chunking, layout and errors."""
import math

import einops
import pytest
import torch
import transformer_lens.patching as tlp

from interp.spec import ModelSpec
from interp.tasks import KernelTask, LinearTask, ModularTask
from interp.train import TrainConfig, train
from probes.metrics import Answers, at_query, resolve_metric
from probes.patching import SITES, Stacked, patch
from interp.results import Result

tlp.tqdm = lambda it, **_: it  # TransformerLens's progress bar only clutters the test log

TOL = 1e-5
LP, LPH, LHP, LH = ("layer", "pos"), ("layer", "pos", "head"), ("layer", "head_index", "dest_pos"), ("layer", "head")
# (site, by, TransformerLens function, its index axes, permutation of its output into ours)
TL_SWEEPS = [
    ("resid_pre", None, tlp.get_act_patch_resid_pre, LP, None),
    ("resid_mid", None, tlp.get_act_patch_resid_mid, LP, None),
    ("attn_out", None, tlp.get_act_patch_attn_out, LP, None),
    ("mlp_out", None, tlp.get_act_patch_mlp_out, LP, None),
    ("z", "head_pos", tlp.get_act_patch_attn_head_out_by_pos, LPH, (0, 2, 1)),
    ("q", "head_pos", tlp.get_act_patch_attn_head_q_by_pos, LPH, (0, 2, 1)),
    ("k", "head_pos", tlp.get_act_patch_attn_head_k_by_pos, LPH, (0, 2, 1)),
    ("v", "head_pos", tlp.get_act_patch_attn_head_v_by_pos, LPH, (0, 2, 1)),
    ("pattern", "head_pos", tlp.get_act_patch_attn_head_pattern_by_pos, LHP, None),
    ("z", "head", tlp.get_act_patch_attn_head_out_all_pos, LH, None),
    ("v", "head", tlp.get_act_patch_attn_head_v_all_pos, LH, None),
    ("pattern", "head", tlp.get_act_patch_attn_head_pattern_all_pos, ("layer", "head_index"), None),
]
TASKS = {"modular": (ModularTask(p=7, n_tasks=20), 5, 32), "linear": (LinearTask(d_x=3), 6, 16)}


def trained(name: str, steps: int = 40, **knobs):
    """A tiny 2-layer model of task ``name``, trained ``steps`` steps so the metrics are not degenerate."""
    task, n_examples, d_model = TASKS[name]
    spec = ModelSpec.for_task(task, n_examples, n_layers=2, n_heads=2, d_model=d_model, **knobs)
    cfg = TrainConfig(steps=steps, batch_size=32, n_examples=n_examples, lr=3e-3, warmup_steps=5, eval_every=10**6, eval_size=8)
    return train(task, spec, cfg, progress=False).model.eval(), task, n_examples


def batches(task, n_examples, corruption="params", seed=0, size=6):
    g = torch.Generator().manual_seed(seed)
    clean = task.sample(size, n_examples, g)
    return clean, task.corrupt(clean, corruption, g)


@pytest.fixture(scope="module")
def setups():
    torch.manual_seed(0)
    out = {}
    for name in TASKS:
        model, task, n_examples = trained(name)
        out[name] = (model, task, *batches(task, n_examples))
    return out


def tl_metric(task, clean, corrupted):
    """Our default metric as TransformerLens wants it: logits [batch, pos, d] -> batch mean at the query."""
    _, fn = resolve_metric(task, None)
    answers = Answers.of(clean, corrupted)
    return lambda out: fn(at_query(out, clean), answers).mean()


def tl_reference(fn, model, target_inputs, source_cache, metric, axes):
    """TransformerLens's sweep. The index frame is given explicitly: TransformerLens reads the number of
    positions off the last input dim, which for real-valued [batch, pos, d_in] inputs is d_in."""
    sizes = {"layer": model.cfg.n_layers, "head": model.cfg.n_heads, "head_index": model.cfg.n_heads,
             "pos": target_inputs.shape[1], "dest_pos": target_inputs.shape[1]}
    shape = [sizes[a] for a in axes]
    index_df = tlp.make_df_from_ranges(shape, list(axes))
    return fn(model, target_inputs, source_cache, metric, index_axis_names=None, index_df=index_df).reshape(shape)


def denoising_reference(fn, model, task, clean, corrupted, axes, order):
    """TransformerLens's denoising sweep ``fn`` (clean activations into the corrupted run), in our axis order."""
    _, clean_cache = model.run_with_cache(clean.inputs)
    ref = tl_reference(fn, model, corrupted.inputs, clean_cache, tl_metric(task, clean, corrupted), axes)
    return ref.permute(*order) if order else ref


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("site, by, fn, axes, order", TL_SWEEPS, ids=[f"{s}-{b or 'layer_pos'}" for s, b, *_ in TL_SWEEPS])
def test_denoising_equals_transformer_lens(setups, name, site, by, fn, axes, order):
    model, task, clean, corrupted = setups[name]
    ref = denoising_reference(fn, model, task, clean, corrupted, axes, order)
    result = patch(model, task, clean, corrupted, site=site, by=by, max_batch=5)
    assert result.extras["metric"].shape == ref.shape
    assert (result.extras["metric"] - ref).abs().max().item() <= TOL
    if by != "head":  # by position, the shortcuts skip work
        assert result.metadata["n_patched_runs"] < result.metadata["n_variants"]


@pytest.mark.parametrize("knobs", [
    {"positional": "rotary", "scoring": "relu"},
    {"normalization": "none", "attn_only": True},
    {"normalization": "RMS", "positional": "none", "scoring": "linear"},
    {"normalization": "LNPre", "n_layers": 3},
], ids=["rotary-relu", "no-norm-attn-only", "rms-nopos-linear", "lnpre-3-layers"])
@pytest.mark.parametrize("site, by, fn, axes, order", [TL_SWEEPS[i] for i in (0, 4, 6, 8)], ids=["resid_pre", "z", "k", "pattern"])
def test_other_architectures_equal_transformer_lens(knobs, site, by, fn, axes, order):
    task, n_examples, d_model = TASKS["modular"]
    spec = ModelSpec.for_task(task, n_examples, **({"n_layers": 2, "n_heads": 2, "d_model": d_model} | knobs))
    model = spec.build().eval()
    clean, corrupted = batches(task, n_examples, seed=3)
    ref = denoising_reference(fn, model, task, clean, corrupted, axes, order)
    result = patch(model, task, clean, corrupted, site=site, by=by)
    assert (result.extras["metric"] - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("scoring", ["exp", "softmax"])
@pytest.mark.parametrize("site, by, fn, axes, order", [TL_SWEEPS[i] for i in (0, 2, 4, 6, 7, 8, 9)],
                         ids=["resid_pre", "attn_out", "z", "k", "v", "pattern", "z-head"])
def test_cheng_layer_equals_transformer_lens(scoring, site, by, fn, axes, order):
    """A bidirectional model (Cheng et al.'s layer: the query masked as a key) is patched with whole runs."""
    task = KernelTask(d_x=3, kernel="exp", layout="paired")
    spec = ModelSpec.for_task(task, 5, n_layers=2, n_heads=2, d_model=8, attn_only=True, normalization="none",
                              positional="none", scoring=scoring, mask="context")
    model = spec.build().eval()
    clean, corrupted = batches(task, 5, seed=4)
    ref = denoising_reference(fn, model, task, clean, corrupted, axes, order)
    result = patch(model, task, clean, corrupted, site=site, by=by, max_batch=7)
    assert (result.extras["metric"] - ref).abs().max().item() <= TOL
    assert ref.abs().max() > 0  # patching moves the metric somewhere


@pytest.mark.parametrize("site, by, fn, axes, order", [TL_SWEEPS[i] for i in (0, 4, 8)], ids=["resid_pre", "z", "pattern"])
def test_a_model_without_a_final_norm_equals_transformer_lens(site, by, fn, axes, order):
    """final_norm=False: the blocks keep their LN, the read-out takes the residual as it is (no ln_final to run)."""
    task, n_examples, d_model = TASKS["linear"]
    model = ModelSpec.for_task(task, n_examples, n_layers=2, n_heads=2, d_model=d_model, final_norm=False).build().eval()
    assert not hasattr(model, "ln_final") and model.cfg.normalization_type == "LN"
    clean, corrupted = batches(task, n_examples, seed=3)
    ref = denoising_reference(fn, model, task, clean, corrupted, axes, order)
    result = patch(model, task, clean, corrupted, site=site, by=by)
    assert (result.extras["metric"] - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("name", list(TASKS))
def test_noising_equals_transformer_lens_with_roles_swapped(setups, name):
    model, task, clean, corrupted = setups[name]
    _, corrupted_cache = model.run_with_cache(corrupted.inputs)
    metric = tl_metric(task, clean, corrupted)
    for site, by, fn, axes, order in (TL_SWEEPS[0], TL_SWEEPS[4], TL_SWEEPS[3]):
        ref = tl_reference(fn, model, clean.inputs, corrupted_cache, metric, axes)
        ref = ref.permute(*order) if order else ref
        result = patch(model, task, clean, corrupted, site=site, by=by, direction="noise")
        assert (result.extras["metric"] - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("name", list(TASKS))
def test_noising_equals_hand_written_run_with_hooks(setups, name):
    model, task, clean, corrupted = setups[name]
    _, fn = resolve_metric(task, None)
    answers = Answers.of(clean, corrupted)
    _, corrupted_cache = model.run_with_cache(corrupted.inputs)
    q = clean.query_pos
    heads = patch(model, task, clean, corrupted, site="z", by="head_pos", direction="noise")
    resid = patch(model, task, clean, corrupted, site="resid_pre", direction="noise")

    def noised(hook_name, index):
        def hook(act, hook):
            act = act.clone()
            act[index] = corrupted_cache[hook_name][index]
            return act
        out = model.run_with_hooks(clean.inputs, fwd_hooks=[(hook_name, hook)])
        return fn(out[:, q], answers).mean().item()

    for layer, head, pos in [(0, 0, 0), (0, 1, q - 3), (0, 1, q), (1, 0, q), (1, 1, q - 1)]:
        want = noised(f"blocks.{layer}.attn.hook_z", (slice(None), pos, head))
        assert abs(heads.extras["metric"][layer, head, pos].item() - want) <= TOL
    for layer, pos in [(0, 2), (0, q), (1, 1), (1, q)]:
        want = noised(f"blocks.{layer}.hook_resid_pre", (slice(None), pos))
        assert abs(resid.extras["metric"][layer, pos].item() - want) <= TOL


@pytest.mark.parametrize("name", list(TASKS))
def test_whole_residual_stream_is_the_known_answer(setups, name):
    """Patching resid_pre at every position hands the run the other input's whole state: 1 when denoising, 0 noising."""
    model, task, _, _ = setups[name]
    clean, corrupted = batches(task, TASKS[name][1], corruption="query", seed=1)
    denoised = patch(model, task, clean, corrupted, site="resid_pre", by="layer")
    noised = patch(model, task, clean, corrupted, site="resid_pre", by="layer", direction="noise")
    # the baselines are the plain runs' metrics
    _, fn = resolve_metric(task, None)
    answers = Answers.of(clean, corrupted)
    with torch.no_grad():
        m_clean = fn(at_query(model(clean.inputs), clean), answers).mean().item()
        m_corrupted = fn(at_query(model(corrupted.inputs), clean), answers).mean().item()
    assert denoised.metadata["clean_metric"] == pytest.approx(m_clean, abs=TOL)
    assert denoised.metadata["corrupted_metric"] == pytest.approx(m_corrupted, abs=TOL)
    gap = abs(m_clean - m_corrupted)
    assert gap > 0.01  # the corruption matters (barely trained models do little in context; linear: squared error / 3)
    assert denoised.axes == ("layer",) and denoised.scores.shape == (2,)
    assert torch.allclose(denoised.extras["metric"], torch.full((2,), m_clean), atol=TOL)
    assert torch.allclose(noised.extras["metric"], torch.full((2,), m_corrupted), atol=TOL)
    assert torch.allclose(denoised.scores, torch.ones(2), atol=TOL / gap)
    assert torch.allclose(noised.scores, torch.zeros(2), atol=TOL / gap)


def test_scores_and_per_example_share_one_scale(setups):
    model, task, clean, corrupted = setups["modular"]
    result = patch(model, task, clean, corrupted, site="z", by="head_pos")
    m_clean, m_corr = result.metadata["clean_metric"], result.metadata["corrupted_metric"]
    assert torch.allclose(result.scores, (result.extras["metric"] - m_corr) / (m_clean - m_corr), atol=1e-5)
    assert result.per_example.shape == (clean.inputs.shape[0], *result.scores.shape)
    assert torch.allclose(result.per_example.mean(0), result.scores, atol=1e-5)
    # paired with each sequence's own unpatched run: a cell that changes nothing has no spread
    untouched = (result.extras["metric"] == result.metadata["corrupted_metric"])
    if untouched.any():
        assert torch.all(result.per_example[:, untouched] == 0)
    assert result.sem is not None


@pytest.mark.parametrize("name", list(TASKS))
def test_chunking_and_layer_choice_do_not_change_numbers(setups, name):
    model, task, clean, corrupted = setups[name]
    one = patch(model, task, clean, corrupted, site="k", max_batch=1)
    many = patch(model, task, clean, corrupted, site="k", max_batch=10_000)
    assert one.metadata["n_forward_passes"] > many.metadata["n_forward_passes"]
    assert (one.extras["metric"] - many.extras["metric"]).abs().max().item() <= TOL
    # raw metrics agree to TOL, so scores normalised by Δ = clean - corrupted agree to TOL / |Δ|
    delta = abs(one.metadata["clean_metric"] - one.metadata["corrupted_metric"])
    assert torch.allclose(one.per_example, many.per_example, atol=max(1e-4, TOL / delta))
    layer1 = patch(model, task, clean, corrupted, site="k", layer=1)
    assert layer1.scores.shape[0] == 1 and layer1.labels["layer"] == ["L1"]
    assert (layer1.extras["metric"][0] - many.extras["metric"][1]).abs().max().item() <= TOL


def test_query_corruption_skips_unchanged_cells_exactly(setups):
    """With only the query resampled, every cell before it is bit-identical: no run, and still TransformerLens's numbers."""
    model, task, clean, _ = setups["modular"]
    clean, corrupted = batches(task, 5, corruption="query", seed=7)
    result = patch(model, task, clean, corrupted, site="resid_pre")
    assert result.metadata["n_patched_runs"] == 4  # the query's x and y, at both layers
    _, clean_cache = model.run_with_cache(clean.inputs)
    ref = tl_reference(tlp.get_act_patch_resid_pre, model, corrupted.inputs, clean_cache, tl_metric(task, clean, corrupted), LP)
    assert (result.extras["metric"] - ref).abs().max().item() <= TOL


def test_stacked_rows_are_views_of_one_repeat():
    act = torch.randn(3, 5, 2)
    stacked = Stacked({"a": act})
    for n in (1, 4, 2):  # grows once for the largest chunk, then smaller chunks take its first rows
        want = einops.repeat(act[:, 1:4], "b p d -> (n b) p d", n=n)
        assert torch.equal(stacked.rows("a", 1, 4, n), want)
    assert stacked.full["a"].shape[0] == 4 * 3


def test_result_layout(setups):
    model, task, clean, corrupted = setups["modular"]
    n_pos = clean.inputs.shape[1]
    cases = {"layer_pos": ("resid_pre", ("layer", "pos"), (2, n_pos)), "layer": ("attn_out", ("layer",), (2,)),
             "head_pos": ("q", ("layer", "head", "pos"), (2, 2, n_pos)), "head": ("z", ("layer", "head"), (2, 2))}
    for by, (site, axes, shape) in cases.items():
        result = patch(model, task, clean, corrupted, site=site, by=by, corruption="params")
        assert result.kind == "patching" and result.axes == axes and tuple(result.scores.shape) == shape
        assert result.extras["metric"].shape == result.scores.shape
        if "pos" in axes:
            assert result.labels["pos"] == list(clean.pos_labels)
        meta = result.metadata
        assert (meta["site"], meta["by"], meta["direction"], meta["metric"]) == (site, by, "denoise", "logit_diff")
        assert meta["n_sequences"] == clean.inputs.shape[0] and meta["corruption"] == "params"
        back = Result.from_json(result.to_json())
        assert torch.equal(back.scores, result.scores) and back.metadata == result.metadata
    assert "corruption" not in patch(model, task, clean, corrupted).metadata


def test_metric_choice(setups):
    model, task, clean, corrupted = setups["linear"]
    result = patch(model, task, clean, corrupted, site="mlp_out", metric="signed_error")
    assert result.metadata["metric"] == "signed_error"
    custom = patch(model, task, clean, corrupted, site="mlp_out", metric=lambda out, answers: out[:, 0])
    assert custom.metadata["metric"] == "<lambda>" and torch.isfinite(custom.extras["metric"]).all()


def test_identical_inputs_warn_and_run_nothing(setups):
    model, task, clean, _ = setups["modular"]
    with pytest.warns(UserWarning, match="same mean metric"):
        result = patch(model, task, clean, clean, site="z")
    assert result.metadata["n_forward_passes"] == 0
    assert math.isnan(result.scores[0, 0, 0].item())


def test_progress_bar(setups, capsys):
    model, task, clean, corrupted = setups["modular"]
    patch(model, task, clean, corrupted, site="v", progress=True)
    assert "patch v" in capsys.readouterr().err


def test_errors_name_the_bad_argument(setups):
    model, task, clean, corrupted = setups["modular"]
    with pytest.raises(ValueError, match="^The 'site' parameter of PatchSettings must be one of 'resid_pre', .*Got 'nope'"):
        patch(model, task, clean, corrupted, site="nope")
    with pytest.raises(ValueError, match=r"^layer 5 does not exist: the model has 2 layers \(0-1\)$"):
        patch(model, task, clean, corrupted, layer=5)
    with pytest.raises(ValueError, match="^The 'layer' parameter of PatchSettings must be None or an int >= 0. Got -1"):
        patch(model, task, clean, corrupted, layer=-1)
    with pytest.raises(ValueError, match="^by must be one of head_pos, head for site 'z', got 'layer_pos'$"):
        patch(model, task, clean, corrupted, site="z", by="layer_pos")
    with pytest.raises(ValueError, match="^The 'direction' parameter of PatchSettings must be one of 'denoise', 'noise'"):
        patch(model, task, clean, corrupted, direction="both")
    with pytest.raises(ValueError, match="^The 'max_batch' parameter of PatchSettings must be an int >= 1"):
        patch(model, task, clean, corrupted, max_batch=0)
    with pytest.raises(ValueError, match="must have the shape of clean"):
        patch(model, task, clean, batches(task, 4)[1])
    short = patch(model, task, clean, corrupted, site="mlp")  # the short names are the CLI's and the API's too
    assert torch.equal(short.scores, patch(model, task, clean, corrupted, site="mlp_out").scores)
    with pytest.raises(ValueError, match="does not apply"):
        patch(model, task, clean, corrupted, metric="squared_error_over_d")
    attn_only = ModelSpec.for_task(task, 5, n_layers=2, n_heads=2, d_model=16, attn_only=True).build()
    for site in ("mlp_out", "resid_mid"):
        with pytest.raises(ValueError, match=f"^site '{site}' does not exist in an attention-only model"):
            patch(attn_only, task, clean, corrupted, site=site)
    assert set(SITES) == {"resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern"}
