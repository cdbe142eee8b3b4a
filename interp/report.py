"""Print a probe Result as rich tables: what `interp patch` and friends show in the terminal."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from interp.results import Result

MAX_COLUMNS = 40  # wider results (a p x p grid) are summarised, not printed cell by cell


def fmt(value: float) -> str:
    return f"{value:.3g}"


def matrix_table(result: Result, lead: tuple[int, ...] = (), title: str | None = None) -> Table:
    """A 2-D slice (the last two axes, after indexing ``lead``) as a table: the longer axis runs down the
    rows so positions read top to bottom; cells are score (± sem when per-example values are kept)."""
    scores = result.scores.float()[lead]
    sem = None if result.sem is None else result.sem[lead]
    row_axis, col_axis = result.axes[-2], result.axes[-1]
    if scores.shape[1] > scores.shape[0]:
        scores, sem, row_axis, col_axis = scores.T, None if sem is None else sem.T, col_axis, row_axis
    table = Table(title=title)
    table.add_column(f"{row_axis} \\ {col_axis}")
    for tick in result.ticks(col_axis):
        table.add_column(tick, justify="right")
    for i, tick in enumerate(result.ticks(row_axis)):
        cells = [fmt(v) for v in scores[i].tolist()]
        if sem is not None:
            cells = [f"{c} ± {fmt(e)}" for c, e in zip(cells, sem[i].tolist())]
        table.add_row(tick, *cells)
    return table


def vector_table(result: Result, title: str | None = None) -> Table:
    axis = result.axes[0]
    table = Table(title=title)
    table.add_column(axis)
    table.add_column(result.metadata.get("value_name", "value"), justify="right")
    sem = result.sem
    if sem is not None:
        table.add_column("sem", justify="right")
    for i, tick in enumerate(result.ticks(axis)):
        row = [tick, fmt(result.scores[i].item())] + ([fmt(sem[i].item())] if sem is not None else [])
        table.add_row(*row)
    return table


def summary(result: Result) -> dict[str, Any]:
    """Scalar metadata worth a line under the table."""
    return {k: v for k, v in result.metadata.items() if isinstance(v, (int, float, str)) and k not in ("title",)}


def print_result(result: Result, title: str | None = None, console: Console | None = None) -> None:
    """Tables for up to three axes (one table per entry of the first axis for three); wider results get a
    short summary. Then a table for each extra named in ``metadata["print_extras"]`` that has the scores' shape
    (one or two axes), then the scalar metadata."""
    console = console or Console()
    title = title or f"{result.kind}"
    shape = tuple(result.scores.shape)
    if result.scores.dim() == 0:
        console.print(f"{title}: {fmt(result.scores.item())}")
    elif result.scores.dim() == 1 and shape[0] <= 4 * MAX_COLUMNS:
        console.print(vector_table(result, title))
    elif result.scores.dim() == 2 and min(shape) <= MAX_COLUMNS // 4:
        console.print(matrix_table(result, title=title))
    elif result.scores.dim() == 3 and min(shape[1:]) <= MAX_COLUMNS // 4:
        for i, tick in enumerate(result.ticks(result.axes[0])):
            console.print(matrix_table(result, lead=(i,), title=f"{title}: {result.axes[0]} {tick}"))
    else:
        s = result.scores.float()
        console.print(f"{title}: axes {result.axes}, shape {shape}, mean {fmt(s.nanmean().item())}, "
                      f"min {fmt(s.min().item())}, max {fmt(s.max().item())} (write --out for all values)")
    for name in result.metadata.get("print_extras", ()):
        extra = result.extras.get(name)
        if extra is not None and tuple(extra.shape) == shape and extra.dim() in (1, 2):
            side = Result(kind=name, scores=extra, axes=result.axes, labels=result.labels, metadata={"value_name": name})
            console.print(vector_table(side, f"{title}: {name}") if extra.dim() == 1 else matrix_table(side, title=f"{title}: {name}"))
    for key, value in summary(result).items():
        console.print(f"  {key}: {value}")
