"""The notebook API and the probe commands of the CLI, on tiny checkpoints trained once per session."""
import json
import subprocess
import sys

import pytest
import torch

import interp
from interp.cli import main
from probes.patching import patch as patch_probe
from interp.results import Result

INTERP = [sys.executable, "-m", "interp.cli"]


@pytest.fixture(scope="session")
def modular_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "modular"
    interp.train("modular", out=out, steps=30, n_examples=6, d_model=32, n_heads=2, act_fn="relu", progress=False,
                 task_args={"p": 5, "n_tasks": 6})
    return out


@pytest.fixture(scope="session")
def linear_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "linear"
    interp.train("linear", out=out, steps=30, n_examples=6, d_model=16, progress=False, task_args={"d_x": 2})
    return out


def test_api_patch_matches_the_probe_on_the_same_seeded_inputs(modular_ckpt):
    m = interp.load(modular_ckpt)
    r = interp.patch(m, site="z", layer=1, n=8, seed=3)
    g = torch.Generator().manual_seed(3)
    clean = m.task.sample(8, m.train["n_examples"], g)
    corrupted = m.task.corrupt(clean, "params", g)
    direct = patch_probe(m.model, m.task, clean, corrupted, site="z", layer=1)
    assert torch.equal(r.scores, direct.scores)
    assert r.axes == ("layer", "head", "pos") and r.labels["pos"][-1] == clean.pos_labels[-1]
    assert r.metadata["checkpoint"] == str(modular_ckpt) and r.metadata["seed"] == 3 and r.metadata["corruption"] == "params"
    frame = r.to_frame()
    assert len(frame) == r.scores.numel() and {"layer", "head", "pos", "value"} <= set(frame.columns)
    assert r.figure().data


def test_api_attribution_reports_correlation_with_exact_patching(modular_ckpt):
    r = interp.attribute(modular_ckpt, method="attrib", n=16)
    corr = r.metadata["exact_correlation"]
    assert set(corr) >= {"pearson", "spearman"} and -1 <= corr["pearson"] <= 1
    assert interp.attribute(modular_ckpt, method="dla", n=8).axes == ("layer", "head")


def test_cli_patch_sweeps_every_layer_and_writes_the_api_result(modular_ckpt, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["patch", "--ckpt", str(modular_ckpt), "--n", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "y5" in printed and "normalised effect" in printed  # positions labelled by role
    r = Result.from_json(out)
    assert r.axes == ("layer", "pos") and r.scores.shape[0] == 2  # no --layer: all layers
    assert torch.equal(r.scores, interp.patch(modular_ckpt, n=8).scores)
    assert main(["patch", "--ckpt", str(modular_ckpt), "--layer", "1", "--site", "head", "--n", "4"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["patch", "--ckpt", "{ckpt}", "--layer", "2"], "--layer 2 does not exist"),
    (["patch", "--ckpt", "{ckpt}", "--site", "nope"], "--site: invalid choice: 'nope'"),
    (["patch", "--ckpt", "/no/such/model", "--layer", "1"], "no checkpoint folder"),
    (["patch", "--ckpt", "{ckpt}", "--metric", "squared_error_over_d"], "does not apply"),
    (["saturation", "--ckpt", "{ckpt}"], "modular"),
])
def test_cli_probe_bad_input_is_one_line_exit_2(argv, message, modular_ckpt, tmp_path):
    argv = [a.replace("{ckpt}", str(modular_ckpt)) for a in argv] + ["--out", str(tmp_path / "r.json")]
    proc = subprocess.run(INTERP + argv, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_cli_representation_commands_write_json(modular_ckpt, linear_ckpt, tmp_path):
    for argv in (["mlp", "--ckpt", str(modular_ckpt), "--layer", "0"],
                 ["algorithms", "--ckpt", str(modular_ckpt), "--shots", "1,2,5"],
                 ["geometry", "--ckpt", str(modular_ckpt)],
                 ["saturation", "--ckpt", str(linear_ckpt), "--scales", "0.5,1,4", "--n", "32"],
                 ["probe", "--ckpt", str(linear_ckpt), "--target", "w", "--n", "64"],
                 ["attribute", "--ckpt", str(modular_ckpt), "--method", "ablate", "--n", "8"]):
        out = tmp_path / f"{argv[0]}.json"
        assert main(argv + ["--out", str(out)]) == 0, argv
        payload = json.loads(out.read_text())
        results = payload.values() if argv[0] == "mlp" else [payload]
        assert all(Result.from_dict(d).scores.numel() > 0 for d in results)
    sat = Result.from_json(tmp_path / "saturation.json")
    assert sat.axes == ("scale",) and sat.scores.shape == (3,)
    shots = Result.from_json(tmp_path / "algorithms.json")
    assert shots.axes == ("shots", "x", "y") and shots.scores.shape == (3, 5, 5)


def test_compare_saturation_needs_one_task_and_names_variants(linear_ckpt, modular_ckpt, tmp_path):
    other = tmp_path / "noln"
    interp.train("linear", out=other, steps=10, n_examples=4, d_model=16, normalization="none", progress=False,
                 task_args={"d_x": 2})  # a shorter context than linear_ckpt's 6 examples: the sweep uses 4
    r = interp.compare_saturation({"LN": linear_ckpt, "no LN": other}, scales=[0.5, 1, 8, 16], n=32)
    assert r.axes == ("variant", "side") and r.labels["variant"] == ["LN", "no LN"] and r.labels["side"] == ["B+", "B-"]
    assert r.metadata["ln_final_bound"]["no LN"] is None and r.figure().data
    assert r.metadata["n_examples"] == 4
    with pytest.raises(ValueError, match="same task"):
        interp.compare_saturation([linear_ckpt, modular_ckpt])


def test_result_figure_uses_the_probes_own_figure(linear_ckpt):
    sat = interp.saturation(linear_ckpt, scales=[0.5, 1, 4], n=32)
    fig = sat.figure()
    assert any(shape.type == "rect" for shape in fig.layout.shapes)  # the shaded training range


def test_cli_saturation_compares_variants(linear_ckpt, tmp_path):
    other = tmp_path / "relu"
    interp.train("linear", out=other, steps=10, n_examples=6, d_model=16, scoring="relu", progress=False,
                 task_args={"d_x": 2})
    out = tmp_path / "cmp.json"
    assert main(["saturation", "--ckpt", str(linear_ckpt), "--compare", str(other), "--scales", "1,8,16",
                 "--n", "32", "--out", str(out)]) == 0
    r = Result.from_json(out)
    assert r.kind == "saturation_comparison" and r.labels["variant"] == [str(linear_ckpt), str(other)]


def test_api_circuit_puts_the_estimate_beside_exact_edge_patching(modular_ckpt, tmp_path):
    c = interp.circuit(modular_ckpt, method="eap", top=5, n=8, seed=1)
    exact = interp.circuit(modular_ckpt, top=5, n=8, seed=1)
    assert c.edges.axes == ("edge",) and c.matrix.axes == ("sender", "receiver") and exact.exact is None
    assert torch.equal(c.exact.scores, exact.edges.scores)  # the same seeded inputs, the same exact scores
    assert all(" -> " in label for label in c.edges.ticks("edge"))
    corr = c.edges.metadata["exact_correlation"]
    assert {"pearson", "spearman", "top5_recovered"} <= set(corr) and 0 <= corr["top5_recovered"] <= 1
    curve = exact.faithfulness
    assert curve.scores[0].item() == pytest.approx(0.0, abs=1e-5)  # the empty circuit: every edge ablated
    assert curve.scores[-1].item() == pytest.approx(1.0, abs=1e-4)  # every edge: the full model
    out = tmp_path / "circuit.json"
    assert main(["circuit", "--ckpt", str(modular_ckpt), "--method", "eap", "--top", "5", "--n", "8", "--seed", "1",
                 "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload) == {"edges", "matrix", "faithfulness", "exact"}
    assert torch.equal(Result.from_dict(payload["edges"]).scores, c.edges.scores)
    with pytest.raises(ValueError, match="'method' parameter of CircuitSettings"):
        interp.circuit(modular_ckpt, method="acdc")
    with pytest.raises(ValueError, match="'metric' parameter of eap must have a gradient"):
        interp.circuit(modular_ckpt, method="eap", metric="accuracy", n=8)
