"""Circuits: the edge graph of a model, exact edge patching (batched), EAP, EAP-IG, path patching, faithfulness.

The graph (``graph.Graph``)
    Senders: the embedding ("embed": the residual entering block 0, hook_embed + hook_pos_embed or the read-in
    output), every head ("L0H1": its hook_z times W_O[head]; b_O is not a head's) and every MLP ("L0.mlp": its
    hook_mlp_out, b_out included). Receivers: each head's query, key and value inputs ("L1H0.q", "L1H0.k",
    "L1H0.v"), each MLP's input ("L1.mlp") and the read-out ("readout": the final norm and unembedding, at the
    query row). An edge runs from every sender upstream of a receiver: a head of layer l reads the embedding and
    every head and MLP of the layers before l, the MLP of layer l also the heads of layer l, the read-out all.
    A receiver's input is the residual stream as the sum of its senders' outputs plus the b_O of the layers it
    reads (``graph.receiver_inputs``; tests/test_circuits.py checks it against the cached resid_pre / resid_mid /
    resid_post to 1e-5).

Edge patching (``edges.edge_patch``)
    Patching S -> R replaces S's contribution to R's input only: R reads x_R + δ with δ = S(source) - S(base), every
    other receiver reads S as in the base run, and everything downstream of R is recomputed, its norms included.
    Denoising: base = corrupted run, source = clean run; noising: the reverse (as probes.patching). Positions:
    "all" (δ on every row), "query" (on the query row only), "each" (one patch per row: axes ("edge", "pos")).
    Layer norm, TransformerLens's path-patching convention (PR #1396, ``get_act_patch_direct_path``): R's norm keeps
    the base run's scale, so R reads LN(x_R) + w (δ - mean δ) / s_base (RMS: w δ / s_base; no norm: δ), linear in
    δ. ``freeze_ln=False`` recomputes R's norm instead: LN(x_R + δ) - LN(x_R), at R's base input.
    Scores are normalised as probes.patching normalises node patching: 0 = corrupted, 1 = clean (batch means), so
    an edge that changes nothing scores 0 denoising and 1 noising; extras["metric"] is the raw metric.

    Batched: every patched variant is an exact forward pass, and many share one: variants are stacked along the
    batch, ``(variant batch)``, at most ``max_batch`` sequences a pass, grouped by the layer and row they start at.
    Because the norm is frozen, δ enters R in closed form, δ' @ W_Q[h] at hook_q (k, v alike, before rotary),
    δ' @ W_in at the MLP's hook_pre, δ' after the final norm for the read-out (δ' the normalised δ above), computed
    once for all senders of a (layer, kind) (``edges.Entries``). A variant starts at R's layer from the base run's
    cache, and R's layer is computed in closed form (``edges.receiver_block``): a v patch changes its head's z by
    the base pattern @ δv, a q or k patch is recomputed for that head alone (softmax attention without scoring
    hooks; otherwise, and when one variant patches two inputs of a head, the layer runs as a hooked
    TransformerLens block), then the MLP. In a causal model a variant also starts at the first row its δ is
    non-zero (earlier rows enter as the base run's cached keys and values) and stops at the query; the last layer
    computes keys and values for the changed rows and its block for the query row alone; a patch of the last
    layer's q or MLP, or of the read-out, matters at the query row only, and a read-out patch needs no block. A
    variant whose δ is zero on every row it could reach is the base run and needs no pass. Bidirectional models
    (mask "context") run every row of every later layer. Where the blocks allow (``direct.supports``: LN or no norm,
    causal softmax attention, a plain MLP, no hook attached), the pass after the receiver's attention runs on the
    block weights directly, per tile of variants, an MLP patch entering after ln2, and the MLP and next layer's keys
    and values only on the rows a variant's patches change. ``loop.edge_patch_loop`` is the plain reference: one
    hooked forward of the whole model per edge, δ added at TransformerLens's hook_q_input / hook_k_input /
    hook_v_input / hook_mlp_in (split inputs on) or the last resid_post, the norm frozen at its hook_scale.

Path patching (``edges.path_patch``)
    One sender's δ added to the inputs of a chosen set of its receivers at once, everything else recomputed: one
    variant per path (per path and row with positions "each": axes ("path", "pos")). Receivers in one layer take
    the batched engine (each entering as above, through the receiver's norm at the base run's scale). Receivers in
    several layers take one hooked pass each (``loop.hooked_patch``): a later receiver reads the input the earlier
    patches changed, plus δ, through its norm, its own scale frozen at the base run's (``loop.receiver_scale``)
    unless ``freeze_ln`` is False.

EAP and EAP-IG (``attribution.edge_attribution``)
    EAP (Syed et al. 2023): score(S -> R) = δ_S . ∂metric/∂x_R at the base run (δ_S as above, x_R R's input, the
    gradient taken through R's norm with its scale frozen, as the patch is), from one forward and backward pass.
    It is the first-order term of exact edge patching, equal to it where the metric is linear in R's input.
    EAP-IG (Hanna et al. 2024): the gradient averaged over ``ig_steps`` runs whose input embeddings (resid_pre of
    block 0) lie on the line from the source run's to the base run's, at k / m for k = 1..m (m = 1 is EAP), the
    paper's sum (github hannamw/EAP-IG steps k = 0..m-1 from the corrupted end instead).
    Estimates are reported on the exact scale: base_score + score / Δ; ``correlation`` compares two Results.

Faithfulness (``circuit_runs.faithfulness``)
    A circuit is a set of edges (cells); the circuit-only model runs the clean input with every edge not in the
    circuit ablated: its receiver reads the ablated sender output (zero; the clean batch's mean per position; or,
    resample, the corrupted run's) in place of the sender's output in this run, each receiver's norm frozen at the
    clean run's scale unless ``freeze_ln=False``. faithfulness(C) = (m(C) - m(∅)) / (m(full) - m(∅)): 1 for the
    full graph (the clean run) and 0 for the empty one, whose metric is that of the run with every node ablated.
    Completeness is the same scale for the full graph minus the circuit. Circuits are the top-k cells by
    |score - base_score| of a scoring Result (``settings.method``).
"""
from __future__ import annotations

from dataclasses import dataclass

from interp.results import Result
from interp.spec import Model
from interp.tasks import Batch, TaskBase
from probes.attribution_patching import correlation  # Pearson and Spearman of two Results (scipy.stats)
from probes.settings import CIRCUIT_METHODS as METHODS
from probes.settings import CircuitSettings

from .attribution import edge_attribution
from .edges import edge_patch, path_patch, run_adds
from .loop import edge_patch_loop
from .circuit_runs import circuit_metric, faithfulness, top_cells
from .graph import Graph, as_matrix, biases, receiver_inputs, sender_outputs


def edge_scores(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings: CircuitSettings | None = None,
                progress: bool = False) -> Result:
    """Every edge's score by ``settings.method``: exact edge patching, EAP or EAP-IG; [edge] or [edge, pos]."""
    settings = settings or CircuitSettings()
    if settings.method == "exact":
        return edge_patch(model, task, clean, corrupted, settings, progress=progress)
    return edge_attribution(model, task, clean, corrupted, settings)


@dataclass(frozen=True)
class Circuit:
    """What ``circuit`` finds: every edge's score by the settings' method, the same as a [sender, receiver]
    matrix (None for positions "each"), the faithfulness curve of its top-k circuits, and, for eap / eap-ig, the
    exact edge patching it estimates (``edges.metadata["exact_correlation"]`` compares them)."""

    edges: Result  # [edge] (or [edge, pos]); labels "sender -> receiver"
    matrix: Result | None  # [sender, receiver], NaN where there is no edge
    faithfulness: Result  # [k]; extras["completeness"]
    exact: Result | None

    def results(self) -> dict[str, Result]:
        """Every Result by name, flat (for the CLI and JSON)."""
        return {name: r for name in ("edges", "matrix", "faithfulness", "exact") if (r := getattr(self, name)) is not None}


def circuit(model: Model, task: TaskBase, clean: Batch, corrupted: Batch, settings: CircuitSettings | None = None,
            progress: bool = False) -> Circuit:
    """Edge scores by ``settings.method``, their faithfulness curve under ``settings.ablation``, and for an
    estimate (eap, eap-ig) exact edge patching beside it with the Pearson / Spearman correlation and the share of
    the exact top ``settings.top`` edges the estimate's top ``settings.top`` recovers."""
    settings = settings or CircuitSettings()
    scores = edge_scores(model, task, clean, corrupted, settings, progress=progress)
    exact = None
    if settings.method != "exact":
        exact = edge_patch(model, task, clean, corrupted, settings, progress=progress)
        k = min(settings.top, exact.scores.numel())
        shared = (top_cells(scores, k) & top_cells(exact, k)).sum().item()
        scores.metadata["exact_correlation"] = correlation(scores, exact) | {f"top{k}_recovered": shared / max(k, 1)}
    curve = faithfulness(model, task, clean, corrupted, settings, scores=scores)
    matrix = as_matrix(scores) if scores.axes == ("edge",) else None
    return Circuit(scores, matrix, curve, exact)


__all__ = [
    "METHODS", "CircuitSettings", "Circuit", "circuit", "Graph", "edge_scores", "edge_patch", "edge_patch_loop", "edge_attribution",
    "path_patch", "faithfulness", "circuit_metric", "top_cells", "correlation", "as_matrix", "sender_outputs",
    "receiver_inputs", "biases", "run_adds",
]
