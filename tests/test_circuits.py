"""probes.circuits: batched exact edge patching against the plain loop (one hooked forward per edge) on causal,
rotary, RMS, attention-only, no-norm, relu-scored and context-masked models; the sum-of-senders decomposition;
faithfulness at its two ends; EAP against exact patching where the model is linear in the patched input; path
patching against edge and node patching; TransformerLens's direct path patching; settings and layout."""
import pytest
import torch
from transformer_lens.utilities import get_act_name

from interp.spec import ModelSpec
from interp.tasks import KernelTask, LinearTask, ModularTask
from probes.circuits import (CircuitSettings, Graph, as_matrix, circuit_metric, correlation, edge_attribution,
                             edge_patch, edge_patch_loop, edge_scores, faithfulness, path_patch, receiver_inputs,
                             sender_outputs)
from probes.circuits.edges import split_inputs
from probes.circuits.graph import cache_names
from probes.metrics import Answers, resolve_metric
from probes.patching import patch

TOL = 1e-5
MODULAR, LINEAR = ModularTask(p=7, n_tasks=20), LinearTask(d_x=3)
PAIRED = KernelTask(d_x=3, kernel="exp", layout="paired")
# name -> (task, n_examples, ModelSpec knobs); random initialisation: the identities hold for any weights
MODELS = {
    "causal-ln": (MODULAR, 5, {}),
    "rotary-rms": (MODULAR, 5, {"positional": "rotary", "normalization": "RMS"}),
    "attn-only-lnpre": (MODULAR, 5, {"attn_only": True, "normalization": "LNPre", "n_layers": 3}),
    "no-norm-regression": (LINEAR, 4, {"normalization": "none"}),
    "relu-scoring": (LINEAR, 4, {"scoring": "relu", "final_norm": False}),
    "context-masked": (PAIRED, 5, {"attn_only": True, "normalization": "none", "positional": "none",
                                   "mask": "context", "d_model": 8}),
}


def build(name: str, seed: int = 0):
    task, n_examples, knobs = MODELS[name]
    spec = ModelSpec.for_task(task, n_examples, **({"n_layers": 2, "n_heads": 2, "d_model": 16, "seed": seed} | knobs))
    return spec.build().eval(), task, n_examples


def pair(task, n_examples, seed=0, size=3):
    """``size`` clean sequences of ``task`` and their "params" corruption."""
    clean = task.sample(size, n_examples, g := torch.Generator().manual_seed(seed))
    return clean, task.corrupt(clean, "params", g)


@pytest.fixture(scope="module")
def setups():
    """name -> (model, task, clean, corrupted)."""
    return {name: (model, task, *pair(task, n_examples)) for name in MODELS for model, task, n_examples in [build(name)]}


def max_diff(a, b) -> float:
    return (a.extras["metric"] - b.extras["metric"]).abs().max().item()


# ------------------------------------------------------------------------------------------ exact edge patching


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("positions, direction, freeze_ln", [
    ("all", "denoise", True), ("all", "noise", True), ("all", "denoise", False), ("query", "noise", True),
    ("each", "denoise", True),
])
def test_exact_edge_patching_equals_the_plain_loop(setups, name, positions, direction, freeze_ln):
    model, task, clean, corrupted = setups[name]
    settings = CircuitSettings(positions=positions, direction=direction, freeze_ln=freeze_ln, max_batch=20)
    fast, plain = edge_patch(model, task, clean, corrupted, settings), edge_patch_loop(model, task, clean, corrupted, settings)
    assert fast.scores.shape == plain.scores.shape and fast.axes == plain.axes
    assert max_diff(fast, plain) <= TOL
    assert (fast.per_example - plain.per_example).abs().max().item() <= 10 * TOL
    assert fast.metadata["n_forward_passes"] < plain.metadata["n_forward_passes"]
    base = 0.0 if direction == "denoise" else 1.0
    assert (fast.scores - base).abs().max() > 1e-3  # some edge moves the metric


def test_freezing_the_norm_changes_the_numbers(setups):
    model, task, clean, corrupted = setups["causal-ln"]
    frozen = edge_patch(model, task, clean, corrupted, CircuitSettings(freeze_ln=True))
    live = edge_patch(model, task, clean, corrupted, CircuitSettings(freeze_ln=False))
    assert (frozen.scores - live.scores).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------ the graph


@pytest.mark.parametrize("name", list(MODELS))
def test_receiver_inputs_are_the_sum_of_their_senders(setups, name):
    model, task, clean, _ = setups[name]
    names = cache_names(model)
    _, cache = model.run_with_cache(clean.inputs, names_filter=lambda n: n in names)
    graph = Graph.of(model)
    inputs = receiver_inputs(model, graph, sender_outputs(model, cache))
    for r, receiver in enumerate(graph.receivers):
        if receiver.kind == "readout":
            actual = cache[get_act_name("resid_post", model.cfg.n_layers - 1)]
        else:
            actual = cache[get_act_name("resid_pre" if receiver.kind in "qkv" else "resid_mid", receiver.layer)]
        assert (inputs[r] - actual).abs().max().item() <= TOL, receiver.name


def test_graph_layout():
    model, _, _ = build("causal-ln")
    graph = Graph.of(model)
    assert [s.name for s in graph.senders] == ["embed", "L0H0", "L0H1", "L0.mlp", "L1H0", "L1H1", "L1.mlp"]
    labels = graph.labels()
    assert "L0H1 -> L1H0.k" in labels and "L0H1 -> L0.mlp" in labels and "L1.mlp -> readout" in labels
    assert "L1H0 -> L1H1.q" not in labels and "L0.mlp -> L0.mlp" not in labels
    # head inputs of layer l read 1 + 3l senders; MLPs 1 + 3l + 2; the read-out all 7
    assert len(labels) == 2 * 3 * 1 + 3 + 2 * 3 * 4 + 6 + 7


def test_result_layout_and_matrix(setups):
    model, task, clean, corrupted = setups["causal-ln"]
    result = edge_patch(model, task, clean, corrupted)
    assert result.axes == ("edge",) and len(result.labels["edge"]) == len(Graph.of(model).edges)
    matrix = as_matrix(result)
    assert matrix.axes == ("sender", "receiver") and matrix.scores.shape == (7, 15)
    s, r = matrix.labels["sender"].index("L0H1"), matrix.labels["receiver"].index("L1H0.k")
    assert matrix.scores[s, r] == result.scores[result.labels["edge"].index("L0H1 -> L1H0.k")]
    assert torch.isnan(matrix.scores[matrix.labels["sender"].index("L1H0"), matrix.labels["receiver"].index("L1H1.q")])
    each = edge_patch(model, task, clean, corrupted, CircuitSettings(positions="each"))
    assert each.axes == ("edge", "pos") and each.scores.shape == (len(result.labels["edge"]), clean.inputs.shape[1])
    assert type(result).from_json(result.to_json()).labels == result.labels


# ------------------------------------------------------------------------------------------ faithfulness


def fully_ablated_metric(model, task, clean, corrupted, ablation, freeze_ln):
    """The run with every node's output ablated (TransformerLens hooks on resid_pre 0, hook_z and hook_mlp_out), each
    norm's scale frozen at the clean run's when asked: what the empty circuit must give."""
    _, clean_cache = model.run_with_cache(clean.inputs)
    _, corr_cache = model.run_with_cache(corrupted.inputs)

    def value(name):
        if ablation == "zero":
            return torch.zeros_like(clean_cache[name])
        if ablation == "mean":
            return clean_cache[name].mean(0, keepdim=True).expand_as(clean_cache[name])
        return corr_cache[name]

    names = [get_act_name("resid_pre", 0)] + [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    if not model.cfg.attn_only:
        names += [get_act_name("mlp_out", l) for l in range(model.cfg.n_layers)]
    hooks = [(n, lambda act, hook, v=value(n): v) for n in names]
    if freeze_ln:
        hooks += [(n, lambda act, hook, s=clean_cache[n]: s) for n in clean_cache.cache_dict if n.endswith("hook_scale")]
    out = model.run_with_hooks(clean.inputs, fwd_hooks=hooks)
    _, fn = resolve_metric(task, None)
    return fn(out[:, clean.query_pos], Answers.of(clean, corrupted))


@pytest.mark.parametrize("name", ["causal-ln", "attn-only-lnpre", "context-masked"])
@pytest.mark.parametrize("ablation, freeze_ln", [("zero", True), ("mean", False), ("resample", True), ("resample", False)])
def test_faithfulness_is_one_for_the_full_graph_and_the_ablated_run_for_the_empty_one(setups, name, ablation, freeze_ln):
    model, task, clean, corrupted = setups[name]
    settings = CircuitSettings(ablation=ablation, freeze_ln=freeze_ln, top=5)
    scores = edge_patch(model, task, clean, corrupted, settings)
    n = scores.scores.numel()
    result = faithfulness(model, task, clean, corrupted, settings, scores=scores, ks=[0, 5, n])
    assert result.axes == ("k",) and result.labels["k"] == ["0", "5", str(n)]
    assert abs(result.scores[-1].item() - 1) <= 1e-4 and result.scores[0].item() == 0
    assert abs(result.extras["completeness"][0].item() - 1) <= 1e-4 and result.extras["completeness"][-1].item() == 0
    reference = fully_ablated_metric(model, task, clean, corrupted, ablation, freeze_ln)
    assert abs(result.metadata["empty_metric"] - reference.mean().item()) <= TOL
    if ablation == "resample" and not freeze_ln:  # every receiver reads the corrupted run: the corrupted run
        assert abs(result.metadata["empty_metric"] - scores.metadata["corrupted_metric"]) <= TOL
    assert len(result.metadata["circuit"]) == 5


def test_a_circuit_of_one_edge_reads_that_edge_and_ablates_the_rest(setups):
    """Keeping only the direct edge embed -> readout in an attention-only model: the read-out sees the clean
    embedding plus the ablated heads (zero: nothing but b_O), whatever the norms do."""
    model, task, clean, corrupted = setups["context-masked"]
    graph = Graph.of(model)
    mask = torch.zeros(1, len(graph.edges), dtype=torch.bool)
    mask[0, graph.labels().index("embed -> readout")] = True
    got = circuit_metric(model, task, clean, corrupted, mask, ablation="zero")
    _, cache = model.run_with_cache(clean.inputs)
    resid = cache[get_act_name("resid_pre", 0)] + sum(b.attn.b_O for b in model.blocks)
    out = model.unembed(resid)  # no norms in this model
    _, fn = resolve_metric(task, None)
    assert (got[0] - fn(out[:, clean.query_pos], Answers.of(clean, corrupted))).abs().max().item() <= TOL


# ------------------------------------------------------------------------------------------ EAP and EAP-IG


def linear_model(task, n_examples, n_layers):
    """Attention-only, linear scoring, no norms: each head's output is linear in each of its q, k and v inputs."""
    spec = ModelSpec.for_task(task, n_examples, n_layers=n_layers, n_heads=2, d_model=16, attn_only=True,
                              normalization="none", scoring="linear", seed=3)
    return spec.build().eval()


@pytest.mark.parametrize("task, n_examples, metric", [(LINEAR, 4, "signed_error"), (MODULAR, 5, "logit_diff")])
@pytest.mark.parametrize("positions, direction", [("all", "denoise"), ("each", "noise")])
def test_eap_equals_exact_patching_on_a_model_linear_in_the_patched_input(task, n_examples, metric, positions, direction):
    clean, corrupted = pair(task, n_examples, seed=5)
    settings = CircuitSettings(metric=metric, positions=positions, direction=direction)
    one_layer = linear_model(task, n_examples, 1)
    exact = edge_patch(one_layer, task, clean, corrupted, settings)
    eap = edge_attribution(one_layer, task, clean, corrupted, CircuitSettings(**settings.to_dict() | {"method": "eap"}))
    assert (exact.scores - eap.scores).abs().max().item() <= 1e-4 * max(1.0, exact.scores.abs().max().item())
    assert (exact.extras["metric"] - eap.extras["metric"]).abs().max().item() <= TOL * 10
    # two layers: the edges into the last layer and the read-out still enter linearly
    two = linear_model(task, n_examples, 2)
    exact = edge_patch(two, task, clean, corrupted, settings)
    eap = edge_attribution(two, task, clean, corrupted, CircuitSettings(**settings.to_dict() | {"method": "eap"}))
    late = torch.tensor([r.layer >= 1 for r in (Graph.of(two).receivers[r] for _, r in Graph.of(two).edges)])
    assert (exact.extras["metric"][late] - eap.extras["metric"][late]).abs().max().item() <= TOL * 10


def test_eap_ig_with_one_step_is_eap_and_more_steps_track_exact(setups):
    model, task, clean, corrupted = setups["causal-ln"]
    eap = edge_attribution(model, task, clean, corrupted, CircuitSettings(method="eap"))
    one = edge_attribution(model, task, clean, corrupted, CircuitSettings(method="eap-ig", ig_steps=1))
    assert (eap.scores - one.scores).abs().max().item() <= TOL
    ig = edge_scores(model, task, clean, corrupted, CircuitSettings(method="eap-ig", ig_steps=3))
    exact = edge_scores(model, task, clean, corrupted, CircuitSettings(method="exact"))
    assert ig.metadata["ig_steps"] == 3 and ig.scores.shape == exact.scores.shape
    assert correlation(ig, exact)["pearson"] > 0.5


# ------------------------------------------------------------------------------------------ path patching


def test_path_through_one_edge_is_that_edge(setups):
    model, task, clean, corrupted = setups["causal-ln"]
    edges = edge_patch(model, task, clean, corrupted)
    paths = path_patch(model, task, clean, corrupted, [("L0H1", ["L1H0.k"]), ("embed", ["readout"]), ("L0.mlp", ["L1.mlp"])])
    assert paths.axes == ("path",)
    for i, label in enumerate(["L0H1 -> L1H0.k", "embed -> readout", "L0.mlp -> L1.mlp"]):
        assert abs(paths.extras["metric"][i] - edges.extras["metric"][edges.labels["edge"].index(label)]) <= TOL


@pytest.mark.parametrize("name", ["causal-ln", "context-masked"])
def test_a_one_edge_path_per_position_is_that_edge_per_position(setups, name):
    model, task, clean, corrupted = setups[name]
    settings = CircuitSettings(positions="each")
    edges = edge_patch(model, task, clean, corrupted, settings)
    receiver = "L1H0.k" if name == "causal-ln" else "L1H0.v"
    paths = path_patch(model, task, clean, corrupted, [("L0H1", [receiver]), ("embed", ["readout"])], settings)
    assert paths.axes == ("path", "pos") and paths.scores.shape == (2, clean.inputs.shape[1])
    assert paths.labels["pos"] == edges.labels["pos"]
    for i, label in enumerate([f"L0H1 -> {receiver}", "embed -> readout"]):
        edge = edges.labels["edge"].index(label)
        assert (paths.extras["metric"][i] - edges.extras["metric"][edge]).abs().max() <= TOL


def test_a_head_through_all_its_edges_is_node_patching_without_norms(setups):
    """Without norms, feeding a head's clean output into every receiver that reads it is patching its hook_z."""
    model, task, clean, corrupted = setups["no-norm-regression"]
    graph = Graph.of(model)
    readers = [graph.receivers[r].name for s, r in graph.edges if graph.senders[s].name == "L0H1"]
    paths = path_patch(model, task, clean, corrupted, [("L0H1", readers)])
    node = patch(model, task, clean, corrupted, site="z", by="head")
    assert abs(paths.extras["metric"][0] - node.extras["metric"][0, 1]) <= TOL


def adder(delta, head=None):
    """A hook adding ``delta`` [batch, pos, d_model] to a split input (at ``head``) or to a residual."""
    def hook(act, hook):
        act = act.clone()
        if head is None:
            return act + delta
        act[:, :, head] += delta
        return act
    return hook


@pytest.mark.parametrize("row", [None, 0, 2, -1])
def test_a_path_through_several_receivers_is_one_run_with_each_input_patched(setups, row):
    """The sender's delta added at TransformerLens's split input hooks of every receiver at once (no norms): on
    every row (positions "all", row None), or on one row (positions "each")."""
    model, task, clean, corrupted = setups["no-norm-regression"]
    receivers = ["L0H0.v", "L1H1.q", "L1H1.k", "L1.mlp", "readout"]
    settings = CircuitSettings(positions="all" if row is None else "each")
    result = path_patch(model, task, clean, corrupted, [("embed", receivers)], settings).extras["metric"][0]
    got = result if row is None else result[row]
    delta = (model.run_with_cache(clean.inputs)[1][get_act_name("resid_pre", 0)]
             - model.run_with_cache(corrupted.inputs)[1][get_act_name("resid_pre", 0)])
    if row is not None:
        only = torch.zeros(delta.shape[1], dtype=torch.bool)
        only[row] = True
        delta = delta * only[None, :, None]

    add = lambda head=None: adder(delta, head)  # noqa: E731
    hooks = [("blocks.0.hook_v_input", add(0)), ("blocks.1.hook_q_input", add(1)), ("blocks.1.hook_k_input", add(1)),
             ("blocks.1.hook_mlp_in", add()), ("blocks.1.hook_resid_post", add())]
    with split_inputs(model):
        out = model.run_with_hooks(corrupted.inputs, fwd_hooks=hooks)
    _, fn = resolve_metric(task, None)
    assert abs(got - fn(out[:, clean.query_pos], Answers.of(clean, corrupted)).mean()) <= TOL


@pytest.mark.parametrize("freeze_ln", [True, False])
def test_a_path_across_layers_with_norms_is_one_hooked_run(setups, freeze_ln):
    """With layer norms: the delta added at each receiver's split input before its norm, the norm recomputed
    (freeze_ln False: TransformerLens's own forward, no hook but the adds) or, frozen, with the receiving head's
    scale only frozen at the base run's (so that the other heads of a later layer see their changed input)."""
    model, task, clean, corrupted = setups["causal-ln"]
    receivers = ["L0H0.v", "L1H1.q", "L1.mlp", "readout"]
    got = path_patch(model, task, clean, corrupted, [("embed", receivers), ("embed", ["L1H1.q", "L1H0.k"])],
                     CircuitSettings(freeze_ln=freeze_ln)).extras["metric"]
    base_cache = model.run_with_cache(corrupted.inputs)[1]
    delta = model.run_with_cache(clean.inputs)[1][get_act_name("resid_pre", 0)] - base_cache[get_act_name("resid_pre", 0)]

    add = lambda head=None: adder(delta, head)  # noqa: E731

    def freeze(name, head=None, call=0):
        """The base run's scale at ``name`` on the ``call``-th of its calls in a pass (ln1 runs once for the q,
        k and v inputs, in that order, under split inputs), for ``head`` only."""
        base, seen = base_cache[name], [0]

        def hook(act, hook):
            mine, seen[0] = seen[0] % 3 == call or head is None, seen[0] + 1
            if not mine:
                return act
            act = act.clone()
            if head is None:
                return base.expand_as(act).clone()
            act[:, :, head] = base[:, :, head] if base.dim() == act.dim() else base
            return act
        return hook

    def run(adds, scales):
        with split_inputs(model):
            out = model.run_with_hooks(corrupted.inputs, fwd_hooks=adds + (scales if freeze_ln else []))
        _, fn = resolve_metric(task, None)
        return fn(out[:, clean.query_pos], Answers.of(clean, corrupted)).mean()

    first = run([("blocks.0.hook_v_input", add(0)), ("blocks.1.hook_q_input", add(1)), ("blocks.1.hook_mlp_in", add()),
                 ("blocks.1.hook_resid_post", add())],
                [("blocks.0.ln1.hook_scale", freeze("blocks.0.ln1.hook_scale", 0, call=2)),
                 ("blocks.1.ln1.hook_scale", freeze("blocks.1.ln1.hook_scale", 1, call=0)),
                 ("blocks.1.ln2.hook_scale", freeze("blocks.1.ln2.hook_scale")),
                 ("ln_final.hook_scale", freeze("ln_final.hook_scale"))])
    second = run([("blocks.1.hook_q_input", add(1)), ("blocks.1.hook_k_input", add(0))],
                 [("blocks.1.ln1.hook_scale", freeze("blocks.1.ln1.hook_scale", 1, call=0)),
                  ("blocks.1.ln1.hook_scale", freeze("blocks.1.ln1.hook_scale", 0, call=1))])
    assert abs(got[0] - first) <= TOL and abs(got[1] - second) <= TOL


def test_path_patching_refuses_a_missing_edge(setups):
    model, task, clean, corrupted = setups["causal-ln"]
    with pytest.raises(ValueError, match="no edge L1H0 -> L0.mlp"):
        path_patch(model, task, clean, corrupted, [("L1H0", ["L0.mlp"])])


# ------------------------------------------------------------------------------------------ references and settings


def test_edges_between_heads_match_transformer_lens_direct_path_patching():
    """TransformerLens's get_act_patch_direct_path adds (δ / ln1 scale) @ W_Q at hook_q; without norms (scale 1)
    that is our head-to-head edge patch, denoising."""
    from transformer_lens.tools.analysis.direct_path_patching import get_act_patch_direct_path

    model = ModelSpec.for_task(MODULAR, 5, n_layers=2, n_heads=2, d_model=16, normalization="none").build().eval()
    clean, corrupted = pair(MODULAR, 5, seed=2)
    _, fn = resolve_metric(MODULAR, None)
    answers = Answers.of(clean, corrupted)
    _, clean_cache = model.run_with_cache(clean.inputs)
    _, corr_cache = model.run_with_cache(corrupted.inputs)
    corr_cache.cache_dict["blocks.1.ln1.hook_scale"] = torch.ones(*clean.inputs.shape, 1)  # no norm: scale 1
    ours = edge_patch(model, MODULAR, clean, corrupted)
    for component in ("q", "k", "v"):
        ref = get_act_patch_direct_path(model, corrupted.inputs, clean_cache, corr_cache,
                                        lambda out: fn(out[:, clean.query_pos], answers).mean(), src_layer=0,
                                        src_head=1, component=component, verbose=False)
        for h in range(2):
            got = ours.extras["metric"][ours.labels["edge"].index(f"L0H1 -> L1H{h}.{component}")]
            assert abs(got - ref[1, h].item()) <= TOL


@pytest.mark.parametrize("field, value", [("method", "acdc"), ("direction", "up"), ("positions", "some"),
                                          ("ig_steps", 0), ("top", -1), ("ablation", "noise"), ("n", 1),
                                          ("freeze_ln", 1), ("max_batch", 0), ("corruption", "none")])
def test_settings_name_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"'{field}' parameter of CircuitSettings"):
        CircuitSettings(**{field: value})


def test_bad_inputs_are_one_clear_error(setups):
    model, task, clean, corrupted = setups["causal-ln"]
    short, _ = pair(task, 4)
    with pytest.raises(ValueError, match="must have the clean shape"):
        edge_patch(model, task, clean, short)
    with pytest.raises(ValueError, match="metric 'nope'"):
        edge_patch(model, task, clean, corrupted, CircuitSettings(metric="nope"))
    with pytest.raises(ValueError, match="ks must lie"):
        faithfulness(model, task, clean, corrupted, ks=[10**6])


# ------------------------------------------------------------------------------------------ the direct blocks


def test_direct_blocks_cover_plain_causal_models_and_only_those(setups):
    from probes.circuits import direct

    covered = {name for name, (model, *_) in setups.items() if direct.supports(model)}
    assert covered == {"causal-ln", "no-norm-regression"}  # RMS, LNPre, a scoring hook, a context mask: hooked blocks


@pytest.mark.parametrize("positions, freeze_ln, n_heads", [("all", True, 2), ("each", True, 2), ("all", False, 2),
                                                      ("all", True, 1)])
def test_direct_blocks_equal_the_plain_loop_and_the_hooked_blocks(monkeypatch, positions, freeze_ln, n_heads):
    """A rotary LN model of 3 layers (the zoo's kind, and a layer between the patched one and the last): the batched
    sweep through ``direct`` equals the loop, and the sweep with direct blocks switched off. d_head 8 and 16: a
    scale sqrt(d_head) that is not a power of two and one that is (``direct.prescaled`` divides q instead)."""
    from probes.circuits import direct

    spec = ModelSpec.for_task(MODULAR, 5, n_layers=3, n_heads=n_heads, d_model=16, seed=1, positional="rotary")
    model = spec.build().eval()
    clean, corrupted = pair(MODULAR, 5, seed=1)
    assert direct.supports(model)
    settings = CircuitSettings(positions=positions, freeze_ln=freeze_ln, max_batch=20)
    fast, plain = edge_patch(model, MODULAR, clean, corrupted, settings), edge_patch_loop(model, MODULAR, clean, corrupted, settings)
    monkeypatch.setattr(direct, "supports", lambda model: False)
    hooked = edge_patch(model, MODULAR, clean, corrupted, settings)
    assert max_diff(fast, plain) <= TOL and max_diff(fast, hooked) <= TOL


@pytest.mark.parametrize("knobs", [{}, {"positional": "rotary", "n_layers": 3}, {"attn_only": True},
                                   {"normalization": "none"}, {"n_heads": 1}])
@pytest.mark.parametrize("task", [MODULAR, LINEAR], ids=["modular", "linear"])
def test_caches_from_the_weights_equal_run_with_cache(task, knobs):
    """``direct.run_cached`` (the batched sweep's base and source runs) holds what ``run_with_cache`` holds at every
    hook the sweep reads, and the same output."""
    from probes.circuits import direct

    spec = ModelSpec.for_task(task, 5, **({"n_layers": 2, "n_heads": 2, "d_model": 16, "seed": 2} | knobs))
    model = spec.build().eval()
    assert direct.supports(model)
    clean, _ = pair(task, 5, seed=2)
    names = set(cache_names(model))
    with torch.no_grad():
        out, cache = model.run_with_cache(clean.inputs, names_filter=lambda n: n in names)
        mine, got = direct.run_cached(model, clean.inputs, names)
    assert set(got) == set(cache.cache_dict)
    assert (mine - out).abs().max().item() <= 1e-6
    for name, want in cache.cache_dict.items():
        assert got[name].shape == want.shape and (got[name] - want).abs().max().item() <= 1e-6, name
