"""Attention scoring functions beyond softmax, installed as permanent hooks.

TransformerLens always computes ``pattern = softmax(attn_scores)``. For relu, linear and exp scoring
(Cheng, Chen & Sra 2024) we swap each layer's ``hook_attn_scores`` for a HookPoint that remembers its
output *after* every user hook has run, and add a permanent hook on ``hook_pattern`` that replaces the
softmax with ``h(scores) / n_keys``, where n_keys is the number of positions the query may attend to.
So ``hook_pattern`` holds the weights that actually multiply the values, and patching or caching
``hook_attn_scores`` still changes or shows what the pattern is computed from.

``install_context_mask`` gives Cheng et al.'s mask M for bidirectional models: every position attends to
every position but the last (the query), whose score is set to -inf as TransformerLens's own causal mask does.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

Scoring = Literal["softmax", "relu", "linear", "exp"]

EXP_CAP = 10.0  # exp scoring is exp(min(s, EXP_CAP)): see capped_exp


def capped_exp(scores: Tensor) -> Tensor:
    """exp(min(scores, EXP_CAP)), elementwise. Without LN nothing bounds the residual stream, so one large
    step makes the next layer's scores, and then exp of them, overflow to inf and the loss to NaN (3- and
    5-layer Cheng models did, at lr 1e-2 and 3e-3). The cap only acts on weights above e^10 ≈ 22 000 times
    a uniform one, and stops gradients there, so training can recover."""
    return torch.exp(scores.clamp(max=EXP_CAP))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "linear": lambda s: s,
    "exp": capped_exp,
}
SCORINGS: tuple[str, ...] = ("softmax", *ACTIVATIONS)


class ScoresHookPoint(HookPoint):
    """A HookPoint that keeps its last output, after all hooks, for the pattern hook to read."""

    def __call__(self, *args, **kwargs):  # type: ignore[override]
        out = super().__call__(*args, **kwargs)
        self.last = out
        return out


def nonsoftmax_pattern(scores: Tensor, scoring: str) -> Tensor:
    """h(scores) averaged over the attended keys: [batch, head, query_pos, key_pos] -> same shape.

    Masked keys carry -inf in ``scores`` (TransformerLens's IGNORE) and get weight 0."""
    allowed = torch.isfinite(scores)
    weights = ACTIVATIONS[scoring](torch.where(allowed, scores, torch.zeros_like(scores)))
    weights = torch.where(allowed, weights, torch.zeros_like(weights))
    n_keys = allowed.sum(dim=-1, keepdim=True).clamp(min=1)
    return weights / n_keys


def install_scoring(model: HookedRootModule, scoring: str) -> None:
    """Make every attention layer of ``model`` weigh its values with ``scoring`` (in place)."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if scoring == "softmax":
        return
    for block in model.blocks:
        attn = block.attn
        attn.hook_attn_scores = ScoresHookPoint()
        scores_hp = attn.hook_attn_scores

        def replace_pattern(pattern: Tensor, hook: HookPoint, scores_hp: ScoresHookPoint = scores_hp) -> Tensor:
            return nonsoftmax_pattern(scores_hp.last, scoring).to(pattern.dtype)

        attn.hook_pattern.add_hook(replace_pattern, is_permanent=True)
    model.setup()  # re-register hook names so the new HookPoints are found


def mask_query_key(scores: Tensor, hook: HookPoint) -> Tensor:
    """Scores with the last key (the query) masked out: [batch, head, query_pos, key_pos] -> same shape."""
    scores = scores.clone()
    scores[..., -1] = float("-inf")
    return scores


def install_context_mask(model: HookedRootModule) -> None:
    """Let no position of ``model`` attend to the last one (in place; call after ``install_scoring``)."""
    for block in model.blocks:
        block.attn.hook_attn_scores.add_hook(mask_query_key, is_permanent=True)
