"""Circuit-only runs and faithfulness: the metric of the model with every edge outside a circuit ablated, against the
number of top edges, and completeness (the full graph minus the circuit). See ``probes.circuits``."""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import einops
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.metrics import Answers, resolve_metric
from probes.settings import ABLATIONS

from .edges import frozen_scale, split_inputs
from .graph import HEAD_INPUTS, Graph, biases, cache_names, check_inputs, scale_name, sender_outputs

Hook = Callable[[Tensor, HookPoint], Tensor]


def ablated_outputs(model: Model, clean_cache, corrupted_cache, ablation: str) -> Tensor:
    """What an edge outside the circuit carries from each sender: [sender, batch or 1, pos, d_model]."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    clean = sender_outputs(model, clean_cache)
    if ablation == "zero":
        return torch.zeros_like(clean[:, :1])
    if ablation == "mean":
        return clean.mean(1, keepdim=True)
    return sender_outputs(model, corrupted_cache)


def dense_masks(graph: Graph, cell_masks: Tensor, positions: str, n_pos: int, q: int) -> Tensor:
    """[variant, sender, receiver, pos] float, 1 where the edge (at that row) is in the circuit, from cell masks
    [variant, edge] ("all": every row; "query": the query row, the other rows always in) or [variant, edge, pos]."""
    n = cell_masks.shape[0]
    if positions == "each":
        per_row = cell_masks
    elif positions == "all":
        per_row = einops.repeat(cell_masks, "v e -> v e p", p=n_pos)
    else:
        per_row = torch.ones(*cell_masks.shape, n_pos, dtype=torch.bool, device=cell_masks.device)
        per_row[:, :, q] = cell_masks
    dense = torch.ones(n, len(graph.senders), len(graph.receivers), n_pos, device=cell_masks.device)
    s, r = torch.tensor(graph.edges, device=cell_masks.device).T
    dense[:, s, r] = per_row.float()
    return dense


def circuit_hooks(model: Model, graph: Graph, dense: Tensor, ablated: Tensor, scales: dict[str, Tensor] | None,
                  n: int) -> list[tuple[str, Hook]]:
    """Hooks (under ``split_inputs``) that record each sender's output in the run and replace each receiver's input
    by its circuit input: its senders' outputs where the edge is in, their ablated outputs where not, plus biases."""
    outs: list[Tensor] = []  # sender outputs of this run, [n, batch, pos, d_model], in sender order
    bias = biases(model, graph)
    index = {r: i for i, r in enumerate(graph.receivers)}

    def circuit_input(receivers: list[int]) -> Tensor:
        """[(n batch), pos, receiver, d_model] for receivers that read the same senders."""
        n_up = graph.n_upstream(graph.receivers[receivers[0]])
        got, abl = torch.stack(outs[:n_up], dim=2), ablated[:n_up]  # [n, b, s, p, d], [s, b|1, p, d]
        diff = got - einops.rearrange(abl, "s b p d -> 1 b s p d")
        x = einops.einsum(dense[:, :n_up][:, :, receivers], diff, "n s r p, n b s p d -> n b p r d")
        x = x + einops.rearrange(abl.sum(0), "b p d -> 1 b p 1 d") + bias[receivers][None, None, None]
        return einops.rearrange(x, "n b p r d -> (n b) p r d")

    def record(act: Tensor, hook: HookPoint) -> Tensor:
        outs.append(einops.rearrange(act, "(n b) p d -> n b p d", n=n))
        return act

    def record_heads(layer: int) -> Hook:
        def hook(z: Tensor, hook: HookPoint) -> Tensor:
            per_variant = einops.rearrange(z, "(n b) p h e -> n b p h e", n=n)
            heads = einops.einsum(per_variant, model.blocks[layer].attn.W_O, "n b p h e, h e d -> h n b p d")
            outs.extend(heads.unbind(0))
            return z
        return hook

    def replace(receivers: list[int], squeeze: bool) -> Hook:
        def hook(act: Tensor, hook: HookPoint) -> Tensor:
            x = circuit_input(receivers)
            return x[:, :, 0] if squeeze else x
        return hook

    hooks = [(get_act_name("resid_pre", 0), record)]
    for l in range(model.cfg.n_layers):
        for t in HEAD_INPUTS:
            heads = [index[r] for r in graph.receivers if r.kind == t and r.layer == l]
            hooks.append((get_act_name(f"{t}_input", l), replace(heads, squeeze=False)))
        hooks.append((get_act_name("z", l), record_heads(l)))
        if not model.cfg.attn_only:
            mlp = next(i for i, r in enumerate(graph.receivers) if r.kind == "mlp" and r.layer == l)
            hooks += [(get_act_name("mlp_in", l), replace([mlp], squeeze=True)), (get_act_name("mlp_out", l), record)]
    hooks.append((get_act_name("resid_post", model.cfg.n_layers - 1), replace([len(graph.receivers) - 1], squeeze=True)))
    for name, scale in (scales or {}).items():
        hooks.append((name, frozen_scale(einops.repeat(scale, "b ... -> (n b) ...", n=n))))
    return hooks


@torch.no_grad()
def circuit_metric(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, masks: Tensor, *,
                   positions: str = "all", ablation: str = "resample", freeze_ln: bool = True,
                   metric: str | None = None, max_batch: int = 512) -> Tensor:
    """The metric of the circuit-only model on the clean input for each circuit of ``masks`` ([circuit, edge] bool,
    or [circuit, edge, pos] for positions "each"): [circuit, batch]. Edges outside a circuit carry the ``ablation``
    of their sender; each receiver's norm scale is frozen at the clean run's unless ``freeze_ln`` is False."""
    check_inputs(model, task, clean, corrupted, "denoise")
    _, metric_fn = resolve_metric(task, metric)
    device = next(model.parameters()).device
    clean, corrupted = clean.to(device), corrupted.to(device)
    graph, q, n_pos, batch = Graph.of(model), clean.query_pos, clean.inputs.shape[1], clean.inputs.shape[0]
    names = cache_names(model)
    _, clean_cache = model.run_with_cache(clean.inputs, names_filter=lambda n: n in names)
    _, corrupted_cache = model.run_with_cache(corrupted.inputs, names_filter=lambda n: n in names)
    ablated = ablated_outputs(model, clean_cache, corrupted_cache, ablation)
    scales = None
    if freeze_ln:
        scales = {scale_name(r): clean_cache[scale_name(r)] for r in graph.receivers
                  if scale_name(r) in clean_cache.cache_dict}
    answers = Answers.of(clean, corrupted)
    masks = masks.to(device)
    per_chunk = max(1, max_batch // batch)
    values = []
    with split_inputs(model):
        for i in range(0, len(masks), per_chunk):
            dense = dense_masks(graph, masks[i : i + per_chunk], positions, n_pos, q)
            n = len(dense)
            hooks = circuit_hooks(model, graph, dense, ablated, scales, n)
            out = model.run_with_hooks(einops.repeat(clean.inputs, "b ... -> (n b) ...", n=n), fwd_hooks=hooks)
            repeated = Answers(*(einops.repeat(a, "b ... -> (n b) ...", n=n) for a in (answers.clean, answers.corrupted)))
            values.append(einops.rearrange(metric_fn(out[:, q], repeated), "(n b) -> n b", n=n))
    return torch.cat(values)


def ranked_cells(scores: Result) -> Tensor:
    """The flat indices of an edge Result's cells by |score - base_score| (0 denoising, 1 noising), largest first."""
    base = 0.0 if scores.metadata.get("direction", "denoise") == "denoise" else 1.0
    effect = (scores.scores - base).abs().flatten().nan_to_num(0.0)
    return torch.argsort(effect, descending=True, stable=True)


def top_cells(scores: Result, k: int) -> Tensor:
    """The ``k`` cells of an edge Result with the largest effect (``ranked_cells``), as a mask of its shape."""
    mask = torch.zeros(scores.scores.numel(), dtype=torch.bool)
    mask[ranked_cells(scores)[:k]] = True
    return mask.reshape(scores.scores.shape)


def default_ks(n_cells: int, top: int) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, ... up to every cell, and ``top``."""
    ks, step = {0, n_cells, min(top, n_cells)}, 1
    while step < n_cells:
        ks |= {k for k in (step, 2 * step, 5 * step) if k < n_cells}
        step *= 10
    return sorted(ks)


def faithfulness(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings=None,
                 scores: Result | None = None, ks: Sequence[int] | None = None) -> Result:
    """Faithfulness of the top-k circuits against k: scores [k] = (m(C_k) - m(∅)) / (m(full) - m(∅)) for the
    circuit of the k cells with the largest effect in ``scores`` (default: ``edge_scores`` by ``settings.method``);
    extras: "metric" m(C_k), "completeness" the same scale for the full graph minus C_k, "complement_metric"."""
    from . import CircuitSettings, edge_scores

    settings = settings or CircuitSettings()
    scores = scores if scores is not None else edge_scores(model, task, clean, corrupted, settings)
    positions = scores.metadata.get("positions", settings.positions)
    n_cells = scores.scores.numel()
    ks = sorted(set(default_ks(n_cells, settings.top) if ks is None else ks))
    if any(not 0 <= k <= n_cells for k in ks):
        raise ValueError(f"ks must lie in 0..{n_cells} (the number of cells), got {ks}")
    circuits = torch.stack([top_cells(scores, k) for k in ks])
    masks = torch.cat([circuits, ~circuits]).reshape(2 * len(ks), *scores.scores.shape)
    values = circuit_metric(model, task, clean, corrupted, masks, positions=positions, ablation=settings.ablation,
                            freeze_ln=settings.freeze_ln, metric=scores.metadata.get("metric", settings.metric),
                            max_batch=settings.max_batch).float().cpu()
    inside, outside = values[: len(ks)], values[len(ks):]
    with torch.no_grad():
        _, metric_fn = resolve_metric(task, scores.metadata.get("metric", settings.metric))
        device = next(model.parameters()).device
        full = metric_fn(model(clean.inputs.to(device))[:, clean.query_pos],
                         Answers.of(clean.to(device), corrupted.to(device))).float().cpu().mean().item()
    empty = outside[ks.index(n_cells)].mean().item() if n_cells in ks else circuit_metric(
        model, task, clean, corrupted, torch.zeros(1, *scores.scores.shape, dtype=torch.bool), positions=positions,
        ablation=settings.ablation, freeze_ln=settings.freeze_ln, metric=scores.metadata.get("metric", settings.metric),
    ).float().mean().item()
    denom = full - empty
    if denom == 0:
        warnings.warn("the full and the fully ablated model have the same mean metric: faithfulness is undefined (nan)")
        denom = float("nan")
    cell_labels = scores.ticks("edge") if positions != "each" else [
        f"{e} @ {p}" for e in scores.ticks("edge") for p in scores.ticks("pos")]
    return Result(
        kind="faithfulness", scores=(inside.mean(-1) - empty) / denom, axes=("k",), labels={"k": [str(k) for k in ks]},
        per_example=((inside - empty) / denom).T,
        extras={"metric": inside.mean(-1), "completeness": (outside.mean(-1) - empty) / denom,
                "complement_metric": outside.mean(-1)},
        metadata={"method": scores.metadata.get("method"), "ablation": settings.ablation, "positions": positions,
                  "freeze_ln": settings.freeze_ln, "metric": scores.metadata.get("metric"), "full_metric": full,
                  "empty_metric": empty, "n_cells": n_cells, "top": min(settings.top, n_cells),
                  "circuit": [cell_labels[i] for i in ranked_cells(scores)[: settings.top].tolist()],
                  "value_name": "faithfulness", "scale": "0 = every edge ablated, 1 = the full model"},
    )
