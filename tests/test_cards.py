"""Card measurements against closed forms."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interp.api import evaluate
from interp.baselines import mod_p_solver
from interp.cards import boundary, boundary_rows, kind_rows, kx_sweep, markdown_table, measure, ood_regression_last
from interp.checkpoint import Checkpoint
from interp.spec import ModelSpec
from interp.sweep import phase
from interp.tasks import Batch, ModularTask, PolynomialTask

TASK = PolynomialTask(degrees=(1,), coef_dist="uniform", coef_scale=5.0, x_range=5.0)


class Constant(nn.Module):
    """Predicts ``c`` everywhere."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.full((*inputs.shape[:2], 1), self.c)


def test_kx_sweep_reads_a_constant_model_and_the_target_in_closed_form():
    ckpt = Checkpoint(Constant(-7.0), ModelSpec.for_task(TASK, 10), TASK, {"n_examples": 10})
    r = kx_sweep(ckpt, slopes=(1, 4, 20), n=4096)
    assert "boundary" not in r and r["pred_q99"] == pytest.approx([7.0] * 3)  # B± are probes.saturation's alone
    # |k·x| with x ~ U(-5, 5) has 0.99 quantile 0.99 · 5k; the mean of k·x where it is positive is 2.5k
    assert r["target_q99"] == pytest.approx([4.95 * k for k in (1, 4, 20)], rel=0.01)
    assert r["target_pos_mean"] == pytest.approx([2.5 * k for k in (1, 4, 20)], rel=0.05)
    with pytest.raises(ValueError, match="polynomial task"):
        kx_sweep(Checkpoint(Constant(0.0), ckpt.spec, TASK.replace(degrees=(0,)), {"n_examples": 10}))


def test_card_cli_and_probe_give_the_same_boundary_values(tmp_path, capsys):
    """One definition: the card's numbers (``boundary``, its table and the headline ``measure``), what
    `interp saturation` prints and ``interp.saturation``'s metadata are the same floats."""
    import re

    import interp
    from interp.cli import main

    out = tmp_path / "linear1d-tiny"
    interp.train("polynomial", out=out, steps=20, n_examples=6, d_model=16, n_layers=1, progress=False,
                 task_args={"degrees": (1,), "coef_dist": "uniform", "coef_scale": 5.0, "x_range": 5.0})
    ckpt = interp.load(out)
    probe = interp.saturation(ckpt, n=64, seed=3).metadata
    card = boundary(ckpt, n=64, seed=3)
    capsys.readouterr()
    assert main(["saturation", "--ckpt", str(out), "--n", "64", "--seed", "3"]) == 0
    printed = dict(m.groups() for line in capsys.readouterr().out.splitlines() if (m := re.match(r"  (\w+): (.*)$", line)))
    assert probe["field"] == card["field"] == printed["field"] == "coef_scale"  # the default sweep, everywhere
    for key in ("range_minus", "range_plus", "boundary_minus", "boundary_plus", "turn_minus", "turn_plus",
                "fallback_minus", "fallback_plus"):
        assert card[key] == probe[key] == float(printed[key]), key
    assert measure(ckpt, "boundary_plus", n=64, seed=3) == probe["boundary_plus"]
    rows = boundary_rows(card)
    assert [r["B"] for r in rows] == [probe["boundary_plus"], probe["boundary_minus"]]
    assert [r["fall-back slope beyond R"] for r in rows] == [probe["fallback_plus"], probe["fallback_minus"]]


MODULAR = ModularTask(p=7, n_tasks=36, pair_fraction=0.8)


class Rule(nn.Module):
    """A closed-form modular "model": one-hot logits [batch, pos, p] on the token ``rule(inputs)`` picks."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule
        self.unused = nn.Parameter(torch.zeros(()))  # evaluate finds the device from the parameters

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.rule(inputs).clamp(min=0), MODULAR.p).float()


def copier(inputs: torch.Tensor) -> torch.Tensor:
    """At each y position: the z of an earlier example with the same (x, y), else 0."""
    out = torch.zeros_like(inputs)
    k = (inputs.shape[1] + 1) // 3
    for i in range(k):
        for j in range(i):
            same = (inputs[:, 3 * j] == inputs[:, 3 * i]) & (inputs[:, 3 * j + 1] == inputs[:, 3 * i + 1])
            out[:, 3 * i + 1] = torch.where(same, inputs[:, 3 * j + 2], out[:, 3 * i + 1])
    return out


def solver(inputs: torch.Tensor) -> torch.Tensor:
    """interp.baselines' exact mod-p solver on the tokens alone (it reads only z_0..z_{i-1} at example i)."""
    mask = torch.zeros(inputs.shape, dtype=torch.bool)
    mask[:, 1::3] = True
    targets = torch.zeros_like(inputs)
    targets[:, 1:-1:3] = inputs[:, 2::3]  # z_i, known for every example but the last
    return mod_p_solver(MODULAR.p)(Batch(inputs, targets, mask))


@pytest.mark.parametrize("rule, expected", [(solver, "ood_generalization"), (copier, "ratio_matching_only"),
                                            (lambda x: torch.zeros_like(x), "not_learned")])
def test_kinds_and_phase_of_closed_form_models(rule, expected):
    ckpt = Checkpoint(Rule(rule), ModelSpec.for_task(MODULAR, 16), MODULAR, {"n_examples": 16})
    result = evaluate(ckpt, n=512, seed=0, baselines=False)
    rows = {(r["split"], r["queries"]): r for r in kind_rows(result)}
    assert len(rows) == 4 * 4 and rows[("ood_test", "all")]["n there"] == 512 * 4  # shots 12-15 of 512 sequences
    if rule is copier:  # every copyable query right, and nothing else beyond the queries whose answer is 0
        assert all(rows[(s, "copyable")]["shots 12-15"] == 1.0 for s in MODULAR.eval_splits())
        assert rows[("ood_test", "regression")]["shots 12-15"] < 0.3
    if rule is solver:  # the context determines every copyable and ratio-matchable query, and at 12+ shots the rest
        assert all(r["all shots"] == 1.0 for (s, kind), r in rows.items() if kind in ("copyable", "ratio"))
        assert ood_regression_last(ckpt, n=512, seed=0) == rows[("ood_test", "regression")]["shots 12-15"] > 0.99
    assert phase(result.kind_metrics(), MODULAR.p) == expected


def test_markdown_table():
    assert markdown_table([{"k": 1, "err": 0.012345}]) == ["| k | err |", "|---|---|", "| 1 | 0.0123 |"]
