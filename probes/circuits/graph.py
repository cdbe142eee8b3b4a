"""The edge graph of a model, its nodes' outputs and receivers' inputs, and the base / source runs every circuit
method starts from. See ``probes.circuits`` for the conventions."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import einops
import torch
from torch import Tensor, nn
from transformer_lens import ActivationCache
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre
from transformer_lens.utilities import get_act_name

from interp.results import Result, tick_label
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.inputs import check_batches
from probes.metrics import Answers, Metric, resolve_metric
from probes.patching import DIRECTIONS, SCALE, check_model

HEAD_INPUTS = ("q", "k", "v")
RECEIVER_KINDS = (*HEAD_INPUTS, "mlp", "readout")
POSITIONS = ("all", "query", "each")


@dataclass(frozen=True)
class Node:
    """A sender (kind embed | head | mlp) or a receiver (kind q | k | v | mlp | readout). ``layer`` is -1 for the
    embedding and n_layers for the read-out; ``stage`` orders nodes along the residual stream (a receiver reads
    every sender of a smaller stage)."""

    name: str
    kind: str
    layer: int
    head: int | None = None

    @property
    def stage(self) -> int:
        if self.kind == "embed":
            return 0
        if self.kind in ("head", *HEAD_INPUTS):
            return 2 * self.layer + 1
        return 2 * self.layer + 2  # mlp (sender or receiver); the read-out's layer n_layers puts it after all


@dataclass(frozen=True)
class Graph:
    """Senders, receivers and edges (sender index, receiver index), receiver-major in receiver order."""

    senders: tuple[Node, ...]
    receivers: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, model: Model) -> "Graph":
        """The graph of ``model``: embed, then per layer its heads and its MLP; receivers per layer the heads'
        q, k and v inputs (head-major) and the MLP input, then the read-out."""
        cfg = model.cfg
        senders, receivers = [Node("embed", "embed", -1)], []
        for l in range(cfg.n_layers):
            senders += [Node(tick_label(l, h), "head", l, h) for h in range(cfg.n_heads)]
            receivers += [Node(f"{tick_label(l, h)}.{t}", t, l, h) for h in range(cfg.n_heads) for t in HEAD_INPUTS]
            if not cfg.attn_only:
                senders.append(Node(f"{tick_label(l)}.mlp", "mlp", l))
                receivers.append(Node(f"{tick_label(l)}.mlp", "mlp", l))
        receivers.append(Node("readout", "readout", cfg.n_layers))
        edges = tuple((s, r) for r, rec in enumerate(receivers) for s, snd in enumerate(senders) if snd.stage < rec.stage)
        return cls(tuple(senders), tuple(receivers), edges)

    def n_upstream(self, receiver: Node) -> int:
        """How many senders ``receiver`` reads: always the first n, as senders are in stage order."""
        return sum(s.stage < receiver.stage for s in self.senders)

    def labels(self) -> list[str]:
        """One "sender -> receiver" label per edge, e.g. "L0H1 -> L1H0.k"."""
        return [f"{self.senders[s].name} -> {self.receivers[r].name}" for s, r in self.edges]

    def receiver(self, name: str) -> int:
        names = [r.name for r in self.receivers]
        if name not in names:
            raise ValueError(f"unknown receiver {name!r}; receivers are {', '.join(names)}")
        return names.index(name)

    def sender(self, name: str) -> int:
        names = [s.name for s in self.senders]
        if name not in names:
            raise ValueError(f"unknown sender {name!r}; senders are {', '.join(names)}")
        return names.index(name)


# ------------------------------------------------------------------------------------------ outputs and inputs


def cache_names(model: Model) -> list[str]:
    """The hooks a base run keeps: what sender outputs, receiver inputs, frozen norms, the closed-form receiver
    layer (q, k, v, z, pattern) and the key-value shortcut (``probes.patching.kv_cache``) read."""
    names = [get_act_name("resid_pre", 0), get_act_name("resid_post", model.cfg.n_layers - 1)]
    for l in range(model.cfg.n_layers):
        names += [get_act_name(n, l) for n in ("resid_pre", "q", "k", "v", "z", "pattern")]
        if not model.cfg.attn_only:
            names += [get_act_name(n, l) for n in ("resid_mid", "mlp_out")]
        names += [f"blocks.{l}.{ln}.hook_scale" for ln in ("ln1", "ln2")]
    return names + ["ln_final.hook_scale"]


def output_names(model: Model) -> list[str]:
    """The hooks ``sender_outputs`` reads."""
    names = [get_act_name("resid_pre", 0)] + [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    return names + ([] if model.cfg.attn_only else [get_act_name("mlp_out", l) for l in range(model.cfg.n_layers)])


def sender_outputs(model: Model, cache: ActivationCache | dict[str, Tensor]) -> Tensor:
    """Each sender's output, what it adds to the residual stream: [sender, batch, pos, d_model]. The embedding's is
    the residual entering block 0 (hook_embed + hook_pos_embed, or the read-in output), a head's its hook_z times
    W_O[head] (b_O is a bias term, see ``biases``), an MLP's its hook_mlp_out (b_out included)."""
    parts = [cache[get_act_name("resid_pre", 0)][None]]
    for l, block in enumerate(model.blocks):
        parts.append(einops.einsum(cache[get_act_name("z", l)], block.attn.W_O, "b p h e, h e d -> h b p d"))
        if not model.cfg.attn_only:
            parts.append(cache[get_act_name("mlp_out", l)][None])
    return torch.cat(parts)


def biases(model: Model, graph: Graph) -> Tensor:
    """The constant part of each receiver's input, the attention biases b_O of the layers it reads: [receiver, d_model]."""
    b_O = torch.stack([block.attn.b_O for block in model.blocks])  # [layer, d_model]
    counts = [min(r.layer + (r.kind == "mlp"), len(model.blocks)) for r in graph.receivers]
    return torch.stack([b_O[:n].sum(0) for n in counts])


def receiver_inputs(model: Model, graph: Graph, outputs: Tensor) -> Tensor:
    """Each receiver's input as the sum of its senders' ``outputs`` [sender, batch, pos, d_model] plus its biases:
    [receiver, batch, pos, d_model] (before the receiver's norm)."""
    b = biases(model, graph)
    return torch.stack([outputs[: graph.n_upstream(r)].sum(0) + b[i] for i, r in enumerate(graph.receivers)])


def norm_of(model: Model, receiver: Node) -> nn.Module:
    """The norm a receiver's input goes through (nn.Identity where there is none)."""
    if receiver.kind == "readout":
        return getattr(model, "ln_final", None) or nn.Identity()
    block = model.blocks[receiver.layer]
    return block.ln1 if receiver.kind in HEAD_INPUTS else block.ln2


def scale_name(receiver: Node) -> str:
    if receiver.kind == "readout":
        return "ln_final.hook_scale"
    return f"blocks.{receiver.layer}.{'ln1' if receiver.kind in HEAD_INPUTS else 'ln2'}.hook_scale"


def input_name(model: Model, receiver: Node) -> str:
    """The cached residual a receiver reads (resid_pre, resid_mid, or the last resid_post for the read-out)."""
    if receiver.kind == "readout":
        return get_act_name("resid_post", model.cfg.n_layers - 1)
    return get_act_name("resid_pre" if receiver.kind in HEAD_INPUTS else "resid_mid", receiver.layer)


def norm_delta(ln: nn.Module, delta: Tensor, *, x: Tensor | None = None, scale: Tensor | None = None,
               freeze: bool = True) -> Tensor:
    """How a change ``delta`` [..., batch, pos, d_model] of a norm's input changes its output. Frozen: the norm's
    centring and weight with the scale fixed at ``scale`` [batch, pos, 1], linear in delta (LN: w (δ - mean δ) / s;
    RMS: w δ / s; the Pre variants without w). Recomputed: ln(x + δ) - ln(x) at the input ``x`` [batch, pos, d_model]."""
    if isinstance(ln, nn.Identity):
        return delta
    if not isinstance(ln, (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre)):
        raise ValueError(f"probes.circuits does not know the norm {type(ln).__name__}")
    if not freeze:
        return ln(x + delta) - ln(x)
    if isinstance(ln, (LayerNorm, LayerNormPre)):
        delta = delta - delta.mean(-1, keepdim=True)
    delta = delta / scale
    return delta * ln.w if isinstance(ln, (LayerNorm, RMSNorm)) else delta


def norm_delta_transpose(ln: nn.Module, grad: Tensor, *, x: Tensor | None = None, scale: Tensor | None = None,
                         freeze: bool = True) -> Tensor:
    """The transpose of ``norm_delta``'s Jacobian at δ = 0 applied to ``grad`` [..., batch, pos, d_model]: the
    gradient with respect to the norm's input, with the scale frozen (or not)."""
    zero = torch.zeros_like(grad, requires_grad=True)
    with torch.enable_grad():
        out = norm_delta(ln, zero, x=x, scale=scale, freeze=freeze)
        return torch.autograd.grad(out, zero, grad)[0]


# ------------------------------------------------------------------------------------------ the two runs


@dataclass(frozen=True, eq=False)  # holds caches: compared by identity
class Runs:
    """The base and source runs of a sweep (denoising: base = corrupted, source = clean; noising: the reverse), the
    senders' deltas ``delta`` = source - base [sender, batch, pos, d_model], the query row and the metric."""

    model: Model
    graph: Graph
    base: Batch
    base_cache: ActivationCache
    source_cache: ActivationCache
    base_metric: Tensor  # [batch]
    source_metric: Tensor
    delta: Tensor
    answers: Answers
    metric: Metric
    metric_name: str
    direction: str
    q: int

    @property
    def causal(self) -> bool:
        return self.model.cfg.attention_dir == "causal"

    @property
    def clean_metric(self) -> Tensor:
        return self.source_metric if self.direction == "denoise" else self.base_metric

    @property
    def corrupted_metric(self) -> Tensor:
        return self.base_metric if self.direction == "denoise" else self.source_metric

    def scale(self, receiver: Node) -> Tensor | None:
        """The base run's norm scale for ``receiver`` [batch, pos, 1] (None without a norm)."""
        return self.base_cache.cache_dict.get(scale_name(receiver))

    def base_input(self, receiver: Node) -> Tensor:
        return self.base_cache[input_name(self.model, receiver)]

    def metric_of(self, out: Tensor, n: int) -> Tensor:
        """The metric of ``n`` stacked copies' outputs at the query [n * batch, d_out]: [n, batch]."""
        a = self.answers
        repeated = Answers(*(einops.repeat(t, "b ... -> (n b) ...", n=n) for t in (a.clean, a.corrupted)))
        return einops.rearrange(self.metric(out, repeated), "(n b) -> n b", n=n)


def check_inputs(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, direction: str) -> None:
    """One clear error for a model or batches the circuit methods cannot take."""
    check_model(model)
    check_batches(model, task, clean, corrupted)
    if corrupted is None:
        raise ValueError("the circuit methods need a corrupted batch (e.g. task.corrupt(clean, 'params', generator))")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


@torch.no_grad()
def make_runs(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, *, direction: str,
              metric: str | Metric | None, from_weights: bool = False) -> Runs:
    """Both runs of a sweep, cached, on the model's device. With ``from_weights``, where ``direct.supports`` the
    model, the caches are computed from the block weights (``direct.run_cached``, equal to ``run_with_cache`` to
    float rounding, about 40% faster); otherwise, and for the reference loop, by ``run_with_cache``."""
    from .direct import run_cached, supports

    check_inputs(model, task, clean, corrupted, direction)
    metric_name, metric_fn = resolve_metric(task, metric)
    device = next(model.parameters()).device
    clean, corrupted = clean.to(device), corrupted.to(device)
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    names, outputs = set(cache_names(model)), set(output_names(model))
    if from_weights and supports(model):
        (base_out, base_dict), (source_out, source_dict) = (run_cached(model, b.inputs, n)
                                                            for b, n in ((base, names), (source, outputs)))
        base_cache, source_cache = ActivationCache(base_dict, model), ActivationCache(source_dict, model)
    else:
        base_out, base_cache = model.run_with_cache(base.inputs, names_filter=lambda n: n in names)
        source_out, source_cache = model.run_with_cache(source.inputs, names_filter=lambda n: n in outputs)
    answers, q = Answers.of(clean, corrupted), clean.query_pos
    delta = sender_outputs(model, source_cache) - sender_outputs(model, base_cache)
    return Runs(model, Graph.of(model), base, base_cache, source_cache, metric_fn(base_out[:, q], answers),
                metric_fn(source_out[:, q], answers), delta, answers, metric_fn, metric_name, direction, q)


# ------------------------------------------------------------------------------------------ cells and results


def cells(graph: Graph, positions: str, n_pos: int, q: int) -> Iterator[tuple[int, Tensor]]:
    """(edge index, rows [pos] bool) for every cell of a sweep, edge-major: one cell per edge with ``positions``
    "all" (every row) or "query" (the query row), one per edge and row with "each"."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    eye = torch.eye(n_pos, dtype=torch.bool)
    rows = {"all": [torch.ones(n_pos, dtype=torch.bool)], "query": [eye[q]], "each": list(eye)}[positions]
    for e in range(len(graph.edges)):
        for r in rows:
            yield e, r


def cell_axes(positions: str) -> tuple[str, ...]:
    return ("edge", "pos") if positions == "each" else ("edge",)


def normalised_result(kind: str, runs: Runs, values: Tensor, *, axes: tuple[str, ...], shape: tuple[int, ...],
                      labels: dict[str, list[str]], metadata: dict, extras: dict[str, Tensor] | None = None) -> Result:
    """A Result of shape ``shape`` from ``values`` [cell, batch], the metric of each cell's run (or its estimate),
    normalised as probes.patching normalises node patching: 0 = corrupted, 1 = clean (batch-mean metrics);
    per-example ``base_score + (m_i - base_i) / Δ`` (base_score 0 denoising, 1 noising)."""
    base_score = 0.0 if runs.direction == "denoise" else 1.0
    clean, corrupted = runs.clean_metric.mean().item(), runs.corrupted_metric.mean().item()
    denom = clean - corrupted
    if denom == 0:
        warnings.warn("clean and corrupted runs have the same mean metric: normalised scores are undefined (nan)")
        denom = float("nan")
    values = values.detach().float().cpu()
    per_example = base_score + (values - runs.base_metric.float().cpu()[None]) / denom  # [cell, batch]
    raw = values.mean(-1).reshape(shape)
    return Result(
        kind=kind, scores=(raw - corrupted) / denom, axes=axes, labels=labels,
        per_example=per_example.T.reshape(-1, *shape), extras={"metric": raw, **(extras or {})},
        metadata={"direction": runs.direction, "metric": runs.metric_name, "n_sequences": int(runs.base.inputs.shape[0]),
                  "query_pos": runs.q, "scale": SCALE, "value_name": "normalised effect", "clean_metric": clean,
                  "corrupted_metric": corrupted, **metadata},
    )


def pos_ticks(pos_labels: tuple[str, ...], n_pos: int) -> list[str]:
    """The tick labels of a "pos" axis: the batch's position labels, or the indices where they do not fit."""
    return list(pos_labels) if len(pos_labels) == n_pos else [str(p) for p in range(n_pos)]


def edge_result(kind: str, runs: Runs, values: Tensor, *, positions: str, pos_labels: tuple[str, ...],
                metadata: dict, extras: dict[str, Tensor] | None = None) -> Result:
    """``normalised_result`` over the edges [edge] (positions "all" / "query") or [edge, pos] ("each"), with the
    graph in the metadata."""
    graph, n_pos = runs.graph, runs.base.inputs.shape[1]
    labels = {"edge": graph.labels()}
    if positions == "each":
        labels["pos"] = pos_ticks(pos_labels, n_pos)
    shape = (len(graph.edges), n_pos) if positions == "each" else (len(graph.edges),)
    return normalised_result(
        kind, runs, values, axes=cell_axes(positions), shape=shape, labels=labels, extras=extras,
        metadata={"positions": positions, "senders": [s.name for s in graph.senders],
                  "receivers": [r.name for r in graph.receivers],
                  "edges": [[graph.senders[s].name, graph.receivers[r].name] for s, r in graph.edges], **metadata})


def as_matrix(result: Result) -> Result:
    """An edge Result (axes ("edge",)) as a [sender, receiver] matrix, NaN where there is no edge."""
    if result.axes != ("edge",):
        raise ValueError(f"as_matrix takes a Result over ('edge',), got axes {result.axes}")
    senders, receivers = result.metadata["senders"], result.metadata["receivers"]
    matrix = torch.full((len(senders), len(receivers)), float("nan"))
    for (s, r), value in zip(result.metadata["edges"], result.scores.tolist()):
        matrix[senders.index(s), receivers.index(r)] = value
    return Result(result.kind, matrix, ("sender", "receiver"), {"sender": senders, "receiver": receivers},
                  metadata=result.metadata)
