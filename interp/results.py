"""Result: what every probe returns. A tensor whose axes are named by ``axes``, tick labels, per-example values and metadata.

The CLI prints it and writes JSON, the dashboard plots it, a notebook gets a DataFrame from it. The JSON round
trip is lossless: tensors are stored with their dtype and shape, floats as Python floats (exact for float32
and float64).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor


# Result kinds whose probe draws a richer figure than the generic one: kind -> "module:function"
FIGURES: dict[str, str] = {
    "saturation": "probes.saturation:saturation_figure",
    "saturation_comparison": "probes.saturation:saturation_figure",
    "algorithm_map": "probes.algorithms:figure_map",
    "pca": "probes.fourier:figure_pca",
    "edge_patching": "probes.circuits.figures:graph_figure",
    "edge_attribution": "probes.circuits.figures:graph_figure",
    "faithfulness": "probes.circuits.figures:faithfulness_figure",
}


def tick_label(layer: int | None = None, head: int | None = None) -> str:
    """TransformerLens-style name of a layer ("L0"), of an entry of a head axis ("H1"), or of one head ("L0H1")."""
    if layer is None and head is None:
        raise ValueError("tick_label needs a layer, a head or both")
    return ("" if layer is None else f"L{int(layer)}") + ("" if head is None else f"H{int(head)}")


def tick_labels(axis: str, indices: int | Iterable[int]) -> list[str]:
    """Tick labels of a "layer" or "head" axis, one ``tick_label`` per index; an int n means 0..n-1."""
    if axis not in ("layer", "head"):
        raise ValueError(f"axis must be 'layer' or 'head', got {axis!r}")
    items = range(indices) if isinstance(indices, int) else indices
    return [tick_label(**{axis: i}) for i in items]


def tensor_to_json(t: Tensor) -> dict[str, Any]:
    """A tensor as {"dtype", "shape", "data"} with exact values."""
    t = t.detach().cpu()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "data": t.flatten().tolist()}


def tensor_from_json(d: dict[str, Any]) -> Tensor:
    return torch.tensor(d["data"], dtype=getattr(torch, d["dtype"])).reshape(d["shape"])


@dataclass
class Result:
    """scores: [*axes] the main score, axis i named ``axes[i]`` (torch 2.13 has no named tensors); per_example: [example, *axes] when the probe keeps them (error bars);
    labels: tick labels per axis (e.g. {"pos": ["x0", "y0", ...]}); extras: other named tensors the probe
    reports beside the main score (e.g. the raw metric); metadata: checkpoint, corruption, metric, seed, ...
    """

    kind: str
    scores: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    per_example: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = tuple(self.axes)
        if self.scores.dim() != len(self.axes):
            raise ValueError(f"scores has {self.scores.dim()} dims but axes names {len(self.axes)}: {self.axes}")
        if self.per_example is not None and tuple(self.per_example.shape[1:]) != tuple(self.scores.shape):
            raise ValueError(f"per_example must be [example, *{tuple(self.scores.shape)}], got {tuple(self.per_example.shape)}")
        for axis, ticks in self.labels.items():
            size = self.scores.shape[self.axes.index(axis)]
            if len(ticks) != size:
                raise ValueError(f"axis {axis!r} has {size} entries but {len(ticks)} labels")

    @property
    def sem(self) -> Tensor | None:
        """Standard error of the mean over examples, [*axes], when per-example scores are kept."""
        if self.per_example is None or self.per_example.shape[0] < 2:
            return None
        return self.per_example.float().std(dim=0) / self.per_example.shape[0] ** 0.5

    def ticks(self, axis: str) -> list[str]:
        """Labels of ``axis``, or its indices as strings."""
        return self.labels.get(axis) or [str(i) for i in range(self.scores.shape[self.axes.index(axis)])]

    def to_frame(self):
        """Long-format pandas DataFrame: one row per cell, a column per axis, ``value`` (and ``sem``), and
        a column per extra of the same shape."""
        import pandas as pd

        sem = self.sem
        columns = {"value": self.scores} | ({} if sem is None else {"sem": sem})
        columns |= {k: v for k, v in self.extras.items() if tuple(v.shape) == tuple(self.scores.shape)}
        data = {k: v.detach().cpu().flatten().tolist() for k, v in columns.items()}  # row-major, as the index
        if not self.axes:  # a single number: one row, no axis columns
            return pd.DataFrame(data)
        index = pd.MultiIndex.from_product([self.ticks(a) for a in self.axes], names=list(self.axes))
        return pd.DataFrame(data, index=index).reset_index()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "axes": list(self.axes),
            "labels": self.labels,
            "scores": tensor_to_json(self.scores),
            "per_example": None if self.per_example is None else tensor_to_json(self.per_example),
            "extras": {k: tensor_to_json(v) for k, v in self.extras.items()},
            "metadata": self.metadata,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text; with ``path``, also written there."""
        text = json.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        return cls(
            kind=d["kind"],
            scores=tensor_from_json(d["scores"]),
            axes=tuple(d["axes"]),
            labels=d.get("labels", {}),
            per_example=None if d.get("per_example") is None else tensor_from_json(d["per_example"]),
            extras={k: tensor_from_json(v) for k, v in d.get("extras", {}).items()},
            metadata=d.get("metadata", {}),
        )

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Result":
        """Inverse of ``to_json``: from JSON text or a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return cls.from_dict(json.loads(text))

    def figure(self, title: str | None = None):
        """A plotly figure: the probe's own for kinds in ``FIGURES`` (saturation curves with the training range
        shaded, PCA scatter coloured by residue, algorithm maps, circuit graphs, faithfulness curves); otherwise a
        bar chart (with error bars) for one axis, a heatmap for two, a row of heatmaps (one per entry of the first
        axis) for three."""
        if self.kind in FIGURES:
            import importlib

            module, function = FIGURES[self.kind].split(":")
            fig = getattr(importlib.import_module(module), function)(self)
            return fig.update_layout(title=title) if title else fig
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        title = title or self.metadata.get("title") or self.kind
        scores = self.scores.detach().float().cpu()
        if scores.dim() == 1:
            sem = self.sem
            error_y = None if sem is None else {"type": "data", "array": sem.tolist()}
            fig = go.Figure(go.Bar(x=self.ticks(self.axes[0]), y=scores.tolist(), error_y=error_y))
            fig.update_layout(xaxis_title=self.axes[0], yaxis_title=self.metadata.get("value_name", "value"))
        elif scores.dim() == 2:
            fig = go.Figure(go.Heatmap(z=scores.tolist(), x=self.ticks(self.axes[1]), y=self.ticks(self.axes[0]),
                                       colorscale="RdBu", zmid=0))
            fig.update_layout(xaxis_title=self.axes[1], yaxis_title=self.axes[0])
        elif scores.dim() == 3:
            outer = self.ticks(self.axes[0])
            fig = make_subplots(rows=1, cols=len(outer), subplot_titles=[f"{self.axes[0]} {t}" for t in outer])
            vmax = scores.abs().max().item() or 1.0
            for i in range(len(outer)):
                fig.add_trace(go.Heatmap(z=scores[i].tolist(), x=self.ticks(self.axes[2]), y=self.ticks(self.axes[1]),
                                         colorscale="RdBu", zmin=-vmax, zmax=vmax, showscale=i == 0), row=1, col=i + 1)
        else:
            raise ValueError(f"figure() draws 1 to 3 axes; this result has {scores.dim()}: {self.axes}")
        fig.update_layout(title=title)
        return fig
