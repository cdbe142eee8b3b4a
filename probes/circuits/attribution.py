"""EAP and EAP-IG edge scores: each sender's delta dotted with the metric's gradient at each receiver's input, on
the exact edge-patching scale. See ``probes.circuits`` for the conventions."""
from __future__ import annotations

import einops
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase

from .graph import HEAD_INPUTS, Runs, edge_result, input_name, make_runs, norm_delta_transpose, norm_of, scale_name


NOT_DIFFERENTIABLE = ("accuracy",)  # gradient estimates of a step function are zero almost everywhere

def step_gradients(runs: Runs, embedding: Tensor, freeze: bool) -> Tensor:
    """∂metric/∂x_R of every receiver R for the base input with ``embedding`` [batch, pos, d_model] as block 0's
    resid_pre, through R's norm (its scale frozen at this run's, or not): [receiver, batch, pos, d_model].

    The gradient is taken where R's input enters linearly (hook_q / hook_k / hook_v, the MLP's hook_pre, the
    final norm's output at the query) and carried back through the projection and the norm."""
    model, graph, q = runs.model, runs.graph, runs.q
    sites = {r: get_act_name(r.kind if r.kind in HEAD_INPUTS else "pre", r.layer) for r in graph.receivers[:-1]}
    kept = sorted(set(sites.values()) | {input_name(model, r) for r in graph.receivers}
                  | {scale_name(r) for r in graph.receivers})
    saved: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: HookPoint) -> Tensor:
        saved[hook.name] = act  # type: ignore[index]
        return act

    def embed(act: Tensor, hook: HookPoint) -> Tensor:
        return embedding

    hooks = [(get_act_name("resid_pre", 0), embed)] + [(n, keep) for n in kept if n in model.hook_dict]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        resid = model(runs.base.inputs, stop_at_layer=model.cfg.n_layers)
        readout_in = model.ln_final(resid[:, q : q + 1]) if hasattr(model, "ln_final") else resid[:, q : q + 1]
        metric = runs.metric(model.unembed(readout_in)[:, 0], runs.answers).sum()
        at = [saved[n] for n in sorted(set(sites.values()))] + [readout_in]
        grads = dict(zip([*sorted(set(sites.values())), "readout"],
                         torch.autograd.grad(metric, at, allow_unused=True)))
    out = []
    for r in graph.receivers:
        if r.kind == "readout":  # the query row alone reaches the read-out's metric
            g = norm_delta_transpose(norm_of(model, r), grads["readout"].detach(), x=resid[:, q : q + 1].detach(),
                                     scale=saved.get(scale_name(r)), freeze=freeze)
            out.append(torch.zeros_like(resid).index_copy(1, torch.tensor([q], device=g.device), g))
            continue
        g = grads[sites[r]]
        if g is None:  # the site never reaches the metric
            g = torch.zeros_like(saved[sites[r]])
        block = model.blocks[r.layer]
        if r.kind in HEAD_INPUTS:
            W = {"q": block.attn.W_Q, "k": block.attn.W_K, "v": block.attn.W_V}[r.kind][r.head]  # [d_model, d_head]
            g = einops.einsum(g[:, :, r.head], W, "b p e, d e -> b p d")
        else:
            g = einops.einsum(g, block.mlp.W_in, "b p m, d m -> b p d")
        out.append(norm_delta_transpose(norm_of(model, r), g.detach(), x=saved[input_name(model, r)].detach(),
                                        scale=saved.get(scale_name(r)), freeze=freeze))
    return torch.stack(out).detach()


def receiver_gradients(runs: Runs, steps: int, freeze: bool) -> Tensor:
    """The receivers' gradients averaged over ``steps`` runs whose input embeddings go from the source run's to the
    base run's, at k / steps for k = 1..steps (1 step: the base run itself, EAP): [receiver, batch, pos, d_model]."""
    name = get_act_name("resid_pre", 0)
    base, source = runs.base_cache[name], runs.source_cache[name]
    total = None
    for k in range(1, steps + 1):
        embedding = base if k == steps else source + (k / steps) * (base - source)
        g = step_gradients(runs, embedding.detach().clone().requires_grad_(True), freeze)
        total = g if total is None else total + g
    return total / steps


def edge_attribution(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings=None) -> Result:
    """EAP (``settings.method`` "eap") or EAP-IG ("eap-ig", ``ig_steps`` steps) scores of every edge, on the scale of
    exact edge patching (base_score + score / Δ): [edge] or [edge, pos]; extras["attribution"] the raw score."""
    from . import CircuitSettings

    settings = settings or CircuitSettings(method="eap")
    if settings.method not in ("eap", "eap-ig"):
        raise ValueError(f"edge_attribution computes method 'eap' or 'eap-ig', got {settings.method!r}")
    if settings.metric in NOT_DIFFERENTIABLE:
        raise ValueError(f"The 'metric' parameter of {settings.method} must have a gradient; {settings.metric!r} is a "
                         f"step function (use it with method 'exact')")
    runs = make_runs(model, task, clean, corrupted, direction=settings.direction, metric=settings.metric)
    steps = 1 if settings.method == "eap" else settings.ig_steps
    grads = receiver_gradients(runs, steps, settings.freeze_ln)  # [receiver, batch, pos, d_model]
    graph, q = runs.graph, runs.q
    per_edge = []
    for s, r in graph.edges:
        per_pos = einops.einsum(runs.delta[s], grads[r], "b p d, b p d -> b p")
        per_edge.append(per_pos)
    scores = torch.stack(per_edge)  # [edge, batch, pos]
    if settings.positions == "all":
        scores = scores.sum(-1)
    elif settings.positions == "query":
        scores = scores[:, :, q]
    else:
        scores = einops.rearrange(scores, "e b p -> (e p) b")
    values = runs.base_metric[None] + scores  # the estimated metric of each cell's patched run
    shape = (len(graph.edges), -1) if settings.positions == "each" else (len(graph.edges),)
    return edge_result("edge_attribution", runs, values, positions=settings.positions, pos_labels=clean.pos_labels,
                       extras={"attribution": scores.mean(-1).detach().float().cpu().reshape(shape)},
                       metadata={"method": settings.method, "ig_steps": steps, "freeze_ln": settings.freeze_ln,
                                 "corruption": settings.corruption, "task": task.describe()})
