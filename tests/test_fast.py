"""The fused training path (interp.fast) against TransformerLens's own forward: same outputs and gradients,
every hook honoured, caches identical, and the fused path taken only when nothing is hooked."""
from __future__ import annotations

import pytest
import torch

import interp.fast as fast
from interp.fast import FastTransformerBlock, remove_fast_path
from interp.spec import ModelSpec
from interp.tasks import LinearTask, ModularTask
from interp.train import loss_fn

CASES = {
    "modular-rotary-relu": (ModularTask(p=11), dict(positional="rotary", act_fn="relu")),
    "modular-learned-gelu": (ModularTask(p=7), {}),
    "linear-LN": (LinearTask(d_x=3), {}),
    "linear-attn-only-noLN": (LinearTask(d_x=3), dict(attn_only=True, normalization="none")),
}


def pair(name: str):
    """A model on the fast path and a twin with the same weights on TransformerLens's path, plus a batch."""
    task, knobs = CASES[name]
    spec = ModelSpec.for_task(task, 6, n_layers=2, n_heads=2, d_model=16, **knobs)
    fast_model, tl_model = spec.build().train(), remove_fast_path(spec.build()).train()
    tl_model.load_state_dict(fast_model.state_dict())
    return fast_model, tl_model, task.sample(5, 6, torch.Generator().manual_seed(1))


def grads(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn(model(batch.inputs), batch).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", CASES)
def test_fast_path_matches_transformer_lens(name: str) -> None:
    fast_model, tl_model, batch = pair(name)
    assert all(isinstance(b, FastTransformerBlock) and b._fast_ok for b in fast_model.blocks)
    torch.testing.assert_close(fast_model(batch.inputs), tl_model(batch.inputs), atol=1e-5, rtol=1e-5)
    g_fast, g_tl = grads(fast_model, batch), grads(tl_model, batch)
    assert g_fast.keys() == g_tl.keys() and g_fast
    for key in g_fast:
        torch.testing.assert_close(g_fast[key], g_tl[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.parametrize("name", CASES)
def test_fast_path_taken_only_without_hooks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_model, _, batch = pair(name)
    calls = []
    sdpa = fast.F.scaled_dot_product_attention
    monkeypatch.setattr(fast.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    fast_model(batch.inputs)
    assert len(calls) == fast_model.cfg.n_layers
    calls.clear()
    fast_model.run_with_cache(batch.inputs)
    assert calls == []
    calls.clear()
    fast_model.run_with_hooks(batch.inputs, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda x, hook: x)])
    assert len(calls) == 1  # block 0 has no hook: it stays fused; block 1 runs TransformerLens's forward


@pytest.mark.parametrize("name", CASES)
def test_every_hook_point_is_honoured(name: str) -> None:
    """A hook that doubles an activation changes the output exactly as it does on TransformerLens's path."""
    fast_model, tl_model, batch = pair(name)
    for hook_name in fast_model.hook_dict:
        seen: list[str] = []

        def double(x: torch.Tensor, hook) -> torch.Tensor:
            seen.append(hook.name)
            return x * 2

        out_fast = fast_model.run_with_hooks(batch.inputs, fwd_hooks=[(hook_name, double)])
        n_fast = len(seen)
        out_tl = tl_model.run_with_hooks(batch.inputs, fwd_hooks=[(hook_name, double)])
        assert n_fast == len(seen) - n_fast, hook_name
        torch.testing.assert_close(out_fast, out_tl, atol=1e-5, rtol=1e-5, msg=hook_name)


@pytest.mark.parametrize("name", CASES)
def test_cache_equals_transformer_lens(name: str) -> None:
    fast_model, tl_model, batch = pair(name)
    _, cache_fast = fast_model.run_with_cache(batch.inputs)
    _, cache_tl = tl_model.run_with_cache(batch.inputs)
    assert set(cache_fast.keys()) == set(cache_tl.keys())
    for key in cache_tl.keys():
        torch.testing.assert_close(cache_fast[key], cache_tl[key], atol=1e-6, rtol=1e-6, msg=key)


def test_backward_hooks_are_honoured() -> None:
    fast_model, tl_model, batch = pair("modular-rotary-relu")
    seen: dict[str, torch.Tensor] = {}
    for model, tag in ((fast_model, "fast"), (tl_model, "tl")):
        model.blocks[0].hook_attn_out.add_hook(lambda g, hook, tag=tag: seen.__setitem__(tag, g[0].clone()), dir="bwd")
        loss_fn(model(batch.inputs), batch).backward()
        model.reset_hooks()
    torch.testing.assert_close(seen["fast"], seen["tl"], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("knobs", [dict(scoring="relu"), dict(normalization="LNPre")])
def test_unsupported_blocks_fall_back(knobs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-softmax scoring (a permanent hook) and other normalisations run TransformerLens's block forward."""
    task = LinearTask(d_x=3)
    spec = ModelSpec.for_task(task, 6, n_layers=2, n_heads=2, d_model=16, **knobs)
    fast_model, tl_model = spec.build().train(), remove_fast_path(spec.build()).train()
    tl_model.load_state_dict(fast_model.state_dict())
    batch = task.sample(4, 6, torch.Generator().manual_seed(0))
    monkeypatch.setattr(fast.F, "scaled_dot_product_attention", lambda *a, **k: pytest.fail("fused attention ran"))
    torch.testing.assert_close(fast_model(batch.inputs), tl_model(batch.inputs), atol=1e-6, rtol=1e-5)


def test_eval_mode_is_transformer_lens_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A built model starts in eval mode, where nothing is fused: model(x) equals run_with_cache's output
    exactly, as on plain TransformerLens. The training loop's .train() turns the fused path on."""
    fast_model, tl_model, batch = pair("modular-rotary-relu")
    fast_model.eval()
    monkeypatch.setattr(fast.F, "scaled_dot_product_attention", lambda *a, **k: pytest.fail("fused attention ran"))
    out, _ = fast_model.run_with_cache(batch.inputs)
    assert torch.equal(out, fast_model(batch.inputs))
    assert torch.equal(out, tl_model.eval()(batch.inputs))
    task, knobs = CASES["modular-rotary-relu"]
    assert not ModelSpec.for_task(task, 6, n_layers=1, n_heads=2, d_model=16, **knobs).build().training
