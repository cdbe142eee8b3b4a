import torch

from interp.results import Result


def make():
    g = torch.Generator().manual_seed(0)
    per = torch.randn(5, 2, 3, generator=g)
    return Result(kind="patching", scores=per.mean(0), axes=("layer", "pos"), labels={"pos": ["x0", "y0", "x1"]},
                  per_example=per, extras={"raw": torch.randn(2, 3, generator=g, dtype=torch.float64)},
                  metadata={"checkpoint": "models/m", "corruption": "params", "metric": "squared_error_over_d", "seed": 0})


def test_json_round_trip_is_lossless(tmp_path):
    r = make()
    back = Result.from_json(r.to_json(tmp_path / "r.json"))
    assert torch.equal(back.scores, r.scores) and torch.equal(back.per_example, r.per_example)
    assert back.extras["raw"].dtype == torch.float64 and torch.equal(back.extras["raw"], r.extras["raw"])
    assert back.axes == r.axes and back.labels == r.labels and back.metadata == r.metadata
    assert torch.equal(Result.from_json(tmp_path / "r.json").scores, r.scores)


def test_frame_scores_and_figure():
    r = make()
    df = r.to_frame()
    assert list(df.columns) == ["layer", "pos", "value", "sem", "raw"] and len(df) == 6
    assert df.loc[(df.layer == "1") & (df.pos == "y0"), "value"].item() == r.scores[1, 1].item()
    expected_sem = r.per_example[:, 0, 2].std() / 5**0.5
    assert abs(df.loc[(df.layer == "0") & (df.pos == "x1"), "sem"].item() - expected_sem.item()) < 1e-6
    fig = r.figure()
    assert fig.data[0].type == "heatmap" and list(fig.data[0].x) == ["x0", "y0", "x1"]
