"""What the CLI prints: every line within 80 columns, the top cells of a wide result, the named extras."""
import io

import torch
from rich.console import Console

from interp.report import WIDTH, print_result
from interp.results import Result


def printed(result: Result) -> list[str]:
    out = io.StringIO()
    print_result(result, console=Console(file=out, width=WIDTH))
    return out.getvalue().splitlines()


def test_a_wide_result_prints_its_top_cells_within_80_columns():
    scores = torch.zeros(2, 4, 47)
    scores[1, 2, 40], scores[0, 3, 5] = 0.9, -0.5  # the two largest by magnitude
    labels = {"layer": ["L0", "L1"], "head": [f"H{h}" for h in range(4)], "pos": [f"p{i}" for i in range(47)]}
    lines = printed(Result("patching", scores, ("layer", "head", "pos"), labels=labels))
    assert max(map(len, lines)) <= WIDTH and len(lines) < 30
    cells = [line for line in lines if "│" in line]
    assert "L1" in cells[0] and "H2" in cells[0] and "p40" in cells[0] and "0.9" in cells[0]
    assert "L0" in cells[1] and "H3" in cells[1] and "-0.5" in cells[1]
    assert any("--out" in line for line in lines)


def test_a_narrow_result_prints_whole():
    scores = torch.arange(6.0).reshape(2, 3)
    lines = printed(Result("dla", scores, ("layer", "head"), labels={"layer": ["L0", "L1"], "head": ["H0", "H1", "H2"]}))
    assert max(map(len, lines)) <= WIDTH
    assert sum("│" in line for line in lines) == 3  # one row per head (the longer axis runs down), all values
    assert all(f"{v:g}" in "".join(lines) for v in range(6))


def test_extras_and_dict_metadata_are_printed():
    scores = torch.rand(3, 5, 5)
    extras = {"share": torch.tensor([0.25, 0.5, 0.75]), "acc": torch.tensor([0.1, 0.2, 0.3])}
    r = Result("algorithm_map", scores, ("shots", "x", "y"), labels={"shots": ["1", "2", "8"]}, extras=extras,
               metadata={"print_extras": ["acc", "share"], "exact_correlation": {"pearson": 0.9876, "spearman": 0.5}})
    text = "\n".join(printed(r))
    assert "acc" in text and "share" in text and "0.75" in text and "0.3" in text
    assert "exact_correlation: pearson 0.988, spearman 0.5" in text


def test_nan_cells_are_left_out_of_the_summary_and_the_top_cells():
    scores = torch.full((11, 27), float("nan"))  # a sender x receiver matrix: NaN where there is no edge
    scores[0, 3], scores[4, 9], scores[2, 2] = 0.25, -0.75, 0.5
    lines = printed(Result("edge_patching", scores, ("sender", "receiver")))
    head = " ".join(lines[:2])
    assert "mean 0" in head and "min -0.75" in head and "max 0.5" in head and "(294 NaN)" in head and "nan" not in head
    cells = [line for line in lines if "│" in line]
    assert len(cells) == 3 and "-0.75" in cells[0] and "0.5" in cells[1] and "0.25" in cells[2]  # no NaN row
    assert "3 cells with a value" in " ".join(" ".join(lines).split())
