"""Exact edge patching, batched, and path patching of one sender through a set of its edges, on the same engine.
See ``probes.circuits`` for the conventions and shortcuts; ``loop`` holds the plain reference it is checked
against, ``direct`` the block arithmetic of its hot path.

Over 400 lines on purpose: the engine (adds, entries, the plan of passes, the closed-form receiver layer, the hooked
and the direct pass) is one pipeline, and path patching is its second user.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import einops
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interp.progress import progress_bar
from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.patching import Stacked, keys_values, kv_cache

from . import direct
from .graph import (HEAD_INPUTS, POSITIONS, Node, Runs, cells, edge_result, input_name, make_runs, norm_delta,
                    norm_of, normalised_result, pos_ticks)
from .loop import Hook, edge_patch_loop, frozen_scale, hooked_patch, split_inputs  # noqa: F401 (imported from here too)


@dataclass(frozen=True)
class Adds:
    """What the patched runs of a sweep add: add i puts sender ``sender[i]``'s delta, on the rows ``rows[i]``, into
    the input of receiver ``receiver[i]`` in variant ``variant[i]``. An edge patch is one add, a path several."""

    variant: Tensor  # [add] long
    sender: Tensor  # [add] long
    receiver: Tensor  # [add] long
    rows: Tensor  # [add, pos] bool
    head: Tensor | None = None  # [add] long, each receiver's head (0 for MLPs and the read-out), once split by kind

    def subset(self, keep: Tensor, shift: int = 0) -> "Adds":
        """The adds ``keep`` [add] bool, their variants less ``shift``."""
        return Adds(self.variant[keep] - shift, self.sender[keep], self.receiver[keep], self.rows[keep],
                    None if self.head is None else self.head[keep])


@dataclass(frozen=True)
class Entry:
    """The senders' deltas where they enter one (layer, kind) of receivers, on rows lo.. only (the rows some patch
    reaches): values [sender, head, batch, rows, d_head] (q, k, v), [sender, batch, rows, d_mlp] (mlp) or
    [sender, batch, rows, d_model] (readout)."""

    values: Tensor
    lo: int

    def span(self, a: int, b: int) -> tuple[int, int] | None:
        """Rows a..b-1 clipped to the rows held, or None when none are."""
        a, b = max(a, self.lo), min(b, self.lo + self.values.shape[-2])
        return (a, b) if a < b else None

    def take(self, a: int, b: int) -> Tensor:
        return self.values[..., a - self.lo : b - self.lo, :]

    def pick(self, a: int, b: int, adds: Adds) -> Tensor:
        """Each add's entry (its sender's, at its head where ``adds.head`` is set) on rows a..b-1, zero off the
        add's rows: [add, batch, b - a, ...]. (index_select: advanced indexing gathers element by element.)"""
        values, index = self.take(a, b), adds.sender
        if adds.head is not None and values.dim() == 5:
            values, index = values.flatten(0, 1), index * values.shape[1] + adds.head
        return values.index_select(0, index) * adds.rows[:, None, a:b, None]


class Entries:
    """Each sender's delta where it enters a receiver of a layer, through the receiver's norm (frozen at the base
    run's scale, or recomputed at its input) and projection, computed once per (layer, kind) on the rows its
    patches reach (``windows``): q / k / v at hook_q / hook_k / hook_v (before rotary), mlp at hook_pre (or, not
    ``projected``, after ln2: [sender, batch, rows, d_model]), readout after the final norm."""

    def __init__(self, runs: Runs, freeze: bool, windows: dict[tuple[int, str], tuple[int, int]]):
        self.runs, self.freeze, self.windows, self.memo = runs, freeze, windows, {}

    def get(self, receiver: Node, projected: bool = True) -> Entry:
        key = (receiver.layer, receiver.kind, projected)
        if key not in self.memo:
            runs, model = self.runs, self.runs.model
            lo, hi = self.windows.get(key[:2], (0, 0))
            n_up = runs.graph.n_upstream(receiver)
            delta, x, scale = runs.delta[:n_up, :, lo:hi], runs.base_input(receiver)[:, lo:hi], runs.scale(receiver)
            normed = norm_delta(norm_of(model, receiver), delta, x=x, freeze=self.freeze,
                                scale=None if scale is None else scale[:, lo:hi])
            if receiver.kind in HEAD_INPUTS:
                attn = model.blocks[receiver.layer].attn
                W = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}[receiver.kind]
                normed = einops.einsum(normed, W, "s b p d, h d e -> s h b p e")
            elif receiver.kind == "mlp" and projected:
                normed = einops.einsum(normed, model.blocks[receiver.layer].mlp.W_in, "s b p d, d m -> s b p m")
            self.memo[key] = Entry(normed, lo)
        return self.memo[key]

    def base(self, layer: int, kind: str, head_major: bool = False) -> Tensor:
        """The base run's hook_q / hook_k / hook_v / hook_z of ``layer`` [batch, pos, head, d_head], q and k
        rotated where the model's positions are rotary (so that a patch's update is rotated alone: rotary is
        linear), computed once per sweep. ``head_major``: the same (or hook_pattern) as a contiguous
        [head, batch, pos, d_head] ([head, batch, query, key]), so that picking heads is one block copy."""
        key = ("base", layer, kind, head_major)
        if key not in self.memo:
            if head_major:
                x = self.runs.base_cache[get_act_name(kind, layer)] if kind == "pattern" else self.base(layer, kind)
                self.memo[key] = (x.transpose(0, 1) if kind == "pattern" else x.permute(2, 0, 1, 3)).contiguous()
            else:
                attn, x = self.runs.model.blocks[layer].attn, self.runs.base_cache[get_act_name(kind, layer)]
                rotary = attn.cfg.positional_embedding_type == "rotary" and kind in ("q", "k")
                self.memo[key] = attn.apply_rotary(x, 0) if rotary else x
        return self.memo[key]


def windows(runs: Runs, adds: Adds) -> dict[tuple[int, str], tuple[int, int]]:
    """(layer, kind) -> the rows lo..hi-1 that the live rows of its adds span."""
    receivers, out = runs.graph.receivers, {}
    keys = [(receivers[r].layer, receivers[r].kind) for r in adds.receiver.tolist()]
    for key in set(keys):
        rows = adds.rows[torch.tensor([k == key for k in keys], device=adds.rows.device)].any(0).nonzero()
        if len(rows):
            out[key] = (int(rows.min()), int(rows.max()) + 1)
    return out


# ------------------------------------------------------------------------------------------ the engine


def prune(runs: Runs, adds: Adds) -> Adds:
    """The rows of each add that can change the metric: where the sender's delta is not zero anywhere in the batch
    (a zero delta adds exactly zero, frozen or not); in a causal model none after the query; of the last layer's
    row-local receivers (q, mlp) and of the read-out only the query row (their other rows reach other rows only)."""
    graph, q, last = runs.graph, runs.q, runs.model.cfg.n_layers - 1
    nonzero = (runs.delta != 0).any(-1).any(1)  # [sender, pos]
    rows = adds.rows.to(nonzero.device) & nonzero[adds.sender]
    query_only = torch.tensor([r.kind == "readout" or (r.layer == last and r.kind in ("q", "mlp"))
                               for r in graph.receivers], device=rows.device)[adds.receiver]
    keep = torch.zeros_like(rows)
    keep[:, q] = True
    if runs.causal:
        keep[~query_only, : q + 1] = True
    else:
        keep[~query_only] = True
    return Adds(adds.variant, adds.sender, adds.receiver, rows & keep)


def closed_form_attention(model: Model) -> bool:
    """Whether a q or k patch can be computed for its head alone (``head_attention``): softmax attention that no
    permanent hook rescores or masks (relu / linear / exp scoring and the context mask hook the pattern)."""
    return all(not block.attn.hook_attn_scores.fwd_hooks and not block.attn.hook_pattern.fwd_hooks
               and not block.cfg.use_attention_sinks and not block.cfg.use_logn_attn for block in model.blocks)


def groups(runs: Runs, adds: Adds, per_chunk: int) -> Iterator[tuple[int, int, bool, Tensor]]:
    """(layer, start row, closed form, variant indices) of the forward passes: variants grouped by the first layer
    and (causal models) the first row they change, and by whether their first layer can take its patches in
    closed form (``receiver_block``), in chunks of ``per_chunk``. Variants that change nothing are left out."""
    receivers = runs.graph.receivers
    layers = torch.tensor([r.layer for r in receivers], device=adds.rows.device)[adds.receiver]
    live = adds.rows.any(-1)
    first_row = torch.where(live, adds.rows.int().argmax(-1), adds.rows.shape[1])
    qk_ok = closed_form_attention(runs.model)
    start: dict[int, tuple[int, int]] = {}
    heads: dict[int, list[tuple[int, int, str]]] = defaultdict(list)  # variant -> (layer, head, kind) of its adds
    for v, r, l, row, ok in zip(adds.variant.tolist(), adds.receiver.tolist(), layers.tolist(), first_row.tolist(),
                                live.tolist()):
        if ok:
            old = start.get(v, (l, row))
            start[v] = (min(old[0], l), min(old[1], row))
            heads[v].append((l, receivers[r].head, receivers[r].kind))
    by_start: dict[tuple[int, int, bool], list[int]] = defaultdict(list)
    for v, (l, row) in start.items():
        mine = [(h, kind) for layer, h, kind in heads[v] if layer == l and kind in HEAD_INPUTS]
        closed = len({h for h, _ in mine}) == len(mine) and (qk_ok or all(kind == "v" for _, kind in mine))
        by_start[(l, row if runs.causal else 0, closed)].append(v)
    for (l, row, closed), idx in sorted(by_start.items()):
        for i in range(0, len(idx), per_chunk):
            yield l, row, closed, torch.tensor(idx[i : i + per_chunk])


def head_adder(entry: Entry, adds: Adds, n: int, offset: int) -> Hook:
    """A hook on hook_q / hook_k / hook_v [(variant batch), rows, head, d_head] adding each add's entry (its sender
    and head) on its rows, in place (the activation is the projection's fresh output); the hook sees rows offset..
    of the sequence."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        span = entry.span(offset, offset + act.shape[1])
        if span is not None:
            a, b = span
            update = entry.pick(a, b, adds)
            per_head = einops.rearrange(act, "(v b) r h e -> v h b r e", v=n)[:, :, :, a - offset : b - offset]
            per_head.index_put_((adds.variant, adds.head), update, accumulate=True)  # writes through the views
        return act

    return hook


def mlp_adder(entry: Entry, adds: Adds, n: int, offset: int) -> Hook:
    """A hook on hook_pre [(variant batch), rows, d_mlp] adding each add's entry on its rows, in place."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        span = entry.span(offset, offset + act.shape[1])
        if span is not None:
            a, b = span
            update = entry.pick(a, b, adds)
            per_variant = einops.rearrange(act, "(v b) r m -> v b r m", v=n)[:, :, a - offset : b - offset]
            per_variant.index_add_(0, adds.variant, update)  # writes through the views
        return act

    return hook


@dataclass(frozen=True)
class Chunk:
    """The adds of one forward pass, variants renumbered 0..n-1, grouped by receiver layer and then kind (one
    receiver node stands for its (layer, kind))."""

    n: int
    by_layer: dict[int, list[tuple[Node, Adds]]]

    def tile(self, a: int, b: int) -> "Chunk":
        """The adds of variants a..b-1, renumbered 0..b-a-1 (kinds with none left out)."""
        by_layer: dict[int, list[tuple[Node, Adds]]] = defaultdict(list)
        for layer, nodes in self.by_layer.items():
            for node, adds in nodes:
                keep = (adds.variant >= a) & (adds.variant < b)
                if keep.any():
                    by_layer[layer].append((node, adds.subset(keep, a)))
        return Chunk(b - a, by_layer)


def split_chunk(runs: Runs, adds: Adds, idx: Tensor) -> Chunk:
    """The adds of the variants ``idx``, renumbered, grouped by (layer, kind), with their heads."""
    device, receivers = adds.variant.device, runs.graph.receivers
    local = torch.full((int(adds.variant.max()) + 1,), -1, dtype=torch.long, device=device)
    local[idx.to(device)] = torch.arange(len(idx), device=device)
    mine = adds.subset(local[adds.variant] >= 0)
    keys = [(receivers[r].layer, receivers[r].kind) for r in mine.receiver.tolist()]
    heads = torch.tensor([receivers[r].head or 0 for r in mine.receiver.tolist()], dtype=torch.long, device=device)
    by_layer: dict[int, list[tuple[Node, Adds]]] = defaultdict(list)
    for key in sorted(set(keys)):
        sel = torch.tensor([k == key for k in keys], device=device)
        node = receivers[int(mine.receiver[sel][0])]
        by_layer[key[0]].append((node, Adds(local[mine.variant[sel]], mine.sender[sel], mine.receiver[sel],
                                            mine.rows[sel], heads[sel])))
    return Chunk(len(idx), by_layer)


def block_hooks(entries: Entries, chunk: Chunk, layer: int, offset: int) -> list[tuple[str, Hook]]:
    """The hooks adding a chunk's deltas into the receivers of ``layer``, for rows offset.. of the sequence."""
    hooks = []
    for node, adds in chunk.by_layer.get(layer, []):
        if node.kind in HEAD_INPUTS:
            hooks.append((get_act_name(node.kind, layer), head_adder(entries.get(node), adds, chunk.n, offset)))
        elif node.kind == "mlp":
            hooks.append((get_act_name("pre", layer), mlp_adder(entries.get(node), adds, chunk.n, offset)))
    return hooks


def head_attention(attn, q: Tensor, k: Tensor, v: Tensor, offset: int, causal: bool) -> Tensor:
    """z of one head, as TransformerLens's softmax attention computes it: queries q [batch, rows, 1, d_head] at rows
    offset.., keys and values k, v [batch, keys, 1, d_head] (q and k after rotary, where the model has it) ->
    [batch, rows, 1, d_head]. (No row is fully masked, so TransformerLens's NaN guard after the softmax changes
    nothing and is left out.)"""
    scores = attn.calculate_attention_scores(q, k)[:, 0]  # [batch, rows, keys]
    if causal:
        mask = torch.ones(scores.shape[1:], dtype=torch.bool, device=scores.device).tril(offset)
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v[:, :, 0])[:, :, None]


def post_name(model: Model, layer: int) -> str:
    """A cached name holding resid_post of ``layer`` (the next layer's resid_pre, or the last resid_post)."""
    last = layer == model.cfg.n_layers - 1
    return get_act_name("resid_post" if last else "resid_pre", layer if last else layer + 1)


def receiver_attention(runs: Runs, entries: Entries, chunk: Chunk, layer: int, a: int, end: int) -> Tensor:
    """resid_mid rows a..end-1 of ``layer`` (resid_post attention-only) for a chunk whose receivers there take their
    patches in closed form: [(variant batch), rows, d_model]. The block's input is the base run's, so a v patch
    changes its head's z by pattern @ δv (the pattern is the base run's), a q or k patch is recomputed for its
    head alone, from the base run's rotated q and k plus the rotated update (rotary is linear: equal to rotating
    the patched q or k to float rounding)."""
    model, n = runs.model, chunk.n
    block, n_pos = model.blocks[layer], runs.base.inputs.shape[1]
    keys = end if runs.causal else n_pos  # the keys rows a..end-1 read
    change = torch.zeros(n, runs.base.inputs.shape[0], end - a, model.cfg.d_model, device=runs.delta.device)
    for node, adds in chunk.by_layer.get(layer, []):
        entry = entries.get(node) if node.kind in HEAD_INPUTS else None
        span = None if entry is None else entry.span(a, end) if node.kind == "q" else entry.span(0, keys)
        if span is None:
            continue
        (lo, hi), m, h = span, len(adds.variant), adds.head
        update = entry.pick(lo, hi, adds)  # [add, batch, rows, d_head]
        if node.kind == "v":
            pattern = entries.base(layer, "pattern", head_major=True)[:, :, a:end, lo:hi].index_select(0, h)
            dz = einops.einsum(pattern, update, "m b r k, m b k e -> m b r e")
        else:
            rows = {"q": (a, end), "k": (0, keys), "v": (0, keys), "z": (a, end)}
            base = {t: entries.base(layer, t, head_major=True)[:, :, r0:r1].index_select(0, h)
                    for t, (r0, r1) in rows.items()}  # copies [add, batch, rows, d_head]
            if block.cfg.positional_embedding_type == "rotary":
                update = block.attn.apply_rotary(update.flatten(0, 1)[:, :, None], lo)[:, :, 0].view(update.shape)
            first = rows[node.kind][0]
            base[node.kind][:, :, lo - first : hi - first] += update
            flat = lambda t: t.flatten(0, 1)[:, :, None]  # noqa: E731
            z = head_attention(block.attn, flat(base["q"]), flat(base["k"]), flat(base["v"]), a, runs.causal)
            dz = z.view(m, -1, *z.shape[1:])[:, :, :, 0] - base["z"]
        change.index_add_(0, adds.variant, einops.einsum(dz, block.attn.W_O[h], "m b r e, m e d -> m b r d"))
    base = runs.base_cache[post_name(model, layer) if model.cfg.attn_only else get_act_name("resid_mid", layer)]
    return einops.rearrange(change.add_(base[None, :, a:end]), "v b r d -> (v b) r d")  # broadcast, no repeat


def receiver_block(runs: Runs, entries: Entries, stacked: Stacked, chunk: Chunk, layer: int, a: int, end: int) -> Tensor:
    """resid_post rows a..end-1 of ``layer`` for a closed-form chunk (``receiver_attention``), the MLP run as a
    hooked TransformerLens MLP on resid_mid, with its own patches at hook_pre: [(variant batch), rows, d_model]."""
    x, block = receiver_attention(runs, entries, chunk, layer, a, end), runs.model.blocks[layer]
    if runs.model.cfg.attn_only:
        return x
    with runs.model.hooks(fwd_hooks=block_hooks(entries, chunk, layer, a)):
        return x + block.mlp(block.ln2(x))


def repeated(x: Tensor, n: int) -> Tensor:
    """``n`` copies of the base run's ``x`` [batch, ...], variant-major as ``Stacked.rows`` lays them out, in one
    fresh tensor (for a consumer that writes into it): [n * batch, ...]."""
    return x.repeat(n, *[1] * (x.dim() - 1))


def live_rows(chunk: Chunk, layer: int, a: int, end: int) -> Tensor:
    """[variant, end - a] bool: the rows a..end-1 of a causal ``layer``'s output that a variant's patches there can
    change: a q or MLP patch its own rows, a k or v patch every row from its first on."""
    live = torch.zeros(chunk.n, end - a, dtype=torch.long)
    for node, adds in chunk.by_layer.get(layer, []):
        rows = adds.rows[:, :end].long().cpu()
        if node.kind in ("k", "v"):
            rows = rows.cummax(-1).values
        live.index_add_(0, adds.variant.cpu(), rows[:, a:])
    return live > 0


def direct_chunk(runs: Runs, entries: Entries, chunk: Chunk, layer: int, start: int) -> Tensor:
    """The query row of the last resid_post [(variant batch), d_model] of a closed-form chunk of a causal model
    whose patches all enter ``layer`` (or the read-out), by ``direct`` blocks: ``receiver_attention`` for rows
    start..q of ``layer`` (the query row alone in the last layer) for the whole chunk at once; then, per tile of
    variants, its MLP (its patches entering after ln2) on the rows they change (``live_rows``, the others the base
    run's), the next layer's keys and values on those rows, and each later layer on rows start..q, the last one's
    block on the query row, the rows before start entering as the base run's keys and values."""
    model, q, batch, last, cache = runs.model, runs.q, runs.base.inputs.shape[0], runs.model.cfg.n_layers - 1, runs.base_cache
    a = q if layer == last else start
    per_tile, out = max(1, direct.TILE_ROWS // (batch * (q + 1 - a))), []
    resid = receiver_attention(runs, entries, chunk, layer, a, q + 1)  # one pass: per-head ops once
    for v in range(0, chunk.n, per_tile):
        tile = chunk.tile(v, min(v + per_tile, chunk.n))
        rows, live = resid[v * batch : (v + tile.n) * batch], live_rows(tile, layer, a, q + 1)
        live = None if bool(live.all()) else live.repeat_interleave(batch, 0).to(rows.device)  # [(variant batch), rows]
        if not model.cfg.attn_only:  # the MLP's patches enter after ln2 (δ' @ W_in in the same GEMM)
            at_in = [mlp_adder(entries.get(node, projected=False), adds, tile.n, a)
                     for node, adds in tile.by_layer.get(layer, []) if node.kind == "mlp"]
            base = None if live is None else repeated(cache[post_name(model, layer)][:, a : q + 1], tile.n)
            rows = direct.mlp_post(model.blocks[layer], rows, at_in, live, base)
        for l in range(layer + 1, last + 1):
            block, kv = model.blocks[l], None
            if live is not None and l == layer + 1:  # the rows the patches left alone keep the base run's keys, values
                index = live.flatten().nonzero().squeeze(1)  # index_select / index_copy_, not boolean indexing
                kv = tuple(repeated(cache[get_act_name(t, l)][:, a : q + 1], tile.n) for t in ("k", "v"))
                for t, new in zip(kv, direct.keys_values(block, rows.flatten(0, 1).index_select(0, index)[None])):
                    t.flatten(0, 1).index_copy_(0, index, new[0])
            rows = direct.block_rows(block, rows, entries.base(l, "k")[:, :start],
                                     cache[get_act_name("v", l)][:, :start], 1 if l == last else rows.shape[1], kv)
        out.append(rows[:, -1])
    return torch.cat(out)


def run_chunk(runs: Runs, entries: Entries, stacked: Stacked, chunk: Chunk, layer: int, start: int,
              closed: bool = True, direct_ok: bool = False) -> Tensor:
    """The metric of a chunk's variants, which change nothing before ``layer`` (nor, causal, before row ``start``):
    [variant, batch]. ``layer`` itself in closed form (``receiver_block``: in a causal model's last layer the query
    row alone) or as a hooked TransformerLens block; then, causal, rows start..q of each later layer, the rows
    before as the base run's keys and values, the last layer's keys and values for rows start..q-1 and its block
    for the query row alone; bidirectional, every row of every later layer."""
    model, q, n, n_layers = runs.model, runs.q, chunk.n, runs.model.cfg.n_layers
    s, end = (start, q) if runs.causal else (0, runs.base.inputs.shape[1] - 1)
    last = n_layers - 1
    if layer < n_layers and closed and direct_ok and set(chunk.by_layer) <= {layer, n_layers}:
        x = direct_chunk(runs, entries, chunk, layer, s)
    elif layer < n_layers:
        if closed:
            # of the last layer only the query row reaches the metric
            a, b = (q, q + 1) if layer == last else (s, end + 1)
            x = receiver_block(runs, entries, stacked, chunk, layer, a, b)
            first = layer + 1
        else:
            x, first = stacked.rows(get_act_name("resid_pre", layer), s, end + 1, n), layer
        for l in range(first, n_layers):
            block = model.blocks[l]
            if runs.causal and l == last:
                k = v = None
                if x.shape[1] > 1:
                    with model.hooks(fwd_hooks=block_hooks(entries, chunk, l, s)):
                        k, v = keys_values(block, x[:, :-1])
                kv = kv_cache(stacked, l, n, s, k, v, until=q)
                with model.hooks(fwd_hooks=block_hooks(entries, chunk, l, q)):
                    x = block(x[:, -1:], past_kv_cache_entry=kv)
            else:
                with model.hooks(fwd_hooks=block_hooks(entries, chunk, l, s)):
                    x = block(x, past_kv_cache_entry=kv_cache(stacked, l, n, s) if runs.causal else None)
        x = x[:, -1] if runs.causal or (closed and layer == last) else x[:, q]
    else:  # only the read-out is patched
        x = stacked.rows(input_name(model, runs.graph.receivers[-1]), q, q + 1, n)[:, 0]
    if hasattr(model, "ln_final"):
        x = model.ln_final(x)
    for node, adds in chunk.by_layer.get(n_layers, []):  # the read-out's adds enter after the final norm
        entry = entries.get(node)
        if entry.span(q, q + 1) is None:
            continue
        update = entry.pick(q, q + 1, adds)[:, :, 0]  # [add, batch, d_model]
        x = einops.rearrange(einops.rearrange(x, "(v b) d -> v b d", v=n).index_add(0, adds.variant, update),
                             "v b d -> (v b) d")
    return runs.metric_of(model.unembed(x[:, None])[:, 0], n)


@torch.no_grad()
def run_adds(runs: Runs, adds: Adds, n_variants: int, *, freeze: bool = True, max_batch: int = 512,
             progress: bool = False) -> tuple[Tensor, int]:
    """The metric of every variant of ``adds``: ([variant, batch], number of forward passes). A variant that
    changes nothing gets the base run's metric without one."""
    adds = prune(runs, adds)
    values = einops.repeat(runs.base_metric, "b -> v b", v=n_variants).clone()
    entries, stacked = Entries(runs, freeze, windows(runs, adds)), Stacked(runs.base_cache)
    per_chunk = max(1, max_batch // runs.base.inputs.shape[0])
    plan, direct_ok = list(groups(runs, adds, per_chunk)), runs.causal and direct.supports(runs.model)
    for layer, start, closed, idx in progress_bar(plan, desc="edge patching", enabled=progress):
        chunk = split_chunk(runs, adds, idx)
        values[idx.to(values.device)] = run_chunk(runs, entries, stacked, chunk, layer, start, closed, direct_ok)
    return values, len(plan)


def cell_adds(runs: Runs, positions: str) -> Adds:
    """One variant per cell of an edge sweep (``graph.cells``), each adding its edge's delta on its rows."""
    n_pos, device = runs.base.inputs.shape[1], runs.delta.device
    pairs = list(cells(runs.graph, positions, n_pos, runs.q))
    edges = torch.tensor([runs.graph.edges[e] for e, _ in pairs], dtype=torch.long, device=device)
    rows = torch.stack([r for _, r in pairs]).to(device)
    return Adds(torch.arange(len(pairs), device=device), edges[:, 0], edges[:, 1], rows)


def edge_patch(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings=None,
               progress: bool = False) -> Result:
    """Exact edge patching of every edge, batched: scores [edge] (positions "all" / "query") or [edge, pos]
    ("each"), normalised 0 = corrupted, 1 = clean; extras["metric"] the raw batch-mean metric."""
    from . import CircuitSettings

    settings = settings or CircuitSettings()
    runs = make_runs(model, task, clean, corrupted, direction=settings.direction, metric=settings.metric,
                     from_weights=True)
    adds = cell_adds(runs, settings.positions)
    values, passes = run_adds(runs, adds, len(adds.variant), freeze=settings.freeze_ln, max_batch=settings.max_batch,
                              progress=progress)
    return edge_result("edge_patching", runs, values, positions=settings.positions, pos_labels=clean.pos_labels,
                       metadata={"method": "exact", "freeze_ln": settings.freeze_ln, "corruption": settings.corruption,
                                 "task": task.describe(), "n_forward_passes": passes})


# ------------------------------------------------------------------------------------------ path patching


def path_patch(model: Model, task: TaskBase, clean: Batch, corrupted: Batch,
               paths: Sequence[tuple[str, Sequence[str]]], settings=None) -> Result:
    """Path patching: for each (sender, receivers) of ``paths``, the base run with the sender's delta added to the
    input of each of the named receivers (e.g. ("L0H1", ["L1H0.q", "readout"])) and no other, everything downstream
    recomputed; all paths batched. scores [path] (positions "all": every row, "query": the query row) or
    [path, pos] ("each": one run per path and row, the delta on that row only), normalised 0 = corrupted, 1 = clean.
    A path whose receivers lie in more than one layer (the read-out counts as one past the last) runs as one
    hooked forward pass (``loop.hooked_patch``): there a later receiver's input is the one the earlier patches
    changed, plus the delta, through its norm (at the base run's scale, frozen, for that input alone), which the
    batched engine's increments, taken at the base run's input, do not give."""
    from . import CircuitSettings

    settings = settings or CircuitSettings()
    if settings.positions not in POSITIONS:
        raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {settings.positions!r}")
    runs = make_runs(model, task, clean, corrupted, direction=settings.direction, metric=settings.metric,
                     from_weights=True)
    graph, n_pos, device = runs.graph, runs.base.inputs.shape[1], runs.delta.device
    eye = torch.eye(n_pos, dtype=torch.bool)
    per_path = {"all": [torch.ones(n_pos, dtype=torch.bool)], "query": [eye[runs.q]], "each": list(eye)}[settings.positions]
    variant, sender, receiver, rows, labels = [], [], [], [], []
    for i, (s_name, r_names) in enumerate(paths):
        s = graph.sender(s_name)
        for r_name in r_names:
            r = graph.receiver(r_name)
            if (s, r) not in graph.edges:
                raise ValueError(f"{r_name} does not read {s_name}: there is no edge {s_name} -> {r_name}")
            for j, row in enumerate(per_path):  # variant-major over (path, row)
                variant.append(i * len(per_path) + j), sender.append(s), receiver.append(r), rows.append(row)
        labels.append(f"{s_name} -> {{{', '.join(r_names)}}}")
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    adds = Adds(as_long(variant), as_long(sender), as_long(receiver), torch.stack(rows).to(device))
    layers = [{graph.receivers[graph.receiver(r)].layer for r in r_names} for _, r_names in paths]
    hooked = [i for i, ls in enumerate(layers) if len(ls) > 1]
    batched = torch.tensor([v // len(per_path) not in hooked for v in variant], dtype=torch.bool, device=device)
    if bool(batched.any()):
        values, passes = run_adds(runs, adds.subset(batched, 0), len(paths) * len(per_path), freeze=settings.freeze_ln,
                                  max_batch=settings.max_batch)
    else:
        values, passes = einops.repeat(runs.base_metric, "b -> v b", v=len(paths) * len(per_path)).clone(), 0
    for i in hooked:
        for j, row in enumerate(per_path):
            values[i * len(per_path) + j] = hooked_patch(
                runs, [(s_, r_, row) for v, s_, r_ in zip(variant, sender, receiver) if v == i * len(per_path) + j],
                freeze=settings.freeze_ln)
            passes += 1
    each = settings.positions == "each"
    return normalised_result("path_patching", runs, values, axes=("path", "pos") if each else ("path",),
                             shape=(len(paths), n_pos) if each else (len(paths),),
                             labels={"path": labels, **({"pos": pos_ticks(clean.pos_labels, n_pos)} if each else {})},
                             metadata={"method": "path patching", "positions": settings.positions,
                                       "freeze_ln": settings.freeze_ln, "corruption": settings.corruption,
                                       "task": task.describe(), "paths": [[s, list(r)] for s, r in paths],
                                       "n_forward_passes": passes})
