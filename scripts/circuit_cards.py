"""Circuits across the zoo: exact edge patching, EAP and EAP-IG against it, and faithfulness curves.

    python scripts/circuit_cards.py                     # every model in MODELS
    python scripts/circuit_cards.py modular-p11-d2      # some of them

For each model, on 64 sequences of its own task (seed 0, corruption params, denoising, resample ablation):
- exact edge patching of every edge over all positions, and EAP and EAP-IG (5 steps) beside it: Pearson and
  Spearman correlation with exact, and the share of the exact top 20 edges that each one's top 20 recovers;
- the faithfulness of the top-k exact circuits at every k, and the smallest k that reaches 0.9;
- which edges carry the context to the query row: exact edge patching with one patch per row
  (positions "each"), the top cells by effect.
Writes docs/CIRCUITS.md, models/<name>/circuit.json, and a "Circuit" section at the end of models/<name>/CARD.md.
Public API only (``interp.circuit``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

import interp
from probes.settings import CircuitSettings

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("modular-p11-d2", "modular-p7-d2", "modular-p7-d4", "linear-d5")
BASE = CircuitSettings(n=64, seed=0, top=20, ablation="resample")
MARK = "<!-- circuit: written by scripts/circuit_cards.py -->"


def dense_ks(n_cells: int) -> list[int]:
    """Every k up to 100 edges, then every 5th, and all of them."""
    return sorted({*range(0, min(n_cells, 100) + 1), *range(100, n_cells, 5), n_cells})


def top_rows(each: Any, k: int = 8, skip: int | None = None) -> list[dict[str, Any]]:
    """The ``k`` (edge, row) cells of an [edge, pos] Result with the largest |effect|, leaving out row ``skip``."""
    scores = each.scores.clone()
    if skip is not None:
        scores[:, skip] = 0.0
    flat = scores.flatten()
    n_pos = scores.shape[1]
    return [{"edge": each.ticks("edge")[i // n_pos], "pos": each.ticks("pos")[i % n_pos], "effect": float(flat[i])}
            for i in flat.abs().argsort(descending=True)[:k].tolist()]


def measure(name: str) -> dict[str, Any]:
    m = interp.load(ROOT / "models" / name)
    exact = interp.circuit(m, BASE, progress=True)
    n_cells = exact.edges.scores.numel()
    from probes.circuits import faithfulness

    clean, corrupted = interp.api.sample_inputs(m, BASE.n, BASE.seed, BASE.corruption)
    curve = faithfulness(m.model, m.task, clean, corrupted, BASE, scores=exact.edges, ks=dense_ks(n_cells))
    ks, values = [int(k) for k in curve.labels["k"]], curve.scores.tolist()
    reach = next((k for k, v in zip(ks, values) if v >= 0.9), None)
    estimates = {}
    for method in ("eap", "eap-ig"):
        est = interp.circuit(m, BASE, method=method)
        estimates[method] = est.edges.metadata["exact_correlation"]
    each = interp.circuit(m, BASE, positions="each").edges
    carriers, context = top_rows(each), top_rows(each, skip=each.metadata["query_pos"])
    top = exact.edges.scores.abs().argsort(descending=True)[:10].tolist()
    return {
        "model": name, "n_edges": n_cells, "n_sequences": BASE.n, "seed": BASE.seed, "ablation": BASE.ablation,
        "metric": exact.edges.metadata.get("metric"),
        "edges_for_0.9": reach, "faithfulness": dict(zip(map(str, ks), values)),
        "completeness_top20": float(exact.faithfulness.extras["completeness"][
            exact.faithfulness.labels["k"].index(str(min(BASE.top, n_cells)))]),
        "top_exact": [{"edge": exact.edges.ticks("edge")[i], "effect": float(exact.edges.scores[i])} for i in top],
        "estimates": estimates, "carriers": carriers, "context_carriers": context,
    }


def card_section(r: dict[str, Any]) -> str:
    est = "; ".join(f"{m}: Pearson {v['pearson']:.2f}, Spearman {v['spearman']:.2f}, top-20 recovered "
                    f"{v['top20_recovered']:.0%}" for m, v in r["estimates"].items())
    lines = [MARK, "", "## Circuit (exact edge patching)", "",
             f"`python scripts/circuit_cards.py {r['model']}`: {r['n_sequences']} sequences, seed {r['seed']}, corruption "
             f"params, denoising, metric {r['metric']}, edges outside the circuit resample-ablated.", "",
             f"- Edges for 90% faithfulness: **{r['edges_for_0.9']}** of {r['n_edges']} (completeness of the top 20: "
             f"{r['completeness_top20']:.2f}).",
             "- Top edges: " + ", ".join(f"{e['edge']} ({e['effect']:.2f})" for e in r["top_exact"][:6]) + ".",
             "- One patch per row, the largest cells: "
             + ", ".join(f"{c['edge']} at {c['pos']} ({c['effect']:.2f})" for c in r["carriers"][:4]) + ".",
             "- The edges that carry the context (rows before the query): "
             + ", ".join(f"{c['edge']} at {c['pos']} ({c['effect']:.2f})" for c in r["context_carriers"][:6]) + ".",
             f"- Estimates against exact: {est}.", ""]
    return "\n".join(lines)


def write_card(r: dict[str, Any]) -> None:
    card = ROOT / "models" / r["model"] / "CARD.md"
    text = card.read_text()
    text = text.split(MARK)[0].rstrip() + "\n\n" + card_section(r)
    card.write_text(text)
    (ROOT / "models" / r["model"] / "circuit.json").write_text(json.dumps(r, indent=1))


def write_doc(rows: list[dict[str, Any]]) -> None:
    head = ["model", "edges", "edges for 0.9", "EAP r / ρ", "EAP top-20", "EAP-IG r / ρ", "EAP-IG top-20"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        e, g = r["estimates"]["eap"], r["estimates"]["eap-ig"]
        table.append(f"| `{r['model']}` | {r['n_edges']} | {r['edges_for_0.9']} | {e['pearson']:.2f} / {e['spearman']:.2f} "
                     f"| {e['top20_recovered']:.0%} | {g['pearson']:.2f} / {g['spearman']:.2f} | {g['top20_recovered']:.0%} |")
    doc = ROOT / "docs" / "CIRCUITS.md"
    intro = doc.read_text().split("<!-- table -->")[0] if doc.exists() else "# Circuits across the zoo\n\n"
    doc.write_text(intro + "<!-- table -->\n" + "\n".join(table) + "\n\nThe edges that carry the context to the query "
                   "(exact edge patching, one patch per row, the largest cells at rows before the query; the query row "
                   "itself is held by the last layer's edges into the MLP and the read-out):\n\n" + "\n".join(
        f"- `{r['model']}`: " + ", ".join(f"{c['edge']} at {c['pos']} ({c['effect']:.2f})" for c in r["context_carriers"][:5])
        for r in rows) + "\n")


def main(names: list[str]) -> None:
    torch.manual_seed(0)
    rows = []
    for name in names or MODELS:
        r = measure(name)
        write_card(r)
        rows.append(r)
        print(name, r["edges_for_0.9"], r["estimates"], flush=True)
    if not names:
        write_doc(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
