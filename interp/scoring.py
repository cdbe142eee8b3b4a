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

EXP_CAP = 10.0  # exp scoring is exp(min(s, EXP_CAP)) in the standard layer: see capped_exp


def capped_exp(scores: Tensor, cap: float | None = EXP_CAP) -> Tensor:
    """exp(min(scores, cap)), elementwise (``cap`` None: plain exp). Without LN nothing bounds the residual
    stream of the standard layer, so one large step makes the next layer's scores, and then exp of them,
    overflow to inf and the loss to NaN (3- and 5-layer Cheng models did, at lr 1e-2 and 3e-3). The cap only
    acts on weights above e^10 ≈ 22 000 times a uniform one, and stops gradients there, so training can
    recover. Cheng et al.'s restricted layer (``interp.cheng``) is uncapped, as in their code."""
    return torch.exp(scores if cap is None else scores.clamp(max=cap))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "linear": lambda s: s,
    "exp": torch.exp,
}
SCORINGS: tuple[str, ...] = ("softmax", *ACTIVATIONS)


def head_scorings(scoring: str, n_heads: int) -> tuple[str, ...]:
    """One scoring per head: ``"exp"`` gives every head exp; ``"exp,linear"`` gives head 0 exp and head 1
    linear (Cheng et al.'s 2-head model). Raises ValueError naming ``scoring``."""
    parts = tuple(part.strip() for part in str(scoring).split(","))
    bad = [part for part in parts if part not in SCORINGS]
    if bad or (len(parts) > 1 and len(parts) != n_heads):
        raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, or one of them per head separated by "
                         f"commas ({n_heads} head(s)), got {scoring!r}")
    return parts * n_heads if len(parts) == 1 else parts


def nonsoftmax_pattern(scores: Tensor, scoring: str | tuple[str, ...], exp_cap: float | None = EXP_CAP,
                       softmax_over_n: bool = False) -> Tensor:
    """The weights that multiply the values: [batch, head, query_pos, key_pos] -> same shape.

    Per head (``scoring`` one name, or one per head): h(scores) averaged over the attended keys, h one of
    ``ACTIVATIONS`` (exp capped at ``exp_cap``); softmax is TransformerLens's softmax over the attended keys,
    divided by their number too when ``softmax_over_n`` (Cheng et al.'s layer divides every activation by N).
    Masked keys carry -inf in ``scores`` (TransformerLens's IGNORE) and get weight 0."""
    names = (scoring,) * scores.shape[1] if isinstance(scoring, str) else scoring
    allowed = torch.isfinite(scores)
    n_keys = allowed.sum(dim=-1, keepdim=True).clamp(min=1)
    zeroed = torch.where(allowed, scores, torch.zeros_like(scores))
    heads = []
    for head, name in enumerate(names):
        if name == "softmax":
            weights = torch.softmax(scores[:, head], dim=-1).nan_to_num(0.0)
            heads.append(weights / n_keys[:, head] if softmax_over_n else weights)
            continue
        h = (lambda s: capped_exp(s, exp_cap)) if name == "exp" else ACTIVATIONS[name]
        weights = torch.where(allowed[:, head], h(zeroed[:, head]), torch.zeros_like(zeroed[:, head]))
        heads.append(weights / n_keys[:, head])
    return torch.stack(heads, dim=1)


class ScoresHookPoint(HookPoint):
    """A HookPoint that keeps its last output, after all hooks, for the pattern hook to read."""

    def __call__(self, *args, **kwargs):  # type: ignore[override]
        out = super().__call__(*args, **kwargs)
        self.last = out
        return out


def install_scoring(model: HookedRootModule, scoring: str, exp_cap: float | None = EXP_CAP,
                    softmax_over_n: bool = False) -> None:
    """Make every attention layer of ``model`` weigh its values with ``scoring`` (one name, or one per head
    separated by commas; see ``nonsoftmax_pattern``), in place. Plain softmax leaves TransformerLens as it is."""
    names = head_scorings(scoring, model.cfg.n_heads)
    if set(names) == {"softmax"} and not softmax_over_n:
        return
    for block in model.blocks:
        attn = block.attn
        attn.hook_attn_scores = ScoresHookPoint()
        scores_hp = attn.hook_attn_scores

        def replace_pattern(pattern: Tensor, hook: HookPoint, scores_hp: ScoresHookPoint = scores_hp) -> Tensor:
            return nonsoftmax_pattern(scores_hp.last, names, exp_cap, softmax_over_n).to(pattern.dtype)

        replace_pattern.builtin = True  # type: ignore[attr-defined]  (hooks_attached(builtin_ok=True) lets it pass)
        attn.hook_pattern.add_hook(replace_pattern, is_permanent=True)
    model.setup()  # re-register hook names so the new HookPoints are found


def mask_query_key(scores: Tensor, hook: HookPoint) -> Tensor:
    """Scores with the last key (the query) masked out: [batch, head, query_pos, key_pos] -> same shape."""
    scores = scores.clone()
    scores[..., -1] = float("-inf")
    return scores


mask_query_key.builtin = True  # type: ignore[attr-defined]


def install_context_mask(model: HookedRootModule) -> None:
    """Let no position of ``model`` attend to the last one (in place; call after ``install_scoring``)."""
    for block in model.blocks:
        block.attn.hook_attn_scores.add_hook(mask_query_key, is_permanent=True)
