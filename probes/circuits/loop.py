"""Exact edge patching the plain way: one hooked forward pass of the whole model per edge (and row), the reference
the batched sweep (``edges.edge_patch``) is checked against; and the split-input and frozen-scale hooks it and
``circuit_runs`` use."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase

from .graph import HEAD_INPUTS, Node, cells, edge_result, make_runs, scale_name

Hook = Callable[[Tensor, HookPoint], Tensor]


@contextlib.contextmanager
def split_inputs(model: Model) -> Iterator[None]:
    """TransformerLens's per-head hook_q_input / hook_k_input / hook_v_input and hook_mlp_in, on while inside."""
    cfg = model.cfg
    old = cfg.use_split_qkv_input, cfg.use_hook_mlp_in
    cfg.use_split_qkv_input, cfg.use_hook_mlp_in = True, True
    try:
        yield
    finally:
        cfg.use_split_qkv_input, cfg.use_hook_mlp_in = old


def frozen_scale(scale: Tensor) -> Hook:
    """A hook on a norm's hook_scale returning the base run's ``scale`` [batch, pos, 1] (broadcast over heads)."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        return scale.reshape(*scale.shape[:2], *[1] * (act.dim() - 2)).expand_as(act)

    return hook


def receiver_scale(receiver: Node, scale: Tensor) -> Hook:
    """A hook on ``receiver``'s norm hook_scale freezing the scale of that receiver's input alone at the base run's
    ``scale`` [batch, pos, 1]. Under split inputs a block's ln1 runs once each for the q, k and v inputs, in that
    order ([batch, pos, head, 1]): only the receiver's call and head are frozen, so that the other inputs of a
    layer a path has changed upstream keep their own scale. ln2 and the final norm are the receiver's alone."""
    if receiver.kind not in HEAD_INPUTS:
        return frozen_scale(scale)
    which, calls = HEAD_INPUTS.index(receiver.kind), [0]

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        mine, calls[0] = calls[0] % len(HEAD_INPUTS) == which, calls[0] + 1
        if not mine:
            return act
        act = act.clone()
        act[:, :, receiver.head] = scale.reshape(*scale.shape[:2], 1)
        return act

    return hook


def input_hook(receiver: Node, delta: Tensor) -> tuple[str, Hook]:
    """(hook name, hook) adding ``delta`` [batch, pos, d_model] to a receiver's input under split inputs."""
    def add(act: Tensor, hook: HookPoint) -> Tensor:
        if receiver.kind in HEAD_INPUTS:
            act = act.clone()
            act[:, :, receiver.head] += delta
            return act
        return act + delta

    if receiver.kind in HEAD_INPUTS:
        return get_act_name(f"{receiver.kind}_input", receiver.layer), add
    if receiver.kind == "mlp":
        return get_act_name("mlp_in", receiver.layer), add
    return get_act_name("resid_post", receiver.layer - 1), add  # the read-out reads the last block's output


@torch.no_grad()
def hooked_patch(runs, adds: list[tuple[int, int, Tensor]], freeze: bool) -> Tensor:
    """The metric of one hooked forward pass of the base run with each (sender, receiver, rows [pos] bool) of
    ``adds`` entering as in ``edge_patch_loop`` (the sender's delta on those rows, at the receiver's split input,
    before its norm; with ``freeze``, the scale of that receiver's input frozen at the base run's,
    ``receiver_scale``), everything else recomputed: [batch]."""
    hooks = []
    with split_inputs(runs.model):
        for s, r, rows in adds:
            receiver = runs.graph.receivers[r]
            hooks.append(input_hook(receiver, runs.delta[s] * rows.to(runs.delta.device)[None, :, None]))
            scale = runs.scale(receiver)
            if freeze and scale is not None:
                hooks.append((scale_name(receiver), receiver_scale(receiver, scale)))
        out = runs.model.run_with_hooks(runs.base.inputs, fwd_hooks=hooks)
    return runs.metric(out[:, runs.q], runs.answers)


@torch.no_grad()
def edge_patch_loop(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings=None) -> Result:
    """Exact edge patching the plain way, one hooked forward pass of the whole model per edge (and row): the
    sender's delta added to the receiver's input at TransformerLens's hook_q_input / hook_k_input / hook_v_input /
    hook_mlp_in (or the last resid_post for the read-out), the receiver's norm scale frozen at hook_scale. The
    reference ``edge_patch`` is checked against; the same Result."""
    from . import CircuitSettings

    settings = settings or CircuitSettings()
    runs = make_runs(model, task, clean, corrupted, direction=settings.direction, metric=settings.metric)
    pairs = list(cells(runs.graph, settings.positions, runs.base.inputs.shape[1], runs.q))
    values = torch.empty(len(pairs), runs.base.inputs.shape[0], device=runs.delta.device)
    for i, (e, rows) in enumerate(pairs):
        values[i] = hooked_patch(runs, [(*runs.graph.edges[e], rows)], settings.freeze_ln)
    return edge_result("edge_patching", runs, values, positions=settings.positions, pos_labels=clean.pos_labels,
                       metadata={"method": "exact (plain loop)", "freeze_ln": settings.freeze_ln,
                                 "corruption": settings.corruption, "task": task.describe(),
                                 "n_forward_passes": len(pairs)})
