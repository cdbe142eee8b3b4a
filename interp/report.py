"""Print a probe Result for a person: what `interp patch` and friends show in the terminal.

Everything fits 80 columns. A table that would be wider (or longer than ``MAX_ROWS``) is replaced by its
``TOP`` largest cells by magnitude and a line saying that ``--out`` writes every value. Under the table come the
extras the probe names in ``metadata["print_extras"]`` (the shuffled control of a probe, the entropy and LN
scale of saturation, the ratio-matching share by shot of the algorithm map), then the scalar metadata, and a
dictionary of numbers (attribution patching's correlation with exact patching) on one line.
"""
from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from interp.results import Result

WIDTH = 80
MAX_ROWS = 40
TOP = 10


def fmt(value: float) -> str:
    return f"{value:.3g}"


def _cells(scores: torch.Tensor, sem: torch.Tensor | None) -> list[list[str]]:
    rows = [[fmt(v) for v in row] for row in scores.tolist()]
    if sem is not None:
        rows = [[f"{c}±{fmt(e)}" for c, e in zip(row, err)] for row, err in zip(rows, sem.tolist())]
    return rows


def fits_width(header: list[str], rows: list[list[str]]) -> bool:
    """Whether a rich table of these strings (3 characters of padding and border a column) fits ``WIDTH``."""
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)] if rows else [len(h) for h in header]
    return sum(w + 3 for w in widths) + 1 <= WIDTH


def _fits(header: list[str], rows: list[list[str]]) -> bool:
    return fits_width(header, rows) and len(rows) <= MAX_ROWS


def matrix_table(result: Result, lead: tuple[int, ...] = (), title: str | None = None) -> Table | None:
    """A 2-D slice (the last two axes, after indexing ``lead``) as a table: the longer axis runs down the
    rows so positions read top to bottom; cells are score (± sem when per-example values are kept). None when
    the table would not fit 80 columns."""
    scores = result.scores.float()[lead]
    sem = None if result.sem is None else result.sem[lead]
    row_axis, col_axis = result.axes[-2], result.axes[-1]
    if scores.shape[1] > scores.shape[0]:
        scores, sem, row_axis, col_axis = scores.T, None if sem is None else sem.T, col_axis, row_axis
    row_ticks, col_ticks = result.ticks(row_axis), result.ticks(col_axis)
    body = [[tick, *cells] for tick, cells in zip(row_ticks, _cells(scores, sem))]
    header = [f"{row_axis} \\ {col_axis}", *col_ticks]
    if not _fits(header, body):
        return None
    table = Table(title=title)
    table.add_column(header[0])
    for tick in col_ticks:
        table.add_column(tick, justify="right")
    for row in body:
        table.add_row(*row)
    return table


def vector_table(result: Result, title: str | None = None) -> Table | None:
    axis = result.axes[0]
    sem = result.sem
    header = [axis, result.metadata.get("value_name", "value")] + (["sem"] if sem is not None else [])
    body = [[tick, fmt(result.scores[i].item())] + ([fmt(sem[i].item())] if sem is not None else [])
            for i, tick in enumerate(result.ticks(axis))]
    if not _fits(header, body):
        return None
    table = Table(title=title)
    for j, name in enumerate(header):
        table.add_column(name, justify="right" if j else "left")
    for row in body:
        table.add_row(*row)
    return table


def top_cells(result: Result, k: int = TOP) -> Table:
    """The ``k`` cells of largest magnitude, one row each, with every axis's tick (for results too wide to print)."""
    scores = result.scores.float()
    sem = result.sem
    flat = scores.abs().flatten()
    known = (~flat.isnan()).nonzero()[:, 0]  # NaN cells have no value (a matrix's missing edge): never listed
    order = known[flat[known].argsort(descending=True)[:k]].tolist()
    of = f"{known.numel()} cells with a value" if known.numel() < flat.numel() else f"{flat.numel()} cells"
    table = Table(title=f"{result.metadata.get('title', result.kind)}: top {len(order)} of {of} by |value|")
    for axis in result.axes:
        table.add_column(axis)
    table.add_column(result.metadata.get("value_name", "value"), justify="right")
    if sem is not None:
        table.add_column("sem", justify="right")
    for i in order:
        index = torch.unravel_index(torch.tensor(i), scores.shape)
        ticks = [result.ticks(a)[int(j)] for a, j in zip(result.axes, index)]
        table.add_row(*ticks, fmt(scores.flatten()[i].item()), *([fmt(sem.flatten()[i].item())] if sem is not None else []))
    return table


def summary(result: Result) -> dict[str, Any]:
    """Scalar metadata worth a line under the table, and dictionaries of numbers (e.g. a correlation)."""
    out: dict[str, Any] = {}
    for k, v in result.metadata.items():
        if k in ("title", "print_extras"):
            continue
        if isinstance(v, (int, float, str)):
            out[k] = v
        elif isinstance(v, dict) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values()):
            out[k] = ", ".join(f"{name} {fmt(x)}" for name, x in v.items())
    return out


def _tables(result: Result, title: str) -> list[Table] | None:
    """The tables that show ``result`` whole, or None when they do not fit."""
    dim = result.scores.dim()
    if dim == 1:
        table = vector_table(result, title)
        return None if table is None else [table]
    if dim == 2:
        table = matrix_table(result, title=title)
        return None if table is None else [table]
    if dim == 3:
        tables = [matrix_table(result, lead=(i,), title=f"{title}: {result.axes[0]} {tick}")
                  for i, tick in enumerate(result.ticks(result.axes[0]))]
        return None if any(t is None for t in tables) or len(tables) > 8 else tables  # type: ignore[return-value]
    return None


def _extra_result(result: Result, name: str, title: str) -> Result | None:
    """An extra as a Result of its own: over the axes ``metadata["extra_axes"]`` names for it (labels from
    ``metadata["extra_labels"]``; beyond two axes, the mean over the rest), else over the scores' leading axes
    when its shape is theirs (a per-shot share beside a [shot, x, y] map)."""
    extra = result.extras.get(name)
    if extra is None or extra.dim() == 0:
        return None
    named = result.metadata.get("extra_axes", {}).get(name)
    if named is not None and len(named) == extra.dim():
        axes, labels, what = tuple(named), result.metadata.get("extra_labels", {}), name
        if len(axes) > 2:
            what = f"{name}, mean over {', '.join(axes[2:])}"
            extra, axes = extra.float().mean(dim=tuple(range(2, extra.dim()))), axes[:2]
    elif tuple(extra.shape) == tuple(result.scores.shape[:extra.dim()]):
        axes, labels, what = result.axes[:extra.dim()], result.labels, name
    else:
        return None
    return Result(kind=name, scores=extra, axes=axes, labels={a: labels[a] for a in axes if a in labels},
                  metadata={"value_name": name, "title": f"{title}: {what}"})


def print_result(result: Result, title: str | None = None, console: Console | None = None) -> None:
    """The result's tables when they fit 80 columns, else its top cells; then its named extras and metadata."""
    console = console or Console(width=WIDTH)
    title = title or f"{result.kind}"
    if result.scores.dim() == 0:
        console.print(f"{title}: {fmt(result.scores.item())}")
    else:
        tables = _tables(result, title)
        if tables is None:
            s = result.scores.float()
            known = s[~s.isnan()]  # NaN marks a cell without a value (a matrix's missing edge)
            stats = (f"mean {fmt(known.mean().item())}, min {fmt(known.min().item())}, max {fmt(known.max().item())}"
                     if known.numel() else "every value NaN")
            missing = f" ({s.numel() - known.numel()} NaN)" if 0 < known.numel() < s.numel() else ""
            console.print(f"{title}: axes {result.axes}, shape {tuple(s.shape)}, {stats}{missing}; write --out for every value")
            tables = [top_cells(result)]
        for table in tables:
            console.print(table)
    sides = [r for r in (_extra_result(result, name, title) for name in result.metadata.get("print_extras", ())) if r]
    vectors = [r for r in sides if r.scores.dim() == 1]
    if len(vectors) > 1 and len({(r.axes, tuple(r.ticks(r.axes[0]))) for r in vectors}) == 1:  # one table, a column each
        axis = vectors[0].axes[0]
        both = Result(kind="extras", scores=torch.stack([r.scores.float() for r in vectors], dim=1), axes=(axis, "value"),
                      labels={axis: vectors[0].ticks(axis), "value": [r.kind for r in vectors]})
        table = matrix_table(both, title=f"{title}: by {axis}")
        if table is not None:
            console.print(table)
            sides = [r for r in sides if r not in vectors]
    for side in sides:
        for table in _tables(side, side.metadata["title"]) or [top_cells(side)]:
            console.print(table)
    for key, value in summary(result).items():
        console.print(f"  {key}: {value}")
