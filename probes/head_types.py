"""Head types: how much of each head's attention goes to the previous token, itself, token 0, tokens with the same
value or role, and the x and y of its own and of earlier examples (previous-token, same-role and own-example heads).

Roles and example indices are parsed from the batch's position labels ("x0", "y0", "z0", ...).
"""
from __future__ import annotations

import re

import einops
import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.inputs import axis_labels, check_batches, model_device, run_metadata

HEAD_TYPES: dict[str, str] = {
    "prev_token": "the token just before the query",
    "self": "the query position itself",
    "first_token": "position 0 (from queries after it)",
    "same_token": "earlier tokens with the same value as the query token",
    "same_role": "earlier tokens with the same role (x, y or z slot) as the query",
    "own_x": "the x of the query's own example (when it is earlier)",
    "own_y": "the y of the query's own example (when it is earlier)",
    "earlier_x": "the x tokens of earlier examples",
    "earlier_y": "the y tokens of earlier examples",
}


def _roles(labels: tuple[str, ...], n_pos: int) -> tuple[list[str], Tensor]:
    """(role per position, example index per position) parsed from pos_labels like ("x0", "y0", "z0", ...)."""
    if len(labels) != n_pos:
        raise ValueError(f"clean.pos_labels has {len(labels)} labels for {n_pos} positions; sample it with task.sample")
    parsed = [re.fullmatch(r"([A-Za-z_]+?)(\d*)", lab) for lab in labels]
    if not all(parsed):
        raise ValueError(f"clean.pos_labels must look like 'x0', 'y0', ... or a bare role like 'query'; got {labels[:3]}")
    # a bare role (complex-zeros' final "query") belongs to an example of its own, after every numbered one
    last = max((int(m.group(2)) for m in parsed if m and m.group(2)), default=-1)  # type: ignore[union-attr]
    return ([m.group(1) for m in parsed],  # type: ignore[union-attr]
            torch.tensor([int(m.group(2)) if m.group(2) else last + 1 for m in parsed]))  # type: ignore[union-attr]


def head_type_masks(clean: Batch) -> dict[str, Tensor]:
    """For each of ``HEAD_TYPES``, which keys count: [batch or 1, query_pos, key_pos] bool."""
    n_pos = clean.inputs.shape[1]
    role, idx = _roles(clean.pos_labels, n_pos)
    device = clean.inputs.device
    idx = idx.to(device)
    qpos, kpos = torch.arange(n_pos, device=device)[:, None], torch.arange(n_pos, device=device)[None, :]
    before = kpos < qpos
    codes = {r: i for i, r in enumerate(sorted(set(role)))}
    rc = torch.tensor([codes[r] for r in role], device=device)
    is_x, is_y = rc == codes.get("x", -1), rc == codes.get("y", -1)
    tokens = clean.inputs
    same = tokens[:, :, None] == tokens[:, None, :]
    if tokens.dim() == 3:  # real-valued tokens: every channel equal
        same = same.all(-1)
    own = idx[None, :] == idx[:, None]
    earlier = idx[None, :] < idx[:, None]
    masks = {
        "prev_token": kpos == qpos - 1,
        "self": kpos == qpos,
        "first_token": (kpos == 0) & (qpos >= 1),
        "same_token": before[None] & same,
        "same_role": before & (rc[None, :] == rc[:, None]),
        "own_x": before & own & is_x[None, :],
        "own_y": before & own & is_y[None, :],
        "earlier_x": earlier & is_x[None, :],
        "earlier_y": earlier & is_y[None, :],
    }
    return {k: (m if m.dim() == 3 else m[None]) for k, m in masks.items()}


@torch.no_grad()
def head_types(model: Model, task: TaskBase, clean: Batch, queries: str | None = None) -> Result:
    """Share of each head's attention that goes to each of ``HEAD_TYPES``: scores [layer, head, type].

    A share is |pattern[q, k]| summed over the keys of the type, over |pattern[q, :]| summed (for softmax the
    row already sums to 1). It is averaged over sequences and query positions where the type has at least one
    key (e.g. own_y only from z positions), and ``queries`` (a role such as "y") restricts the query positions;
    a type with no such query scores NaN. ``extras["n_queries"]`` [type] counts the (sequence, query) pairs."""
    check_batches(model, task, clean, None)
    clean = clean.to(model_device(model))
    n_pos = clean.inputs.shape[1]
    masks = head_type_masks(clean)
    role, _ = _roles(clean.pos_labels, n_pos)
    if queries is not None and queries not in role:
        raise ValueError(f"queries must be a role among {', '.join(sorted(set(role)))} or None, got {queries!r}")
    use_q = torch.tensor([queries is None or r == queries for r in role], device=clean.inputs.device)
    names = [get_act_name("pattern", l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(clean.inputs, names_filter=names)
    weights = torch.stack([cache[n] for n in names]).abs()  # [layer, batch, head, q, k]
    share = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    scores, counts = [], []
    for mask in masks.values():
        m = mask.to(share.dtype)  # [batch or 1, q, k]
        defined = (mask.any(-1) & use_q).to(share.dtype).expand(clean.inputs.shape[0], n_pos)  # [batch, q]
        got = einops.einsum(share, m.expand(clean.inputs.shape[0], n_pos, n_pos), "l b h q k, b q k -> l b h q")
        total = einops.einsum(got, defined, "l b h q, b q -> l h")
        n = defined.sum()
        scores.append(total / n if n > 0 else torch.full_like(total, float("nan")))
        counts.append(n)
    result_scores = torch.stack(scores, dim=-1).float().cpu()
    axes = ("layer", "head", "type")
    return Result("head_types", result_scores, axes, axis_labels(model, clean, axes) | {"type": list(HEAD_TYPES)},
                  extras={"n_queries": torch.stack(counts).float().cpu()},
                  metadata=run_metadata(task, clean, "head_types", "attention share", queries=queries))
