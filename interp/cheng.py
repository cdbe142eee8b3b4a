"""Cheng, Chen & Sra's restricted attention layer, on TransformerLens blocks (``ModelSpec(layer="cheng2024")``).

The official layer (github chengxiang/transformer-functional-gradient, ``linear_transformer.py``,
``Transformer_F``) acts on the raw tokens Z = [x_i, y_i] (the query [x_q, 0] last), d + 1 wide:

    Z <- Z + Σ_heads  P Z h(Zᵀ Qᵀ K Z) M / N,

h linear, relu, exp or softmax (softmax too is divided by N), M dropping the query as a key, and the prediction
is minus the query's label slot after the last layer (their loss is (output + y)²). Their ``param_mask`` keeps
only the x-by-x block of Q and K (so y never enters a score) and the two diagonal blocks of P (x-by-x and y-by-y).

In TransformerLens terms, per head: the score of query position m on key position n is
(z_m W_Q)·(z_n W_K), so W_Q = Kᵀ and W_K = Qᵀ; the value is z_n W_V W_O, so W_V = Pᵀ and W_O = I. Here:

- the read-in is the identity (d_model = d_in = d + 1) and the read-out -e_d, both frozen;
- d_head = d_model, no 1/√d_head scale, every linear bias frozen at 0, W_O frozen at the identity;
- W_Q and W_K keep only their x-by-x block, W_V its two diagonal blocks: the other entries start at 0 and a
  gradient hook zeroes their gradient, so AdamW (no weight decay, or any) never moves them. The official code
  instead trains all entries and re-zeroes them after every step; the two agree after the first step, except that
  its per-layer clipping measures the gradient norm before the masked entries are dropped;
- the free entries start at N(0, ``INIT_STD``) as in ``run-exp.ipynb`` (``Transformer_F(n_layer, 1, d, 0.1)``).

Every hook point is TransformerLens's own (hook_q, hook_k, hook_v, hook_attn_scores, hook_pattern, hook_z,
hook_attn_out, hook_resid_*), so caching, patching and attribution run unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from transformer_lens.components import TransformerBlock

from .fast import FastTransformerBlock, hooks_attached
from .scoring import ACTIVATIONS, SCORINGS, capped_exp, mask_query_key, nonsoftmax_pattern

INIT_STD = 0.1
CHENG_LAYER = "cheng2024"
LAYERS = ("standard", CHENG_LAYER)


def weight_masks(d_model: int, d_x: int) -> dict[str, Tensor]:
    """Which entries of W_Q, W_K and W_V [d_model, d_head = d_model] may be non-zero (True: free)."""
    x_block = torch.zeros(d_model, d_model, dtype=torch.bool)
    x_block[:d_x, :d_x] = True
    p_blocks = x_block.clone()
    p_blocks[d_x:, d_x:] = True
    return {"W_Q": x_block, "W_K": x_block, "W_V": p_blocks}


def check_spec(spec) -> None:  # noqa: ANN001 (a ModelSpec; imported lazily to keep the arrow spec -> cheng)
    """Raise ValueError naming the field when ``spec`` cannot have the restricted layer."""
    wrong = {"d_in": spec.d_in is None, "attn_only": not spec.attn_only, "normalization": spec.normalization != "none",
             "positional": spec.positional != "none", "mask": spec.mask != "context",
             "d_model": spec.d_in is not None and spec.d_model != spec.d_in}
    need = {"d_in": "a real-valued task", "attn_only": "True", "normalization": "'none'", "positional": "'none'",
            "mask": "'context'", "d_model": f"d_in ({spec.d_in})"}
    for field, bad in wrong.items():
        if bad:
            raise ValueError(f"layer {CHENG_LAYER!r} needs {field} = {need[field]}, got {getattr(spec, field)!r}")


def _mask_grad(mask: Tensor):
    def hook(grad: Tensor) -> Tensor:
        return grad * mask.to(grad.device, grad.dtype)
    return hook


@torch.no_grad()
def restrict(model: nn.Module, d_x: int, seed: int) -> None:
    """Give ``model`` (a RegressionTransformer built with d_head = d_model and no attention scale) the official
    form, in place: frozen identity read-in, frozen read-out -e_{d_x}, frozen zero biases and identity W_O, and
    W_Q, W_K, W_V masked and drawn from N(0, INIT_STD)."""
    d_model = model.cfg.d_model
    eye = torch.eye(d_model)
    model.embed.linear.weight.copy_(eye)
    model.embed.linear.bias.zero_()
    model.unembed.linear.weight.zero_()
    model.unembed.linear.weight[0, d_x] = -1.0
    model.unembed.linear.bias.zero_()
    for module in (model.embed, model.unembed):
        for p in module.parameters():
            p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    masks = weight_masks(d_model, d_x)
    for block in model.blocks:
        attn = block.attn
        for name in ("b_Q", "b_K", "b_V", "b_O"):
            getattr(attn, name).zero_()
            getattr(attn, name).requires_grad_(False)
        attn.W_O.copy_(eye.expand_as(attn.W_O))
        attn.W_O.requires_grad_(False)
        for name, mask in masks.items():
            weight = getattr(attn, name)  # [n_heads, d_model, d_head]
            weight.copy_(torch.randn(weight.shape, generator=g) * INIT_STD * mask)
            weight.register_hook(_mask_grad(mask))


def official_parameters(model: nn.Module) -> Tensor:
    """The official ``allparam`` [n_layers, n_heads, 3, d + 1, d + 1] (P, Q, K per head) of a restricted model."""
    layers = []
    for block in model.blocks:
        attn = block.attn
        P = attn.W_V.transpose(-1, -2)  # W_V = Pᵀ
        Q = attn.W_K.transpose(-1, -2)  # W_K = Qᵀ
        K = attn.W_Q.transpose(-1, -2)  # W_Q = Kᵀ
        layers.append(torch.stack([P, Q, K], dim=1))
    return torch.stack(layers).detach()


class ChengBlock(FastTransformerBlock):
    """A restricted block whose training forward is fused while no hook but the built-in scoring and mask hooks
    is attached; otherwise, and in eval mode, TransformerLens's own forward.
    resid_pre [batch, pos, d_model] -> resid_post [batch, pos, d_model].

    With the official form intact (frozen zero biases, frozen identity W_O: ``official_form``) the fused pass is
    the official layer's arithmetic: scores = resid·(W_Q·W_Kᵀ)·keysᵀ over the context keys only (M drops the
    query), h(scores)/N, times keys·W_V; 2 batched products a head where TransformerLens's path takes 6 (about
    3.5x faster forward and backward at batch 3,000 on a CPU core, docs/PERFORMANCE.md). Otherwise (weights
    loaded or unfrozen by hand) the general fused pass with every projection and bias (``fused_general``)."""

    def forward(self, resid_pre: Tensor, shortformer_pos_embed: Tensor | None = None,  # type: ignore[override]
                past_kv_cache_entry=None, attention_mask: Tensor | None = None) -> Tensor:
        if (not self.training or shortformer_pos_embed is not None or past_kv_cache_entry is not None
                or attention_mask is not None or hooks_attached(self, builtin_ok=True)):
            return TransformerBlock.forward(self, resid_pre, shortformer_pos_embed, past_kv_cache_entry, attention_mask)
        if resid_pre.shape[1] < 2 or not official_form(self.attn):  # (a lone query has no key to attend to)
            return self.fused_general(resid_pre)
        attn = self.attn
        n_keys = resid_pre.shape[1] - 1
        score_weights = attn.W_Q @ attn.W_K.transpose(-1, -2)  # [head, d_model, d_model]
        keys_t = resid_pre[:, :-1].transpose(-1, -2)  # [batch, d_model, N]: the query is no key
        resid_post = resid_pre
        for head, scoring in enumerate(self._scorings):
            scores = project(resid_pre, score_weights[head]) @ keys_t  # [batch, pos, N]
            if scoring == "softmax":
                pattern = softmax_last(scores)
            else:
                pattern = capped_exp(scores, self._exp_cap) if scoring == "exp" else ACTIVATIONS[scoring](scores)
            values = project(resid_pre, attn.W_V[head] / n_keys)[:, :-1]  # [batch, N, d_model], h(scores)/N folded in
            resid_post = resid_post + pattern @ values
        return resid_post

    def fused_general(self, resid_pre: Tensor) -> Tensor:
        """The fused pass with every projection and bias, for a block that left the official form."""
        attn = self.attn
        q = torch.einsum("bpm,hmd->bphd", resid_pre, attn.W_Q) + attn.b_Q
        k = torch.einsum("bpm,hmd->bphd", resid_pre, attn.W_K) + attn.b_K
        v = torch.einsum("bpm,hmd->bphd", resid_pre, attn.W_V) + attn.b_V
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k)
        scores = mask_query_key(scores, None)  # type: ignore[arg-type]
        pattern = nonsoftmax_pattern(scores, self._scorings, self._exp_cap, softmax_over_n=True)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        return resid_pre + torch.einsum("bqhd,hdm->bqm", z, attn.W_O) + attn.b_O


def project(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weight as (weightᵀ·xᵀ)ᵀ: [batch, pos, m], [m, n] -> [batch, pos, n] (a transposed view). The same
    numbers; on MKL the thin product with the long side last is about 10x faster than x @ weight (m, n = 6)."""
    flat = x.reshape(-1, x.shape[-1])
    return (weight.transpose(0, 1) @ flat.transpose(0, 1)).transpose(0, 1).view(*x.shape[:-1], weight.shape[-1])


def softmax_last(scores: Tensor) -> Tensor:
    """torch.softmax(scores, dim=-1), written out (the max, subtracted for stability, is held constant: softmax
    does not depend on it): [..., n] -> [..., n]. At n = 14 on a CPU core torch's kernel takes 11.5 ms forward
    for [3000, 15, 14] and this 2.3 ms (4.4 ms against 16 ms with the backward)."""
    weights = torch.exp(scores - scores.detach().amax(dim=-1, keepdim=True))
    return weights / weights.sum(dim=-1, keepdim=True)


def official_form(attn: nn.Module) -> bool:
    """Whether an attention layer still has ``restrict``'s frozen parts: zero biases and identity W_O, none of
    them trainable (then the fused pass may leave them out)."""
    frozen = (attn.b_Q, attn.b_K, attn.b_V, attn.b_O, attn.W_O)
    if any(t.requires_grad for t in frozen):
        return False
    eye = torch.eye(attn.W_O.shape[-1], dtype=attn.W_O.dtype, device=attn.W_O.device)
    return bool(torch.equal(attn.W_O, eye.expand_as(attn.W_O))
                and all(not b.any() for b in (attn.b_Q, attn.b_K, attn.b_V, attn.b_O)))


def install_fused_training(model: nn.Module, scorings: tuple[str, ...], exp_cap: float | None) -> None:
    """Make every block of a restricted ``model`` a ChengBlock (in place; after ``install_scoring`` and
    ``install_context_mask``)."""
    for block in model.blocks:
        block.__class__ = ChengBlock
        block._scorings, block._exp_cap = scorings, exp_cap


def one_layer_prediction(xs: Tensor, ys: Tensor, xq: Tensor, score_matrix: Tensor, value: float | Tensor,
                         scoring: str) -> Tensor:
    """A one-layer, one-head restricted model's prediction in closed form: -value · Σ_n w_n · y_n / N with
    w_n = h(x_qᵀ·A·x_n) (softmax: normalised over the N context points), A = ``score_matrix`` [d, d] (the x block
    of W_Q·W_Kᵀ) and ``value`` the y-by-y entry of P (W_V). One step of functional gradient descent from 0 in the
    kernel h(x_qᵀ·A·x) when h is not softmax; a Nadaraya–Watson smoother when it is.
    xs [batch, N, d], ys [batch, N], xq [batch, d] -> [batch]."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    if score_matrix.shape != (xs.shape[-1], xs.shape[-1]):
        raise ValueError(f"score_matrix must be [d, d] = {[xs.shape[-1]] * 2}, got {list(score_matrix.shape)}")
    scores = torch.einsum("bd,de,bne->bn", xq, score_matrix.to(xq.dtype), xs)
    weights = torch.softmax(scores, dim=-1) if scoring == "softmax" else ACTIVATIONS[scoring](scores)
    return -value * (weights * ys).sum(-1) / xs.shape[1]


def one_layer_weights(model: nn.Module, d_x: int) -> tuple[Tensor, Tensor]:
    """The score matrix A [d_x, d_x] and value entry P_yy [] of a one-head restricted model's first layer, as
    ``one_layer_prediction`` takes them."""
    if model.cfg.n_layers != 1 or model.cfg.n_heads != 1:
        raise ValueError(f"model must have one layer and one head, got {model.cfg.n_layers} and {model.cfg.n_heads}")
    attn = model.blocks[0].attn
    return (attn.W_Q[0] @ attn.W_K[0].transpose(0, 1))[:d_x, :d_x].detach(), attn.W_V[0, d_x, d_x].detach()
