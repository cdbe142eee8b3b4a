"""Blocks computed straight from their weights, for the batched edge sweep's hot path (``edges.run_chunk``).

The sweep reruns, for every patched variant, the receiver layer's MLP and each later layer on the rows a patch can
reach. Through TransformerLens's modules that costs a dispatch per HookPoint and, for a few hundred stacked
sequences, intermediates too large for the cache. Here the same arithmetic as TransformerLens's (layer norm by
hand, ``addmm`` MLPs, the attention scores divided by ``attn_scale`` after the product, the block's own
``apply_rotary``) runs on tiles of variants, and the rows before a variant's first change enter as the base run's
cached keys and values, shared by every variant instead of repeated. Only for blocks ``interp.fast`` also fuses
(LN or no norm, learned or rotary positions, causal softmax attention, a plain MLP, float32 / float64) and only
while no hook is attached anywhere in the model (``supports``); otherwise the sweep runs hooked blocks.
``run_cached`` computes the sweep's base and source caches the same way (``block_cached``), in place of two
``run_with_cache`` passes; the reference loop keeps TransformerLens's.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import einops
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.components import TransformerBlock

from interp.fast import block_supports_fast_path, hooks_attached
from interp.spec import Model

TILE_ROWS = 6000  # rows (sequences x positions) of one tile: its MLP activations stay in the cache

PreHook = Callable[[Tensor, None], Tensor]


def supports(model: Model) -> bool:
    """Whether ``block_rows`` and ``mlp_post`` compute what the model's blocks compute: every block one that
    ``interp.fast`` covers, and no hook attached (a permanent scoring or mask hook would be skipped)."""
    return all(block_supports_fast_path(block) for block in model.blocks) and not hooks_attached(model)


def norm(ln: nn.Module, x: Tensor) -> Tensor:
    """``ln(x)`` as TransformerLens's LayerNorm computes it, without its hooks (x itself where there is no norm):
    [..., d_model] -> [..., d_model]."""
    if isinstance(ln, nn.Identity):
        return x
    x = x - x.mean(-1, keepdim=True)
    return x.div_((x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt_()).mul_(ln.w).add_(ln.b)  # in place: fresh x


def mlp_post(block: TransformerBlock, mid: Tensor, at_in: Sequence[PreHook] = (), live: Tensor | None = None,
             base: Tensor | None = None) -> Tensor:
    """resid_post = resid_mid + MLP(ln2(resid_mid)) for ``mid`` [seq, rows, d_model], each of ``at_in`` applied
    to ln2's output [seq, rows, d_model] as a hook would be: -> [seq, rows, d_model]. With ``live`` [seq, rows]
    bool, only those rows are computed, the others taken from ``base`` [seq, rows, d_model], which is written into
    and returned (pass a fresh tensor)."""
    mlp, d_model = block.mlp, mid.shape[-1]
    x = norm(block.ln2, mid)
    if at_in and x is mid:  # no norm: the hooks write in place
        x = x.clone()
    for hook in at_in:
        x = hook(x, None)
    if live is not None:  # index_select / index_copy_: boolean indexing goes element by element
        index = live.flatten().nonzero().squeeze(1)
        x, mid = x.flatten(0, 1).index_select(0, index), mid.flatten(0, 1).index_select(0, index)
    pre = torch.addmm(mlp.b_in, x.reshape(-1, d_model), mlp.W_in)
    post = pre.relu_() if mlp.act_fn is F.relu else mlp.act_fn(pre)  # in place where it can: a fresh tensor
    out = torch.addmm(mlp.b_out, post, mlp.W_out).view(mid.shape).add_(mid)
    if live is None:
        return out
    base.view(-1, d_model).index_copy_(0, index, out)
    return base


def causal_bias(n_query: int, n_key: int, diagonal: int, device: torch.device) -> Tensor:
    """0 where query row i may read key j (j <= i + ``diagonal``), -inf elsewhere: [n_query, n_key]."""
    allowed = torch.ones(n_query, n_key, dtype=torch.bool, device=device).tril(diagonal)
    return torch.zeros(n_query, n_key, device=device).masked_fill_(~allowed, float("-inf"))


def prescaled(q: Tensor, attn_scale: float) -> tuple[Tensor, bool]:
    """(q / attn_scale, True) where attn_scale is a power of two, so that (q / s)·k equals TransformerLens's
    (q·k) / s exactly and the large scores tensor is not divided; else (q, False)."""
    exact = math.log2(attn_scale).is_integer()
    return (q / attn_scale if exact else q), exact


def attention_scores(q: Tensor, k: Tensor, attn_scale: float, bias: Tensor | None = None) -> Tensor:
    """TransformerLens's scores (q·k) / attn_scale plus ``bias`` [rows, keys] (a causal mask): q [batch, rows, head,
    d_head], k [batch, keys, head, d_head] -> [batch, head, rows, keys], as one batched GEMM with the bias as its
    addend."""
    (b, rows, h, e), keys = q.shape, k.shape[1]
    q, exact = prescaled(q, attn_scale)
    qh, kh = q.transpose(1, 2).reshape(b * h, rows, e), k.permute(0, 2, 3, 1).reshape(b * h, e, keys)
    if exact and bias is not None:
        return torch.baddbmm(bias.expand(b * h, rows, keys), qh, kh).view(b, h, rows, keys)
    out = torch.bmm(qh, kh).view(b, h, rows, keys)
    out = out if exact else out.div_(attn_scale)
    return out if bias is None else out.add_(bias)


def project(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """x @ W[h] + b[h] for every head, as TransformerLens's simple_attn_linear: [seq, rows, d_model] ->
    [seq, rows, head, d_head]."""
    out = F.linear(x, einops.rearrange(W, "h d e -> (h e) d"), einops.rearrange(b, "h e -> (h e)"))
    return out.view(*x.shape[:2], *b.shape)


def scale(ln: nn.Module, x: Tensor) -> Tensor | None:
    """The norm's hook_scale of ``x`` [..., d_model]: [..., 1] (None where there is no norm)."""
    if isinstance(ln, nn.Identity):
        return None
    x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()


def block_cached(block: TransformerBlock, x: Tensor, layer: int, cache: dict[str, Tensor]) -> Tensor:
    """resid_post of the whole sequence ``x`` [batch, pos, d_model] (the block's resid_pre), writing into ``cache``
    what ``run_with_cache`` would hold at its hooks (resid_pre, ln1 / ln2 hook_scale, q, k, v before rotary,
    pattern, z, resid_mid, mlp_out, resid_post), under TransformerLens's names: -> [batch, pos, d_model]."""
    attn, cfg, rows, name = block.attn, block.cfg, x.shape[1], f"blocks.{layer}"
    cache[f"{name}.hook_resid_pre"] = x
    h = norm(block.ln1, x)
    q, k, v = (project(h, W, b) for W, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)))
    cache |= {f"{name}.attn.hook_q": q, f"{name}.attn.hook_k": k, f"{name}.attn.hook_v": v}
    if cfg.positional_embedding_type == "rotary":
        q, k = attn.apply_rotary(q, 0), attn.apply_rotary(k, 0)
    pattern = torch.softmax(attention_scores(q, k, attn.attn_scale, causal_bias(rows, rows, 0, x.device)), dim=-1)
    z = einops.einsum(pattern, v, "b h q k, b k h e -> b q h e")
    mid = x + F.linear(z.flatten(2), einops.rearrange(attn.W_O, "h e d -> d (h e)"), attn.b_O)
    cache |= {f"{name}.attn.hook_pattern": pattern, f"{name}.attn.hook_z": z, f"{name}.hook_resid_mid": mid}
    norms = {"ln1": x} if cfg.attn_only else {"ln1": x, "ln2": mid}
    for ln, at in norms.items():
        if (s := scale(getattr(block, ln), at)) is not None:
            cache[f"{name}.{ln}.hook_scale"] = s
    post = mid if cfg.attn_only else mlp_post(block, mid)
    if not cfg.attn_only:
        cache[f"{name}.hook_mlp_out"] = post - mid
    cache[f"{name}.hook_resid_post"] = post
    return post


def run_cached(model: Model, inputs: Tensor, names: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """``model.run_with_cache(inputs, names_filter=names)`` for a model ``supports`` takes, its blocks computed
    from their weights (``block_cached``): (the output, {hook name: activation}) with the activations of ``names``."""
    x, cache = model(inputs, stop_at_layer=0), {}
    for layer, block in enumerate(model.blocks):
        x = block_cached(block, x, layer, cache)
    if (s := scale(getattr(model, "ln_final", nn.Identity()), x)) is not None:
        cache["ln_final.hook_scale"] = s
    out = model(x, start_at_layer=len(model.blocks))
    return out, {n: t for n, t in cache.items() if n in names}


def keys_values(block: TransformerBlock, x: Tensor) -> tuple[Tensor, Tensor]:
    """hook_k and hook_v of ``x`` [seq, rows, d_model]: ([seq, rows, head, d_head],) * 2."""
    h = norm(block.ln1, x)
    return project(h, block.attn.W_K, block.attn.b_K), project(h, block.attn.W_V, block.attn.b_V)


def block_rows(block: TransformerBlock, x: Tensor, past_k: Tensor, past_v: Tensor, n_query: int,
               kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """resid_post of the last ``n_query`` rows of ``x`` [n * batch, rows, d_model] (variant-major), the rows
    start.. of the sequence, where the rows before start are the base run's: their hook_k (after rotary, where
    the model has it) and hook_v ``past_k``, ``past_v`` [batch, start, head, d_head], shared by all n variants. Keys and
    values of every row of ``x`` (or ``kv``, given), queries of the last ``n_query``: -> [n * batch, n_query, d_model]."""
    attn, cfg = block.attn, block.cfg
    batch, start = past_k.shape[:2]
    n, rows = x.shape[0] // batch, x.shape[1]
    if kv is None:
        h = norm(block.ln1, x)
        (k, v), h = (project(h, attn.W_K, attn.b_K), project(h, attn.W_V, attn.b_V)), h[:, rows - n_query :]
    else:
        (k, v), h = kv, norm(block.ln1, x[:, rows - n_query :])
    q = project(h, attn.W_Q, attn.b_Q)
    if cfg.positional_embedding_type == "rotary":
        q, k = attn.apply_rotary(q, start + rows - n_query), attn.apply_rotary(k, start)
    scores = attention_scores(q, k, attn.attn_scale, causal_bias(n_query, rows, rows - n_query, x.device))
    if start:
        qs, exact = prescaled(q, attn.attn_scale)
        past = einops.einsum(qs.view(n, batch, *q.shape[1:]), past_k, "n b q h e, b k h e -> n b h q k")
        scores = torch.cat([past.flatten(0, 1) if exact else past.flatten(0, 1).div_(attn.attn_scale), scores], dim=-1)
    pattern = torch.softmax(scores, dim=-1)
    z = einops.einsum(pattern[..., start:], v, "s h q k, s k h e -> s q h e")
    if start:
        past_pattern = pattern[..., :start].view(n, batch, *pattern.shape[1:3], start)
        z = z + einops.einsum(past_pattern, past_v, "n b h q k, b k h e -> n b q h e").flatten(0, 1)
    out = F.linear(z.flatten(2), einops.rearrange(attn.W_O, "h e d -> d (h e)"), attn.b_O)
    mid = x[:, rows - n_query :] + out
    return mid if cfg.attn_only else mlp_post(block, mid)
