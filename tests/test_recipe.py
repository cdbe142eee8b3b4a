"""He et al.'s training recipe as knobs: weight-decay groups, warm-up start, no clipping, balanced batches, tied
embeddings, no biases, their init, and their parallelogram task sampling (the legacy rule kept for the zoo)."""
import json
import math
from pathlib import Path

import pytest
import torch

from interp.checkpoint import load_checkpoint, save_checkpoint
from interp.config import load_run, run_from_dict
from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask
from interp.train import TrainConfig, loss_fn, lr_at, make_optimizer, train_batch, train_step

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = dict(positional="rotary", act_fn="relu", normalization="LN", tied_embed=True, bias=False, init="he2024")


def token_spec(**knobs) -> ModelSpec:
    return ModelSpec(**{"n_layers": 2, "n_heads": 2, "d_model": 16, "d_vocab": 7, "n_ctx": 23} | knobs)


def batch_for(spec: ModelSpec, gen, n: int = 8):
    return ModularTask(p=spec.d_vocab, n_tasks=12).sample(n, (spec.n_ctx + 1) // 3, gen())


# ---- weight decay groups

def official_no_decay(name: str, param: torch.Tensor) -> bool:
    """scheduler.py's test, ``param.ndim <= 1 or name.endswith('.bias')``, plus TransformerLens's bias names."""
    return param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] == "b" or name.split(".")[-1][:2] == "b_"


@pytest.mark.parametrize("knobs", [{}, {"positional": "rotary", "tied_embed": True}, {"bias": False}])
def test_weight_decay_groups_follow_the_official_rule(knobs):
    model = token_spec(**knobs).build()
    opt = make_optimizer(model, TrainConfig(weight_decay=2.0, decay_norms_and_biases=False))
    names = {id(p): n for n, p in model.named_parameters()}
    got = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert got.get(0.0, set()) == {n for n, p in trainable if official_no_decay(n, p)}
    assert got[2.0] == {n for n, p in trainable if not official_no_decay(n, p)}
    # by hand, for the layers of this model
    per_block = {"ln1.w", "ln1.b", "ln2.w", "ln2.b"} | ({"attn.b_Q", "attn.b_K", "attn.b_V", "attn.b_O", "mlp.b_in",
                                                          "mlp.b_out"} if token_spec(**knobs).bias else set())
    expected = {f"blocks.{i}.{n}" for i in range(2) for n in per_block} | {"ln_final.w", "ln_final.b"}
    expected |= {"unembed.b_U"} if token_spec(**knobs).bias else set()
    assert got.get(0.0, set()) == expected
    assert "embed.W_E" in got[2.0] and "blocks.0.mlp.W_out" in got[2.0]  # embeddings are decayed (dont_decay_embd=False)


def test_default_optimizer_is_one_decayed_group():
    model = token_spec().build()
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))


# ---- schedule and clipping

def test_warmup_starts_at_warmup_start_times_lr_and_reaches_lr():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, warmup_start=0.01)
    assert math.isclose(lr_at(0, cfg), 1e-5)
    assert math.isclose(lr_at(50, cfg), 1e-3 * (0.01 + 0.99 * 0.5))
    assert math.isclose(lr_at(100, cfg), 1e-3) and lr_at(99, cfg) < 1e-3
    assert math.isclose(lr_at(1000, cfg), 1e-4)
    old = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100)  # warmup_start 0: the original formula, unchanged
    assert [lr_at(s, old) for s in (0, 9, 99)] == [1e-3 * 1 / 100, 1e-3 * 10 / 100, 1e-3 * 100 / 100]
    with pytest.raises(ValueError, match="warmup_start"):
        TrainConfig(warmup_start=1.5)
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=-1.0)


@pytest.mark.parametrize("grad_clip", [0.0, None])
def test_grad_clip_off_leaves_the_gradient_unchanged(grad_clip, gen):
    spec = token_spec()
    batch = batch_for(spec, gen)
    model, ref = spec.build(), spec.build()
    loss_fn(ref(batch.inputs), batch).backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes nothing, so the grads can be read
    train_step(model, opt, batch, lr=0.0, grad_clip=grad_clip)
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in ref.parameters() if p.grad is not None))
    assert norm > 1e-3  # clipping to 1e-3 would have changed it
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-8), name
    train_step(model, opt, batch, lr=0.0, grad_clip=1e-3)
    assert torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())) <= 1e-3 * (1 + 1e-4)


# ---- balanced batches

def test_balanced_batches_hold_every_task_equally_on_the_same_pairs(gen):
    task = ModularTask(p=7, n_tasks=8, pair_fraction=0.8, sampling="parallelogram")
    cfg = TrainConfig(batch_size=32, n_examples=6, balanced_batches=True)
    batch = train_batch(task, cfg, 0, gen())
    ab = torch.stack([batch.params["a"], batch.params["b"]], -1)
    counts = {tuple(t): sum(tuple(r) == tuple(t) for r in ab.tolist()) for t in task.task_vectors.tolist()}
    assert set(counts.values()) == {32 // 8} and len(counts) == 8
    examples = batch.examples.reshape(8, 4, 6, 2)  # task by task
    assert all(torch.equal(examples[i], examples[0]) for i in range(8))  # the same pairs, in the same order
    assert len({tuple(e.flatten().tolist()) for e in examples[0]}) > 1  # but not the same sequence four times
    pairs = {tuple(v) for v in task.pair_set.tolist()}
    assert all(tuple(v) in pairs for v in batch.examples.reshape(-1, 2).tolist())
    z = (batch.params["a"][:, None] * batch.examples[..., 0] + batch.params["b"][:, None] * batch.examples[..., 1]) % 7
    assert torch.equal(batch.targets[:, 1::3], z)
    with pytest.raises(ValueError, match="batch_size"):
        train_batch(task, TrainConfig(batch_size=30, balanced_batches=True), 0, gen())
    with pytest.raises(ValueError, match="balanced_batches"):
        train_batch(LinearTask(), TrainConfig(batch_size=32, balanced_batches=True), 0, gen())


# ---- tied embeddings

def test_tied_unembedding_is_the_embedding(gen, tmp_path):
    spec = token_spec(tied_embed=True)
    model = spec.build()
    assert torch.equal(model.W_U, model.embed.W_E.T) and model.W_U.data_ptr() == model.embed.W_E.data_ptr()
    assert "unembed.W_U" not in model.state_dict() and "embed.W_E" in model.state_dict()
    assert sum(p is model.embed.W_E for p in model.parameters()) == 1
    batch = batch_for(spec, gen)
    loss_fn(model(batch.inputs), batch).backward()
    # the gradient of W_E is that through the embedding plus that through the unembedding
    untied = token_spec().build()
    untied.load_state_dict({**model.state_dict(), "unembed.W_U": model.embed.W_E.detach().T.clone()})
    loss_fn(untied(batch.inputs), batch).backward()
    assert torch.allclose(model.embed.W_E.grad, untied.embed.W_E.grad + untied.unembed.W_U.grad.T, atol=1e-6)
    assert untied.unembed.W_U.grad.abs().sum() > 0 and untied.embed.W_E.grad.abs().sum() > 0
    # hooks and the cache
    logits, cache = model.run_with_cache(batch.inputs)
    assert torch.allclose(cache["unembed.hook_out"], logits)
    resid = cache["ln_final.hook_normalized"]
    assert torch.allclose(logits, resid @ model.embed.W_E.T + model.b_U, atol=1e-5)
    assert "blocks.1.hook_resid_post" in cache and "blocks.0.attn.hook_pattern" in cache
    seen = []
    model.run_with_hooks(batch.inputs, fwd_hooks=[("unembed.hook_in", lambda x, hook: seen.append(hook.name))])
    assert seen == ["unembed.hook_in"]
    # save + load round trip
    task = ModularTask(p=7, n_tasks=12)
    save_checkpoint(tmp_path / "ckpt", model, spec, task, {})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.spec.tied_embed and loaded.model.W_U.data_ptr() == loaded.model.embed.W_E.data_ptr()
    assert torch.equal(loaded.model.W_U, model.W_U)
    assert torch.allclose(loaded.model(batch.inputs), model.eval()(batch.inputs))


def test_tied_embed_needs_a_token_model():
    with pytest.raises(ValueError, match="tied_embed"):
        ModelSpec(d_in=3, tied_embed=True)


# ---- no biases

def test_bias_false_is_a_model_with_zero_biases(gen):
    spec = token_spec(bias=False)
    model = spec.build()
    biases = [n for n, _ in model.named_parameters() if n.split(".")[-1].startswith("b_")]
    assert {n.split(".")[-1] for n in biases} == {"b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U"}
    assert all(not p.requires_grad and torch.all(p == 0) for n, p in model.named_parameters() if n in biases)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.endswith(("ln1.b", "ln_final.b")))
    opt = make_optimizer(model, TrainConfig(decay_norms_and_biases=False))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for n, p in model.named_parameters() if n in biases)
    # the same outputs as a bias=True model whose biases are exactly zero
    ref = token_spec().build()
    ref.load_state_dict(model.state_dict())
    batch = batch_for(spec, gen)
    assert torch.equal(model(batch.inputs), ref(batch.inputs))
    train_step(model, opt, batch, lr=1e-2, grad_clip=0.0)
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n in biases)  # still zero after a step
    reg = ModelSpec(d_in=3, bias=False).build()
    assert not reg.embed.linear.bias.requires_grad and torch.all(reg.unembed.linear.bias == 0)


# ---- He et al.'s init

def test_he2024_init_stds():
    spec = ModelSpec(n_layers=3, n_heads=4, d_model=128, d_vocab=29, n_ctx=95, init="he2024")
    params = dict(spec.build().named_parameters())
    for name, p in params.items():
        leaf = name.split(".")[-1]
        if leaf == "W_out":
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(2 * 3), rel=0.05), name
        elif leaf == "W_U":
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(128), rel=0.1), name  # their untied lm_head
        elif leaf.startswith("W_"):
            assert p.std().item() == pytest.approx(0.02, rel=0.1), name
        elif leaf.startswith("b_") or leaf == "b":
            assert torch.all(p == 0), name
        else:
            assert torch.all(p == 1), name  # LN weights
    tied = dict(ModelSpec(n_layers=3, n_heads=4, d_model=128, d_vocab=29, n_ctx=95, **OFFICIAL).build().named_parameters())
    assert tied["embed.W_E"].std().item() == pytest.approx(0.02, rel=0.1) and "unembed.W_U" not in tied
    assert torch.equal(ModelSpec(d_vocab=7, init="he2024").build().embed.W_E, ModelSpec(d_vocab=7, init="he2024").build().embed.W_E)
    frozen = ModelSpec(d_vocab=7, init="he2024", positional="none").build()
    assert torch.all(frozen.pos_embed.W_pos == 0)
    with pytest.raises(ValueError, match="init"):
        ModelSpec(d_vocab=7, init="xavier")


# ---- parallelogram sampling

def test_official_parallelograms_have_the_corner_structure():
    for p, n_tasks, seed in [(29, 256, 0), (11, 64, 0), (7, 24, 1), (7, 36, 3)]:
        task = ModularTask(p=p, n_tasks=n_tasks, sampling="parallelogram", split_seed=seed)
        ids = [tuple(v) for v in task.task_vectors.tolist()]
        assert len(ids) == n_tasks and len(set(ids)) == n_tasks  # exactly 4 · n_pl, distinct (rejection works)
        ood = {tuple(v) for v in task.ood().task_vectors.tolist()}
        assert not ood & set(ids) and len(ood) + n_tasks == p**2
        n_pl = n_tasks // 4
        seeds, corners = ids[:n_pl], ids[n_pl:]
        for i, (a, b) in enumerate(seeds):
            (a1, y), (x, b1), (x2, y2) = corners[3 * i: 3 * i + 3]
            assert (a1, b1, x2, y2) == (a, b, x, y)
            assert x not in (a, b) and y not in (a, b, x)
    with pytest.raises(ValueError, match="n_tasks"):
        ModularTask(p=7, n_tasks=10, sampling="parallelogram")
    with pytest.raises(ValueError, match="n_tasks"):  # no free corners left: the official loop would never end
        _ = ModularTask(p=7, n_tasks=36, sampling="parallelogram", split_seed=0).task_vectors


def test_official_parallelograms_reject_corners_already_chosen():
    """Dense draws (p = 7, 32 of 49 tasks) only fit by redrawing x, y: still no corner twice."""
    for seed in (0, 2, 3):
        ids = ModularTask(p=7, n_tasks=32, sampling="parallelogram", split_seed=seed).task_vectors.tolist()
        assert len({tuple(v) for v in ids}) == 32


def test_official_parallelograms_are_seeded():
    a = ModularTask(p=11, n_tasks=64, sampling="parallelogram", split_seed=0).task_vectors
    assert torch.equal(a, ModularTask(p=11, n_tasks=64, sampling="parallelogram", split_seed=0).task_vectors)
    assert not torch.equal(a, ModularTask(p=11, n_tasks=64, sampling="parallelogram", split_seed=1).task_vectors)


# task ids (a·p + b) the rule before this change drew, recorded from it
LEGACY_P7_36 = [34, 32, 41, 39, 24, 26, 38, 40, 9, 30, 27, 23, 20, 16, 7, 0, 21, 28, 33, 11, 12, 25, 47, 45, 43, 15, 19,
                10, 5, 3, 22, 36, 35, 18, 44, 46]
LEGACY_P29_64_SEED2 = [762, 769, 182, 189, 711, 722, 334, 345, 151, 154, 296, 299, 511, 513, 656, 658, 379, 384, 89, 94,
                       333, 326, 246, 239, 0, 26, 29, 55, 806, 797, 52, 43, 187, 175, 709, 697, 802, 788, 628, 614, 96,
                       88, 67, 59, 659, 340, 339, 663, 651, 721, 163, 801, 789, 632, 609, 835, 812, 335, 342, 770, 777,
                       597, 594, 104]


def ids_of(task: ModularTask) -> list[int]:
    return (task.task_vectors[:, 0] * task.p + task.task_vectors[:, 1]).tolist()


def test_legacy_rule_reproduces_the_previous_task_vectors():
    assert ids_of(ModularTask(p=7, n_tasks=36, pair_fraction=0.8, sampling="parallelogram-legacy")) == LEGACY_P7_36
    assert ids_of(ModularTask(p=7, n_tasks=8, sampling="parallelogram-legacy")) == LEGACY_P7_36[:8]
    assert ids_of(ModularTask(p=29, n_tasks=64, sampling="parallelogram-legacy", split_seed=2)) == LEGACY_P29_64_SEED2
    ood = ModularTask(p=7, n_tasks=36, sampling="parallelogram-legacy", split="ood")
    assert ids_of(ood) == sorted(set(range(49)) - set(LEGACY_P7_36))


@pytest.mark.parametrize("name", ["modular-p7-d1", "modular-p7-d2", "modular-p7-d2-fewtasks", "modular-p7-d4",
                                  "modular-p7-d4-last"])
def test_shipped_p7_models_keep_the_task_vectors_they_were_trained_on(name):
    for source in (run_from_dict(json.loads((ROOT / "models" / name / "config.json").read_text())),
                   load_run(ROOT / "configs" / "modular" / f"{name}.yaml")):
        task = source.task
        assert task.sampling == "parallelogram-legacy"
        assert ids_of(task) == LEGACY_P7_36[: task.n_tasks]
    assert load_run(ROOT / "configs" / "modular" / "base-p7.yaml").task.sampling == "parallelogram-legacy"


# ---- the new configs

@pytest.mark.parametrize("name", ["base-p11", "pilot-p7-official"])
def test_official_recipe_configs_load(name):
    run = load_run(ROOT / "configs" / "modular" / f"{name}.yaml")
    assert run.task.sampling == "parallelogram" and len(run.task.task_vectors) == run.task.n_tasks
    assert run.train.batch_size % run.task.n_tasks == 0 and run.train.balanced_batches
    assert (run.spec.tied_embed, run.spec.bias, run.spec.init) == (True, False, "he2024")
    assert not run.train.decay_norms_and_biases and not run.train.grad_clip and run.train.warmup_start == 0.01
