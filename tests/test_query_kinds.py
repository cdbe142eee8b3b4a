"""interp.query_kinds: the kind of each modular query against a brute-force loop, per-task averaging against a
loop over tasks, the phase rule on hand-made records, and the kinds in the training log and in `interp eval`."""
from __future__ import annotations

import json
import math

import pytest
import torch

from interp.query_kinds import (
    COPYABLE,
    GROUPS,
    KIND_NAMES,
    KINDS,
    NONE,
    RATIO,
    REGRESSION,
    classify_queries,
    kind_metrics,
    last_region,
    task_averaged,
    task_ids,
)
from interp.sweep import PHASE_MIN_QUERIES, phase

C, R, G, N = COPYABLE, RATIO, REGRESSION, NONE


def brute_kinds(seq: list[tuple[int, int]], p: int) -> list[int]:
    """The definitions, literally: one query at a time, every earlier example, every c in Z_p."""
    out = []
    for i, (xq, yq) in enumerate(seq):
        earlier = seq[:i]
        if (xq, yq) in earlier:
            out.append(COPYABLE)
        elif any((c * x % p, c * y % p) == (xq, yq) for x, y in earlier for c in range(p)):
            out.append(RATIO)
        else:
            out.append(REGRESSION if i >= 2 else NONE)
    return out


@pytest.mark.parametrize("p, seq, expected", [
    # (0, 0) first is NONE, then copyable; (1, 2) after two (0, 0)s is regression-only (0·v is all (0, 0) gives);
    # (2, 4) = 2·(1, 2); (3, 5) is no multiple of (1, 2) or (2, 4) mod 7; (5, 3) = 5·(1, 2)
    (7, [(0, 0), (0, 0), (1, 2), (2, 4), (0, 0), (3, 5), (5, 3), (1, 2)], [N, C, G, R, C, G, R, C]),
    (7, [(3, 4), (0, 0)], [N, R]),  # c = 0: the origin is ratio-matchable once there is any example
    (7, [(3, 4), (1, 1), (6, 1)], [N, N, R]),  # an unmatched shot-1 query is NONE; (6, 1) = 2·(3, 4) mod 7
    (11, [(1, 3), (2, 6), (5, 5), (3, 9), (10, 8), (6, 6)], [N, R, G, R, R, R]),  # (6, 6) = 10·(5, 5) mod 11
    # composite p: c runs over all of Z_4, so 2·(1, 0) = (2, 0) but (1, 0) is no multiple of (2, 0) ...
    (4, [(1, 0), (2, 0)], [N, R]),
    (4, [(2, 0), (1, 0)], [N, N]),
    # ... and (2, 0), (2, 2) are "collinear" (determinant 4 = 0 mod 4) without either being a multiple of the other
    (4, [(2, 2), (0, 0), (2, 0)], [N, R, G]),
])
def test_hand_built_contexts(p, seq, expected):
    assert brute_kinds(seq, p) == expected
    assert classify_queries(torch.tensor([seq]), p).tolist() == [expected]


@pytest.mark.parametrize("p", [2, 4, 6, 7, 11])
def test_random_contexts_agree_with_the_brute_force_loop(p):
    g = torch.Generator().manual_seed(p)
    # few distinct pairs too, so that copies and multiples are common
    for n_values in (p, min(p, 3)):
        pairs = torch.randint(n_values, (64, 12, 2), generator=g)
        kinds = classify_queries(pairs, p)
        assert kinds.shape == (64, 12) and kinds.dtype == torch.long
        assert kinds.tolist() == [brute_kinds([tuple(e) for e in seq], p) for seq in pairs.tolist()]
    assert set(kinds.unique().tolist()) <= {*KINDS, NONE} and len(KIND_NAMES) == len(KINDS) == 3


def test_classifier_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\[batch, k, 2\]"):
        classify_queries(torch.zeros(3, 4, dtype=torch.long), 7)


def brute_task_average(correct, tasks, kinds, cells):
    """For each group and each cell (a list of shots): per task the mean over its queries there, then the mean
    over the tasks that have one; also the number of queries and of tasks."""
    acc, n_q, n_t = [], [], []
    for g, group in enumerate(GROUPS):
        row_acc, row_n, row_t = [], [], []
        for shots in cells:
            per_task: dict[int, list[float]] = {}
            for b in range(len(tasks)):
                for s in shots:
                    if group == "all" or kinds[b][s] == KINDS[g - 1]:
                        per_task.setdefault(tasks[b], []).append(correct[b][s])
            means = [sum(v) / len(v) for v in per_task.values()]
            row_acc.append(sum(means) / len(means) if means else float("nan"))
            row_n.append(sum(len(v) for v in per_task.values()))
            row_t.append(len(per_task))
        acc.append(row_acc), n_q.append(row_n), n_t.append(row_t)
    return acc, n_q, n_t


def close(a, b):
    return all(math.isnan(x) and math.isnan(y) or abs(x - y) < 1e-12 for x, y in zip(a, b))


def test_task_averaging_equals_a_loop_over_tasks():
    g = torch.Generator().manual_seed(0)
    p, k = 5, 9
    pairs = torch.randint(p, (40, k, 2), generator=g)
    kinds = classify_queries(pairs, p)
    params = {"a": torch.randint(3, (40,), generator=g), "b": torch.randint(2, (40,), generator=g)}
    tasks = task_ids(params, p)
    correct = torch.rand(40, k, generator=g) < 0.6
    args = correct.float().tolist(), tasks.tolist(), kinds.tolist()
    by_shot = task_averaged(correct, tasks, kinds)
    acc, n_q, n_t = brute_task_average(*args, [[s] for s in range(k)])
    for gi in range(len(GROUPS)):
        assert close(by_shot.acc[gi].tolist(), acc[gi])
        assert by_shot.n_queries[gi].tolist() == n_q[gi] and by_shot.n_tasks[gi].tolist() == n_t[gi]
    assert math.isnan(by_shot.acc[GROUPS.index("regression"), 0]) and by_shot.n_queries[1:, 0].sum() == 0  # shot 0
    region = last_region(k)
    assert region == [7, 8]
    for cells in ([region], [list(range(k))]):
        pooled = task_averaged(correct, tasks, kinds, cells[0])
        acc, n_q, n_t = brute_task_average(*args, cells)
        assert close(pooled.acc.tolist(), [a[0] for a in acc]) and pooled.n_queries.tolist() == [n[0] for n in n_q]
        assert pooled.n_tasks.tolist() == [t[0] for t in n_t]


def test_per_task_average_is_not_the_pooled_mean():
    """Task 0 has three right sequences, task 1 one wrong one: 0.5 per task, 0.75 pooled."""
    correct = torch.tensor([[True], [True], [True], [False]])
    kinds = torch.full((4, 1), NONE)
    r = task_averaged(correct, torch.tensor([0, 0, 0, 1]), kinds)
    assert r.acc[0].item() == 0.5 and r.n_queries[0].item() == 4 and r.n_tasks[0].item() == 2
    assert all(math.isnan(v) for v in r.acc[1:, 0].tolist()) and r.n_queries[1:].sum() == 0
    assert kind_metrics(correct, torch.tensor([0, 0, 0, 1]), kinds) == {"acc": 0.5, "acc_last": 0.5}  # no kind keys


def test_kind_metrics_names_and_counts():
    pairs = torch.tensor([[(1, 2), (1, 2), (2, 4), (3, 1), (5, 5), (0, 0), (3, 1), (1, 3)]] * 2)
    kinds = classify_queries(pairs, 7)  # N C R G G R C G
    correct = torch.tensor([[1, 1, 1, 0, 1, 0, 1, 0], [0, 1, 0, 0, 0, 1, 1, 0]]).bool()
    m = kind_metrics(correct, torch.tensor([3, 9]), kinds, counts=True)
    # last region: shots 6, 7 (copyable, regression); task 3 gets 1/2, task 9 gets 1/2
    assert m["acc_last"] == 0.5 and m["n_last"] == 4
    assert m["acc_copyable_last"] == 1.0 and m["acc_regression_last"] == 0.0 and "acc_ratio_last" not in m
    assert m["acc_ratio"] == pytest.approx((1 / 2 + 1 / 2) / 2) and m["n_ratio"] == 4
    assert m["acc_regression"] == pytest.approx((1 / 3 + 0) / 2) and m["n_regression"] == 6
    assert m["acc_copyable"] == 1.0 and m["n_copyable"] == 4


# --- the phase rule -----------------------------------------------------------------------------------------

SETS = ("id_train", "id_test", "ood_train", "ood_test")


def record(regression: tuple[float, float, float, float], copyable: float = 0.1, ratio: float = 0.1,
           n: int = 100) -> dict[str, float]:
    """A flat record as EvalResult.kind_metrics writes it: last-shot accuracies by kind, with query counts."""
    out: dict[str, float] = {}
    for s, r in zip(SETS, regression):
        out |= {f"{s}_acc_regression_last": r, f"{s}_n_regression_last": n, f"{s}_acc_copyable_last": copyable,
                f"{s}_n_copyable_last": 500, f"{s}_acc_ratio_last": ratio, f"{s}_n_ratio_last": 500}
    return out


@pytest.mark.parametrize("regression, copyable, ratio, expected", [
    ((0.9, 0.9, 0.9, 0.8), 1.0, 1.0, "ood_generalization"),
    ((0.9, 0.9, 0.9, 0.1), 1.0, 1.0, "ood_memorization"),
    ((1.0, 0.9, 0.1, 0.1), 1.0, 1.0, "id_generalization"),
    ((1.0, 0.1, 0.1, 0.1), 0.9, 0.1, "ratio_matching_only"),  # OOD tasks answered only where a copy answers them
    ((0.1, 0.1, 0.1, 0.15), 0.1, 0.6, "ratio_matching_only"),  # ... or a ratio match
    ((1.0, 0.1, 0.1, 0.1), 0.2, 0.2, "id_memorization"),
    ((0.2, 0.1, 0.1, 0.1), 0.2, 0.2, "not_learned"),
])
def test_phase_names_follow_the_kinds(regression, copyable, ratio, expected):
    assert phase(record(regression, copyable, ratio), p=7) == expected


def test_phase_level_is_a_third_of_the_way_from_chance():
    # p = 7: answered from (acc - 1/7) / (6/7) >= 1/3, i.e. acc >= 3/7 = 0.4286; p = 29: acc >= 0.356
    assert phase(record((0.1, 0.1, 0.1, 0.43)), p=7) == "ood_generalization"
    assert phase(record((0.1, 0.1, 0.1, 0.42)), p=7) == "not_learned"
    assert phase(record((0.1, 0.1, 0.1, 0.36)), p=29) == "ood_generalization"
    assert phase(record((0.1, 0.1, 0.1, 0.35)), p=29) == "not_learned"


def test_phase_is_open_without_enough_regression_only_queries():
    assert phase(record((1.0, 1.0, 1.0, 1.0), n=PHASE_MIN_QUERIES - 1), p=7) is None
    assert phase(record((1.0, 1.0, 1.0, 1.0), n=PHASE_MIN_QUERIES), p=7) == "ood_generalization"
    partial = record((1.0, 1.0, 1.0, 1.0))
    del partial["id_test_acc_regression_last"]
    assert phase(partial, p=7) is None
    # a record without counts (a training-log record) is read as it is; old logs and regression runs give None
    assert phase({k: v for k, v in record((0.1, 0.1, 0.1, 0.9)).items() if "_n_" not in k}, p=7) == "ood_generalization"
    assert phase({"id_train_acc": 1.0, "id_test_acc": 0.9, "ood_train_acc": 0.9, "ood_test_acc": 0.8}, p=7) is None
    assert phase({"id_error": 0.1, "ood_error": 0.2}, p=7) is None


# --- the kinds in the training log and in `interp eval` -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_modular(tmp_path_factory):
    """p = 11 with 20% of the pairs held out: four sets, each with queries of every kind; a few steps only."""
    import interp

    out = tmp_path_factory.mktemp("kinds") / "m"
    interp.train("modular", out=out, steps=4, eval_every=2, eval_size=48, batch_size=16, n_examples=8, n_layers=1,
                 n_heads=2, d_model=16, act_fn="relu", warmup_steps=1, progress=False,
                 task_args={"p": 11, "n_tasks": 20, "pair_fraction": 0.8})
    return out


def test_training_log_has_the_kinds(tiny_modular):
    from interp.checkpoint import load_checkpoint
    from interp.query_kinds import correct_by_example
    from interp.train import TrainConfig, eval_batches, objective_key, score

    ckpt = load_checkpoint(tiny_modular)
    last = ckpt.metrics[-1]
    for s in SETS:
        assert {f"{s}_acc", f"{s}_acc_last", f"{s}_loss", f"{s}_acc_copyable", f"{s}_acc_ratio",
                f"{s}_acc_regression", f"{s}_acc_copyable_last", f"{s}_acc_regression_last"} <= set(last), s
    assert objective_key(last) == "ood_test_acc_regression"  # keep-best watches regression-only OOD accuracy
    # the logged numbers are the per-task averages of the final weights on the fixed evaluation sets
    cfg = TrainConfig.from_dict({k: v for k, v in ckpt.train.items() if k in TrainConfig.__dataclass_fields__})
    batches = eval_batches(ckpt.task, cfg, torch.device("cpu"))
    for s, batch in batches.items():
        scores = score(ckpt.model, batch)
        assert {k: v for k, v in last.items() if k.startswith(f"{s}_")} == {f"{s}_{k}": v for k, v in scores.items()}
        with torch.no_grad():
            correct = correct_by_example(ckpt.model(batch.inputs).argmax(-1), batch.targets, batch.loss_mask)
        kinds = classify_queries(batch.examples, 11)
        acc, _, _ = brute_task_average(correct.float().tolist(), task_ids(batch.params, 11).tolist(), kinds.tolist(),
                                       [last_region(8)])
        assert scores["acc_last"] == pytest.approx(acc[0][0]) and scores["acc_regression_last"] == pytest.approx(acc[3][0])


def test_interp_eval_prints_the_kinds(tiny_modular, tmp_path, capsys):
    import interp
    from interp.cli import main

    assert main(["eval", "--ckpt", str(tiny_modular), "--n", "32", "--out", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "by kind of query" in out and all(g in out for g in GROUPS)
    rows = json.loads((tmp_path / "eval.json").read_text())
    kind_rows = [r for r in rows if "kind" in r]
    assert {(r["split"], r["kind"]) for r in kind_rows} == {(s, g) for s in SETS for g in GROUPS}
    ev = interp.evaluate(tiny_modular, n=32, seed=0)
    c = ev.kind_curve("ood_test", "regression")
    row = next(r for r in kind_rows if (r["split"], r["kind"]) == ("ood_test", "regression"))
    assert row["last"] == pytest.approx(c.last) and row["n last"] == c.n_last and c.last_shots == [6, 7]
    # the exact solver answers every copyable and ratio-matchable query, and no query at shot 0 beyond (0, 0)
    for s in SETS:
        for kind in ("copyable", "ratio"):
            solver = ev.kind_curve(s, kind, "exact_mod_p")
            assert all(m == 1.0 for m, n in zip(solver.mean, solver.n_queries) if n)
        assert ev.kind_metrics()[f"{s}_n_last"] == 32 * 2
