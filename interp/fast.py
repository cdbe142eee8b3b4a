"""A fused forward path for TransformerLens blocks, taken only when no hook could tell the difference.

TransformerLens writes layer norm out by hand (9 calls a pass in a 2-block model, since a block applies
``ln1`` to its query, key and value inputs separately), computes attention scores, mask, softmax and a NaN
guard explicitly, and projects Q, K and V with three GEMMs. That costs about a quarter of a training step
(docs/PERFORMANCE.md). ``install_fast_path`` swaps the class of each ``TransformerBlock`` and ``LayerNorm``
for a subclass whose ``forward`` does the same arithmetic with fused ops (``F.layer_norm``, ``ln1`` once,
one QKV GEMM, ``F.scaled_dot_product_attention``), **but only while no hook is attached** to any HookPoint
of that module, and only in training mode (``model.train()``, the default of a freshly built model; the
training loop's evaluations and every loaded checkpoint run in eval mode, so analyses see TransformerLens's
arithmetic bit for bit). Attach a hook anywhere inside (``run_with_cache``, ``run_with_hooks``, patching, a
permanent scoring or mask hook) and the module runs TransformerLens's own forward, so every hook fires
where TransformerLens fires it and sees what TransformerLens computes. Parameters, names and state dicts
are unchanged: the subclasses add no state.

The fast block covers what our ModelSpec builds: LN or no normalisation, learned or rotary positions,
causal softmax attention, a plain MLP (or none). Anything else (a key-value cache, an attention mask, the
``use_attn_result``/split-input flags, other architectures) falls back to TransformerLens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from transformer_lens.components import LayerNorm, TransformerBlock
from transformer_lens.components.mlps.mlp import MLP
from transformer_lens.hook_points import HookPoint


def hooks_attached(module: nn.Module, builtin_ok: bool = False) -> bool:
    """Whether any HookPoint inside ``module`` (or a global module hook) would run on a forward or backward. With
    ``builtin_ok``, the permanent scoring and mask hooks ``interp.scoring`` installs (marked ``builtin``) do not count."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or torch_module._global_backward_hooks:
        return True

    def only_builtin(m: HookPoint) -> bool:
        return len(m._forward_hooks) == len(m.fwd_hooks) and all(getattr(h.user_hook, "builtin", False) for h in m.fwd_hooks)

    return any(
        m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        or (m._forward_hooks and not (builtin_ok and only_builtin(m)))
        for m in module.modules()
        if isinstance(m, HookPoint)
    )


class FastLayerNorm(LayerNorm):
    """TransformerLens's LayerNorm, as ``F.layer_norm`` while neither ``hook_scale`` nor ``hook_normalized``
    has a hook. [..., d_model] -> [..., d_model]."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not self.training or x.dtype not in (torch.float32, torch.float64) or hooks_attached(self):
            return super().forward(x)
        return F.layer_norm(x, (self.length,), self.w, self.b, self.eps)


def block_supports_fast_path(block: TransformerBlock) -> bool:
    """Whether the fused forward computes exactly what this block's configuration computes."""
    cfg, attn = block.cfg, block.attn
    return (
        type(attn).__name__ == "Attention"
        and cfg.normalization_type in ("LN", None)
        and cfg.positional_embedding_type in ("standard", "rotary")
        and (attn._attention_dir_override or cfg.attention_dir) == "causal"
        and not cfg.use_local_attn
        and cfg.n_key_value_heads is None
        and not cfg.parallel_attn_mlp
        and not cfg.use_normalization_before_and_after
        and not cfg.use_qk_norm
        and cfg.clip_qkv is None
        and not cfg.use_logn_attn
        and not cfg.use_attention_sinks
        and not cfg.load_in_4bit
        and (cfg.attn_scores_soft_cap is None or cfg.attn_scores_soft_cap <= 0)
        and (cfg.attn_only or (type(block.mlp) is MLP and not cfg.is_layer_norm_activation()))
        and cfg.dtype in (torch.float32, torch.float64)
    )


class FastTransformerBlock(TransformerBlock):
    """A TransformerBlock whose forward is fused while no hook is attached inside it. resid_pre
    [batch, pos, d_model] -> resid_post [batch, pos, d_model]."""

    def forward(self, resid_pre: Tensor, shortformer_pos_embed: Tensor | None = None,  # type: ignore[override]
                past_kv_cache_entry=None, attention_mask: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if (shortformer_pos_embed is not None or past_kv_cache_entry is not None or attention_mask is not None
                or cfg.use_attn_result or cfg.use_split_qkv_input or cfg.use_attn_in or cfg.use_hook_mlp_in
                or not self.training or not getattr(self, "_fast_ok", False) or hooks_attached(self)):
            return super().forward(resid_pre, shortformer_pos_embed, past_kv_cache_entry, attention_mask)
        resid_mid = resid_pre + self.fused_attention(self.ln1(resid_pre))
        if cfg.attn_only:
            return resid_mid
        mlp = self.mlp
        pre = F.linear(self.ln2(resid_mid), mlp.W_in.T, mlp.b_in)
        return resid_mid + F.linear(mlp.act_fn(pre), mlp.W_out.T, mlp.b_out)

    def fused_attention(self, x: Tensor) -> Tensor:
        """Causal softmax attention of the normalised residual: [batch, pos, d_model] -> [batch, pos, d_model]."""
        attn = self.attn
        w_qkv = rearrange([attn.W_Q, attn.W_K, attn.W_V], "three h m d -> (three h d) m")
        b_qkv = rearrange([attn.b_Q, attn.b_K, attn.b_V], "three h d -> (three h d)")
        q, k, v = rearrange(F.linear(x, w_qkv, b_qkv), "b p (three h d) -> three b p h d", three=3, h=self.cfg.n_heads)
        if self.cfg.positional_embedding_type == "rotary":
            q, k = attn.apply_rotary(q), attn.apply_rotary(k)
        q, k, v = (rearrange(t, "b p h d -> b h p d") for t in (q, k, v))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / attn.attn_scale)
        return F.linear(rearrange(z, "b h p d -> b p (h d)"), rearrange(attn.W_O, "h d m -> m (h d)"), attn.b_O)


FAST_CLASSES: dict[type, type] = {LayerNorm: FastLayerNorm, TransformerBlock: FastTransformerBlock}


def install_fast_path(model: nn.Module) -> nn.Module:
    """Give every LayerNorm and supported TransformerBlock of ``model`` the hook-aware fused forward (in place)."""
    for m in model.modules():
        if type(m) in FAST_CLASSES:
            m.__class__ = FAST_CLASSES[type(m)]
            if isinstance(m, FastTransformerBlock):
                m._fast_ok = block_supports_fast_path(m)  # type: ignore[assignment]
    return model


def remove_fast_path(model: nn.Module) -> nn.Module:
    """Undo ``install_fast_path``: TransformerLens's own forward everywhere, hooks or not (in place)."""
    for m in model.modules():
        for tl, fast in FAST_CLASSES.items():
            if isinstance(m, fast):  # subclasses too (interp.cheng.ChengBlock)
                m.__class__ = tl
    return model
